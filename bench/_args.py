"""Options every benchmark shares: which model, at what size and batch, and a quick mode."""

import argparse


def model_options(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a smoke run with fewer repeats and smaller inputs")
    ap.add_argument("--preset", default="seed", help="model preset (default: seed, the original recipe)")
    ap.add_argument("--size", type=int, default=256, help="input side in pixels")
    ap.add_argument("--batch", type=int, default=8, help="images per batch")
    return ap

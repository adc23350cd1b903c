"""Options every benchmark shares: which model, at what size and batch, and a quick mode; or
which model and which fold of the training photos it is scored on."""

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def model_options(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a smoke run with fewer repeats and smaller inputs")
    ap.add_argument("--preset", default="seed", help="model preset (default: seed, the original recipe)")
    ap.add_argument("--size", type=int, default=256, help="input side in pixels")
    ap.add_argument("--batch", type=int, default=8, help="images per batch")
    return ap


def fold_options(description: str) -> argparse.ArgumentParser:
    """``--model`` (default: the bundled one) and ``--fold K/N``: for the benchmarks that score a
    model on a fold of each dataset's training photos in ../shared/data (the val splits unread)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    ap.add_argument("--fold", default="1/5", metavar="K/N")
    return ap

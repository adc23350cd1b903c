"""Pixel F1 on the real validation splits, at each photo's own resolution.

    python bench/bench_quality.py [--model models/default.keras] [--baseline runs/<seed run>/model.keras]

For each model: F1 (= Dice), precision and recall on masonry/val and deepcrack/val at the
model's own threshold and scale (its .json sidecar; 0.7 and 1 for the seed baseline, as in
the original scripts), plus the same in bfloat16 for the first model (F1 must stay within 0.01) and
in careful mode (each photo's mirror images averaged in; `--no-flips` skips it).
Needs ../shared/data; exits 0 with a note when it is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = ROOT.parent / "shared" / "data"
SPLITS = {"masonry": SHARED / "masonry" / "val", "deepcrack": SHARED / "deepcrack" / "val"}


def scores(model, threshold: float | None, precision: str = "float32", flips: bool = False) -> dict[str, dict]:
    from unet.evaluate import eval_samples, evaluate
    from unet.predict import Predictor

    runner = Predictor(model, precision=precision, flips=flips)
    out = {}
    for name, split in SPLITS.items():
        samples, problems = eval_samples(split)
        out[name] = evaluate(model, samples, threshold=threshold, problems=problems, runner=runner)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    ap.add_argument("--baseline", help="the seed-recipe model to compare (threshold 0.7)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-flips", action="store_true")
    a = ap.parse_args()
    if not all(p.is_dir() for p in SPLITS.values()):
        print(f"# {SHARED} is absent: nothing to measure")
        return
    from unet.model import load_model, model_info

    model = load_model(a.model)
    info = model_info(model)
    print(f"# pixel F1 on the val splits at each photo's own resolution; model {a.model}, threshold "
          f"{info.threshold}, photos seen at {info.scale:g}x")
    base = scores(model, None)
    for name, r in base.items():
        print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
              f"IoU {r['iou']:.4f}  ({r['n_images']} photos; best F1 {r['best_f1']:.4f} at {r['best_threshold']:.3f})")
    if a.baseline:
        seed = load_model(a.baseline)
        print(f"# seed recipe {a.baseline}, threshold 0.7")
        for name, r in scores(seed, 0.7).items():
            gain = base[name]["dice"] - r["dice"]
            print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
                  f"IoU {r['iou']:.4f}  (best F1 {r['best_f1']:.4f} at {r['best_threshold']:.3f}); "
                  f"default model is {gain:+.4f} F1")
    if not a.no_bf16:
        print("# bfloat16 inference, same model and threshold")
        for name, r in scores(model, None, "bfloat16").items():
            print(f"{name:<10} F1 {r['dice']:.4f}  ({r['dice'] - base[name]['dice']:+.4f} vs float32; "
                  f"target within 0.01)")
    if not a.no_flips:
        print("# careful mode (mirror images averaged in), same model and threshold, float32")
        for name, r in scores(model, None, flips=True).items():
            print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
                  f"({r['dice'] - base[name]['dice']:+.4f}; best F1 {r['best_f1']:.4f} at {r['best_threshold']:.3f})")


if __name__ == "__main__":
    main()

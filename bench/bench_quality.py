"""Pixel F1 on the real validation splits, at each photo's own resolution.

    python bench/bench_quality.py [--model models/default.keras] [--baseline runs/<seed run>/model.keras]
                                  [--fold K/N] [--enlarge 2 4] [--scale auto|S]

For each model: F1 (= Dice), precision and recall on masonry/val and deepcrack/val at the
model's own threshold and scale (its .json sidecar; 0.7 and 1 for the seed baseline, as in
the original scripts), plus the same in bfloat16 for the first model (F1 must stay within 0.01) and
in careful mode (each photo's mirror images averaged in; `--no-flips` skips it).
Each split's F1 also gets its 90% interval over the split's source photos, and (val splits)
its F1 on the photos cut from a source photo the training photos were also cut from, apart
from the others (DeepCrack's val split shares most of its sources with its train split).
`--fold K/N` reads fold K of N of each dataset's training photos instead of the val splits
(whole source photos per fold; what a run trained with `--fold K/N` held out): the protocol
of issue #14 makes every choice there and reads the val splits once, at the end.
`--enlarge 2 4` also scores the photos enlarged by each factor (photo bicubic, mask nearest),
as a phone photo of the same wall would show it: the F1 should not fall with the factor.
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


FOLD = None  # (k, K) from --fold: fold k of the training photos instead of the val splits
SCALE = None  # --scale: instead of the model card's


def split_samples(name: str):
    from unet.evaluate import eval_samples

    return eval_samples(SPLITS[name].parent if FOLD else SPLITS[name], FOLD)


def scores(model, threshold: float | None, precision: str = "float32", flips: bool = False) -> dict[str, dict]:
    from unet.evaluate import evaluate
    from unet.predict import Predictor

    runner = Predictor(model, precision=precision, flips=flips)
    out = {}
    for name in SPLITS:
        samples, problems = split_samples(name)
        out[name] = evaluate(model, samples, threshold=threshold, problems=problems, runner=runner, flips=flips,
                             scale=SCALE)
    return out


def overlap_line(name: str, rows: list[dict]) -> str:
    """The split's F1 apart on the photos cut from a source photo the training photos were also cut
    from, and on the others: what remembering a training photo is worth."""
    from unet.data import scan_dataset, source_of
    from unet.evaluate import source_counts
    from unet.metrics import scores

    seen = {source_of(s.id) for s in scan_dataset(SPLITS[name].parent / "train").samples}
    parts = []
    for label, rows_part in (("source also in train", [r for r in rows if source_of(r["id"]) in seen]),
                             ("source unseen", [r for r in rows if source_of(r["id"]) not in seen])):
        if rows_part:
            tp, fp, fn = source_counts(rows_part)[1].sum(0)
            parts.append(f"{label}: F1 {scores(tp, fp, fn)['dice']:.4f} ({len(rows_part)} photos)")
    return f"{'':<10} " + "; ".join(parts)


def enlarged_scores(model, factor: int) -> dict[str, dict]:
    """F1 of each split with every photo enlarged ``factor`` times (written to a scratch folder,
    then evaluated as any split: the production path)."""
    import tempfile

    import numpy as np
    from PIL import Image

    from unet.data import load_pair
    from unet.evaluate import eval_samples, evaluate

    out = {}
    for name in SPLITS:
        samples, _ = split_samples(name)
        with tempfile.TemporaryDirectory() as tmp:
            for s in samples:
                image, mask = load_pair(s)
                h, w = mask.shape
                (Path(tmp) / s.id / "images").mkdir(parents=True)
                (Path(tmp) / s.id / "masks").mkdir()
                Image.fromarray(image).resize((w * factor, h * factor), Image.BICUBIC).save(
                    Path(tmp) / s.id / "images" / f"{s.id}.png", compress_level=1)
                Image.fromarray(mask.astype(np.uint8) * 255).resize((w * factor, h * factor), Image.NEAREST).save(
                    Path(tmp) / s.id / "masks" / f"{s.id}.png", compress_level=1)
            big, problems = eval_samples(tmp)
            out[name] = evaluate(model, big, problems=problems, scale=SCALE)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    ap.add_argument("--baseline", help="the seed-recipe model to compare (threshold 0.7)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-flips", action="store_true")
    ap.add_argument("--fold", metavar="K/N", help="fold K of N of the training photos instead of the val splits")
    ap.add_argument("--enlarge", nargs="+", type=int, default=[], metavar="F",
                    help="also score the photos enlarged by these factors (e.g. 2 4)")
    ap.add_argument("--scale", help="'auto' or a factor, instead of the model card's")
    a = ap.parse_args()
    global FOLD, SCALE
    from unet.data import parse_fold

    FOLD, SCALE = parse_fold(a.fold), a.scale
    if not all(p.is_dir() for p in SPLITS.values()):
        print(f"# {SHARED} is absent: nothing to measure")
        return
    from unet.model import load_model, model_info

    model = load_model(a.model)
    info = model_info(model)
    where = f"fold {a.fold} of the training photos" if FOLD else "the val splits"
    print(f"# pixel F1 on {where} at each photo's own resolution; model {a.model}, threshold "
          f"{info.threshold}, photos seen at scale {SCALE or info.scale}")
    base = scores(model, None)
    for name, r in base.items():
        print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
              f"IoU {r['iou']:.4f}  ({r['n_images']} photos; best F1 {r['best_f1']:.4f} at {r['best_threshold']:.3f})")
        iv = r["dice_interval"]
        if iv:
            print(f"{'':<10} F1 90% interval {iv[0]:.3f}-{iv[1]:.3f} over {r['sources']} source photos "
                  "(a photo's patches or crops resampled together)")
        if not FOLD:
            print(overlap_line(name, r["per_image"]))
    for factor in a.enlarge:
        print(f"# the same photos enlarged {factor}x (photo bicubic, mask nearest); target: F1 within 0.03 of 1x")
        for name, r in enlarged_scores(model, factor).items():
            print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
                  f"({r['dice'] - base[name]['dice']:+.4f} vs 1x; best F1 {r['best_f1']:.4f} at "
                  f"{r['best_threshold']:.3f})")
    if a.baseline:
        from unet.evaluate import compare_rows

        seed = load_model(a.baseline)
        print(f"# seed recipe {a.baseline}, threshold 0.7")
        for name, r in scores(seed, 0.7).items():
            d = compare_rows(base[name]["per_image"], r["per_image"])
            gain = f"{d['difference']:+.4f} F1 (90% interval {d['low']:+.3f} to {d['high']:+.3f})" if d else \
                f"{base[name]['dice'] - r['dice']:+.4f} F1"
            print(f"{name:<10} F1 {r['dice']:.4f}  precision {r['precision']:.4f}  recall {r['recall']:.4f}  "
                  f"IoU {r['iou']:.4f}  (best F1 {r['best_f1']:.4f} at {r['best_threshold']:.3f}); "
                  f"default model is {gain}")
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

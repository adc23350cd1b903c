"""Inference sized for the device (issue #15): each figure a ratio measured in this run.

    python bench/bench_passes.py            # the full run (about 10 minutes on 2 cores)
    python bench/bench_passes.py --quick    # a smoke run

1. One photo of a tile's size through ``unet.segment`` against ``predict_on_batch`` of that
   photo alone, for every preset at tiles of 256 and 384 (target >= 0.9x): no padded pass.
2. A 4000x3000 photo against the no-overlap ideal (its pixels / a 256 tile's pixels x the
   compiled forward pass's time per 256 tile, seed preset; target <= 1.6x), the predictor
   choosing its tiles, beside the same with tiles of 256 named (the rule before #15).
3. ``predict_files`` over a folder of DeepCrack-size photos (544x384 JPEGs), writing every
   mask and overlay, against the model's best pass rate for that photo size
   (``predict_on_batch`` of whole photos, best of batches 1-8), and against the same photos
   read, segmented and written in turn.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def best_time(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (after one warm-up)."""
    from bench.bench_inference import best_rate

    return 1.0 / best_rate(fn, 1, repeats)


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor() or "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--photos", type=int, default=200, help="photos in the folder (part 3)")
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"), help="model for part 3")
    a = ap.parse_args()

    import keras

    from unet import load_model
    from unet.damage_model import DamageModel, ModelCard
    from unet.imaging import read_image, save_png
    from unet.model import PRESETS, build_unet
    from unet.predict import Predictor, overlay, pass_pixels, predict_files

    repeats = 2 if a.quick else 5
    rng = np.random.default_rng(0)
    print(f"# pass-size benchmark: backend {keras.backend.backend()}, {os.cpu_count()} CPU cores "
          f"({cpu_flags()}), {pass_pixels():,} pixels per pass")

    print("\n## 1. one photo of a tile's size: segment vs predict_on_batch of that photo (target >= 0.90)")
    presets = ["seed", "standard"] if a.quick else list(PRESETS)
    for preset in presets:
        for side in (256, 384):
            net = build_unet(preset, None)
            dm = DamageModel(net, ModelCard(input_size=side), precision="float32")
            photo = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            alone = best_time(lambda: net.predict_on_batch(photo[None]), repeats)
            ours = best_time(lambda: dm.segment(photo), repeats)
            print(f"{preset:>9} tile {side}: segment {ours * 1e3:7.1f} ms, predict_on_batch {alone * 1e3:7.1f} ms, "
                  f"{alone / ours:.2f}x")
            keras.backend.clear_session()

    print("\n## 2. a 4000x3000 photo against the no-overlap ideal (target <= 1.60)")
    h, w = (1500, 2000) if a.quick else (3000, 4000)
    net = build_unet("seed", None)
    x = rng.integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    if keras.backend.backend() == "tensorflow":  # the compiled pass alone, as bench_inference's ceiling
        import tensorflow as tf

        f = tf.function(lambda t: net(t, training=False))
        xt = tf.constant(x)
        per_tile = best_time(lambda: f(xt).numpy(), repeats) / 4
    else:  # JAX, torch: Keras's own compiled predict step
        per_tile = best_time(lambda: net.predict_on_batch(x), repeats) / 4
    ideal = h * w / 256**2 * per_tile
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for label, pred in (("tiles chosen by the predictor", Predictor(net)),
                        ("tiles of 256 named (before #15)", Predictor(net, tile=256))):
        pred.probability(photo[:600, :700])  # compile the shapes outside the timing
        t = time.perf_counter()
        pred.probability(photo)
        secs = time.perf_counter() - t
        side = pred.tile_for(h, w)
        print(f"{label:>32}: {secs:6.2f} s in tiles of {side}; ideal {ideal:.2f} s; ratio {secs / ideal:.2f}")

    print(f"\n## 3. predict over a folder of 544x384 photos, {a.model}")
    n = 24 if a.quick else a.photos
    dm = load_model(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        from PIL import Image

        from unet.synthetic import damaged_wall

        for i in range(n):
            Image.fromarray(damaged_wall(i, 384, 544)[0]).save(src / f"p{i:04d}.jpg", quality=92)
        padded = np.stack([read_image(p) for p in sorted(src.glob("*.jpg"))[:8]])
        best_rate, best_b = 0.0, 1
        for b in (1, 2, 4, 8):
            rate = b / best_time(lambda: dm.predictor.model.predict_on_batch(padded[:b]), repeats)
            if rate > best_rate:
                best_rate, best_b = rate, b
        predict_files(dm, [src / "p0000.jpg"], Path(tmp) / "warm")  # compile outside the timing
        t = time.perf_counter()
        rows = predict_files(dm, [src], Path(tmp) / "out")
        ours = n / (time.perf_counter() - t)
        assert not any(r["error"] for r in rows) and len(list((Path(tmp) / "out").glob("*_overlay.png"))) == n
        out1 = Path(tmp) / "one"
        out1.mkdir()
        t = time.perf_counter()
        for p in sorted(src.glob("*.jpg")):
            image = read_image(p)
            seg = dm.segment(image)
            save_png(seg.mask, out1 / f"{p.stem}_mask.png")
            save_png(overlay(image, seg.mask), out1 / f"{p.stem}_overlay.png")
        one_by_one = n / (time.perf_counter() - t)
    print(f"ceiling: predict_on_batch of whole photos {best_rate:.2f} photos/s (batch {best_b})")
    print(f"predict_files (decode, model, writing overlapped): {ours:.2f} photos/s, {ours / best_rate:.2f}x ceiling "
          f"(GPU target >= 0.5)")
    print(f"one by one (read, segment, write, in turn): {one_by_one:.2f} photos/s; "
          f"predict_files is {ours / one_by_one:.2f}x that")


if __name__ == "__main__":
    main()

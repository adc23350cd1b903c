"""Inference speed and memory, each figure a ratio measured in this run.

    python bench/bench_inference.py            # the full run (a few minutes on 2 cores)
    python bench/bench_inference.py --quick    # a smoke run

Ceiling: the compiled forward pass (tf.function over model(x)) of the same model on the
same batch. Compared with it: unet's batch path (Predictor.segment_many: forward +
threshold + Segmentation objects), the seed scripts' way (model.predict then
thresholding), bfloat16 inference, and tiled prediction of a large photo. Peak memory
of tiled prediction is measured in fresh subprocesses (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def best_rate(fn, items: int, repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` timed calls (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return items / best


def forward_ceiling(model, batch: np.ndarray):
    import tensorflow as tf

    f = tf.function(lambda x: model(x, training=False))
    x = tf.constant(batch)
    return lambda: f(x).numpy()


def memory_child(h: int, w: int, preset: str, tile: int) -> None:
    """In a fresh process: peak RSS of one tiled prediction, above the warmed-up baseline."""
    from unet.model import build_unet
    from unet.predict import Predictor

    model = build_unet(preset, None)
    pred = Predictor(model, tile=tile, batch_size=8)
    pred.probability(np.zeros((tile * 2, tile * 2, 3), np.uint8))  # warm-up: graph, allocator
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = time.perf_counter()
    seg = pred.segment(image)
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"h": h, "w": w, "seconds": secs, "base_mib": base / 1024, "peak_mib": peak / 1024,
                      "mask": list(seg.mask.shape)}))


def main() -> None:
    from bench._args import model_options

    ap = model_options('Inference speed and memory.')
    ap.add_argument("--memory-child", nargs=2, type=int, metavar=("H", "W"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(*a.memory_child, a.preset, a.size)
        return

    from unet.model import build_unet, cpu_has_bf16
    from unet.predict import Predictor

    repeats = 2 if a.quick else 5
    n, s = a.batch, a.size
    model = build_unet(a.preset, None)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    images = list(batch)
    print(f"# inference benchmark: preset {a.preset}, {s}x{s}, batch {n}, {os.cpu_count()} CPU cores, "
          f"bf16 hardware: {cpu_has_bf16()}")

    ceiling = best_rate(forward_ceiling(model, batch), n, repeats)
    pred = Predictor(model, tile=s, batch_size=n)
    ours = best_rate(lambda: pred.segment_many(images, 0.5), n, repeats)
    seed_way = best_rate(lambda: model.predict(batch, batch_size=n, verbose=0) > 0.7, n, repeats)
    print(f"compiled forward pass (ceiling)      {ceiling:7.2f} img/s")
    print(f"unet.segment batch path             {ours:7.2f} img/s   {ours / ceiling:.2f}x ceiling (target >= 0.90)")
    print(f"seed scripts' way (model.predict)   {seed_way:7.2f} img/s   unet is {ours / seed_way:.2f}x the seed's way")

    bf = Predictor(model, tile=s, batch_size=n, precision="bfloat16")
    bf_rate = best_rate(lambda: bf.segment_many(images, 0.5), n, repeats)
    full = np.stack([r.probability for r in pred.segment_many(images, 0.5)])
    half = np.stack([r.probability for r in bf.segment_many(images, 0.5)])
    print(f"bfloat16 batch path                 {bf_rate:7.2f} img/s   {bf_rate / ours:.2f}x float32 (target >= 1.6); "
          f"mean |p_bf16 - p_fp32| = {np.mean(np.abs(full - half)):.4f} (random weights; F1 on real data: "
          "bench_quality.py)")

    h, w = (1000, 750) if a.quick else (3000, 4000)
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    tiler = Predictor(model, tile=s, batch_size=n)
    stride = tiler.tile - 2 * tiler.margin
    n_tiles = len(range(0, max(h + 2 * tiler.margin, s) - s, stride)) + 1
    n_tiles *= len(range(0, max(w + 2 * tiler.margin, s) - s, stride)) + 1
    t = time.perf_counter()
    tiler.probability(photo)
    tiled = time.perf_counter() - t
    per_tile = 1.0 / ceiling
    print(f"tiled {w}x{h}: {n_tiles} tiles in {tiled:.2f} s; tile count x ceiling per tile = {n_tiles * per_tile:.2f} s; "
          f"ratio {tiled / (n_tiles * per_tile):.2f} (target <= 1.30)")

    mems = []
    for hh, ww in ([(750, 1000), (1500, 2000)] if a.quick else [(3000, 4000), (6000, 8000)]):
        out = subprocess.run([sys.executable, __file__, "--preset", a.preset, "--size", str(s),
                              "--memory-child", str(hh), str(ww)], capture_output=True, text=True, check=True)
        mems.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for m in mems:
        print(f"peak memory {m['w']}x{m['h']}: {m['peak_mib']:.0f} MiB (process), "
              f"{m['peak_mib'] - m['base_mib']:.0f} MiB above the warmed-up model")
    growth = mems[1]["peak_mib"] / mems[0]["peak_mib"]
    print(f"peak memory growth for 4x the pixels: {growth:.2f}x (target <= 1.50; ceiling 2048 MiB: "
          f"{'met' if mems[0]['peak_mib'] < 2048 else 'MISSED'} at {mems[0]['w']}x{mems[0]['h']})")


if __name__ == "__main__":
    main()

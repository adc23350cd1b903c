"""Inference sized for the device (issue #15): each figure a ratio measured in this run.

    python bench/bench_passes.py            # the full run (about 10 minutes on 2 cores)
    python bench/bench_passes.py --quick    # a smoke run
    KERAS_BACKEND=jax python bench/bench_passes.py --parts 2,3   # on a GPU (part 1 is a CPU target)

Parts 2 and 3 time a first call (which compiles its pass shapes: seconds on JAX) apart from
the steady state; on a GPU the ceilings take the device's best pass (batches up to 64 tiles).

1. One photo of a tile's size through ``unet.segment`` against ``predict_on_batch`` of that
   photo alone, for every preset at tiles of 256 and 384 (target >= 0.9x): no padded pass.
   The ceiling runs the network the predictor runs (batch norms folded into their
   convolutions); the network as trained, unfolded, is timed beside it.
2. A 4000x3000 photo against the no-overlap ideal (its pixels / a 256 tile's pixels x the
   compiled forward pass's time per 256 tile, seed preset; target <= 1.6x), the predictor
   choosing its tiles, beside the same with tiles of 256 named (the rule before #15); each
   with the CPU's part of it (the time outside the network's passes).
3. ``predict_files`` over a folder of DeepCrack-size photos (544x384 JPEGs), writing every
   mask and overlay, against the model's best pass rate for that photo size
   (``predict_on_batch`` of whole photos, best of batches 1-8, to 32 on a GPU), and against the same photos
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
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 2,3 (part 1 is a CPU target)")
    a = ap.parse_args()
    parts = {int(x) for x in a.parts.split(",")}

    import keras

    from unet.predict import accelerator, pass_pixels

    repeats = 2 if a.quick else 5
    rng = np.random.default_rng(0)
    gpu = accelerator()[0] == "gpu"
    # The ceilings are the model's best pass: on a CPU batch size barely matters, on a GPU it does.
    batches = (1, 2, 4, 8, 16, 32) if gpu else (1, 2, 4, 8)
    print(f"# pass-size benchmark: backend {keras.backend.backend()}, {os.cpu_count()} CPU cores "
          f"({cpu_flags()}), {'a GPU' if gpu else 'no GPU'}, {pass_pixels():,} pixels per pass")

    if 1 in parts:
        part_one(a, rng, 4 * repeats)  # calls of milliseconds: best of 20, not 5 (0.88x-1.38x for one case in one run)
    if 2 in parts:
        part_two(a, rng, repeats, gpu)
    if 3 in parts:
        part_three(a, repeats, batches)


def part_one(a, rng, repeats) -> None:
    import keras

    from unet.damage_model import DamageModel, ModelCard
    from unet.model import PRESETS, build_unet

    print("\n## 1. one photo of a tile's size: segment vs predict_on_batch of that photo (target >= 0.90)")
    presets = ["seed", "standard"] if a.quick else list(PRESETS)
    for preset in presets:
        for side in (256, 384):
            net = build_unet(preset, None)
            dm = DamageModel(net, ModelCard(input_size=side), precision="float32")
            photo = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            # The ceiling is the network segment runs (batch norms folded: unet.model.inference_copy);
            # the network as trained is timed beside it for what the folding gives.
            alone = best_time(lambda: dm.predictor.model.predict_on_batch(photo[None]), repeats)
            trained = best_time(lambda: net.predict_on_batch(photo[None]), repeats)
            ours = best_time(lambda: dm.segment(photo), repeats)
            print(f"{preset:>9} tile {side}: segment {ours * 1e3:7.1f} ms, predict_on_batch {alone * 1e3:7.1f} ms, "
                  f"{alone / ours:.2f}x (the trained network unfolded: {trained * 1e3:.1f} ms, "
                  f"segment {trained / ours:.2f}x that)")
            keras.backend.clear_session()


def part_two(a, rng, repeats, gpu: bool) -> None:
    import keras

    from unet.model import build_unet
    from unet.predict import Predictor

    print("\n## 2. a 4000x3000 photo against the no-overlap ideal (target <= 1.60)")
    h, w = (1500, 2000) if a.quick else (3000, 4000)
    net = build_unet("seed", None)
    per_tile = float("inf")
    for b in (4, 16, 64) if gpu else (4,):  # the device's best pass of 256 tiles
        x = rng.integers(0, 256, (b, 256, 256, 3), dtype=np.uint8)
        if keras.backend.backend() == "tensorflow":  # the compiled pass alone, as bench_inference's ceiling
            import tensorflow as tf

            f = tf.function(lambda t: net(t, training=False))
            xt = tf.constant(x)
            per_tile = min(per_tile, best_time(lambda: f(xt).numpy(), repeats) / b)
        else:  # JAX, torch: Keras's own compiled predict step
            per_tile = min(per_tile, best_time(lambda: net.predict_on_batch(x), repeats) / b)
    ideal = h * w / 256**2 * per_tile
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for label, pred in (("tiles chosen by the predictor", Predictor(net)),
                        ("tiles of 256 named (before #15)", Predictor(net, tile=256))):
        network = _timed_forward(pred)
        t = time.perf_counter()
        pred.probability(photo)  # the first photo of its size compiles its shapes (JAX, GPU: seconds)
        first = time.perf_counter() - t
        network[:] = [0.0, 0]
        t = time.perf_counter()
        pred.probability(photo)
        secs = time.perf_counter() - t
        side = pred.tile_for(h, w)
        # The overlap's share of the ratio is exact (pixels through the network per pixel of the
        # photo); the rest is timing, which moves with a shared machine's speed.
        print(f"{label:>32}: {secs:6.2f} s in tiles of {side} (first call, compiling: {first:.2f} s); "
              f"ideal {ideal:.2f} s; ratio {secs / ideal:.2f}, of which the overlap {network[1] / (h * w):.2f}x "
              f"the photo's pixels; the CPU's part (cutting, blending, the map; outside the network's "
              f"passes) {secs - network[0]:.3f} s", flush=True)


def _timed_forward(pred) -> list[float]:
    """Time the predictor's network passes: a list whose first item adds up the seconds spent in
    :meth:`Predictor.forward` (the rest of a call is the CPU's tiling and blending) and whose
    second adds up the pixels of the tiles it was given."""
    spent, real = [0.0, 0], pred.forward

    def forward(batch, per_pass=None):
        t = time.perf_counter()
        try:
            return real(batch, per_pass)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += batch.shape[0] * batch.shape[1] * batch.shape[2]

    pred.forward = forward
    return spent


def part_three(a, repeats, batches) -> None:
    from unet import load_model
    from unet.imaging import read_image, save_png
    from unet.predict import overlay, predict_files

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
        padded = np.stack([read_image(p) for p in sorted(src.glob("*.jpg"))[:max(batches)]])
        best_rate, best_b = 0.0, 1
        for b in batches:
            rate = b / best_time(lambda: dm.predictor.model.predict_on_batch(padded[:b]), repeats)
            if rate > best_rate:
                best_rate, best_b = rate, b
        t = time.perf_counter()
        predict_files(dm, [src], Path(tmp) / "warm")  # the first folder compiles its pass shapes
        first = n / (time.perf_counter() - t)
        network = _timed_forward(dm.predictor)
        t = time.perf_counter()
        rows = predict_files(dm, [src], Path(tmp) / "out")
        secs = time.perf_counter() - t
        ours = n / secs
        del dm.predictor.forward  # untimed again: the class's own method
        # The photos' own work on one thread (the CPU's default) against the device's default.
        threads, one_thread = dm.predictor.map_threads, None
        if threads > 1:
            dm.predictor.map_threads = 1
            t = time.perf_counter()
            predict_files(dm, [src], Path(tmp) / "out1")
            one_thread = n / (time.perf_counter() - t)
            dm.predictor.map_threads = threads
        # The CPU's part alone (decode, render and write every output, on predict's threads): the
        # rate no model can lift the folder above.
        from concurrent.futures import ThreadPoolExecutor

        from unet.predict import PhotoJob, writer_threads

        seg = dm.segment(read_image(src / "p0000.jpg"))
        job = PhotoJob([src], Path(tmp) / "io")

        def io_only(i: int) -> None:
            job.write(job.render(i, job.read(i)[0], seg, dm.card.scale)[0])

        t = time.perf_counter()
        with ThreadPoolExecutor(writer_threads()) as pool:
            list(pool.map(io_only, range(n)))
        io_rate = n / (time.perf_counter() - t)
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
    print(f"decode, render and write alone ({writer_threads()} threads, no model): {io_rate:.2f} photos/s")
    print(f"predict_files (decode, model, writing overlapped): {ours:.2f} photos/s, {ours / best_rate:.2f}x ceiling "
          f"(GPU target >= 0.5), {ours / min(best_rate, io_rate):.2f}x the slower of model and writing; "
          f"first folder (compiling its pass shapes) {first:.2f} photos/s")
    if one_thread is not None:
        print(f"the photos' own work between passes on {threads} threads: {ours:.2f} photos/s; on one: "
              f"{one_thread:.2f} ({ours / one_thread:.2f}x)")
    print(f"the model's thread: in the network's passes {network[0] / n * 1e3:.1f} ms per photo, outside "
          f"them (exposure, the automatic scale's resizing, maps, thresholds, waiting for photos or writers) "
          f"{(secs - network[0]) / n * 1e3:.1f} ms")
    print(f"one by one (read, segment, write, in turn): {one_by_one:.2f} photos/s; "
          f"predict_files is {ours / one_by_one:.2f}x that")


if __name__ == "__main__":
    main()

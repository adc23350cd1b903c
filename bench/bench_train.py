"""Training throughput: the real input pipeline against `fit` on pre-loaded arrays.

    python bench/bench_train.py [--quick] [--preset seed] [--size 256] [--data DIR] [--color F] [--noise F]

Both fit the same model for the same number of steps; the baseline gets the very
batches the pipeline produced, pre-loaded as one array (no decoding, no augmentation),
so the ratio is the pipeline's cost. Data: a generated sample unless --data is given.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main() -> None:
    from bench._args import model_options

    ap = model_options('Training throughput.')
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--data", help="dataset folder (default: a generated sample)")
    ap.add_argument("--color", type=float, default=0.0, help="the crops' colour augmentation (train --color)")
    ap.add_argument("--noise", type=float, default=0.0, help="the crops' sensor noise (train --noise)")
    a = ap.parse_args()
    # Killed by `timeout` (SIGTERM, as bench/gpu_session.sh does), end as on Ctrl-C: the worker
    # processes are stopped and their shared memory unlinked by the `finally` blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from unet.data import Augment, PairBatcher, load_pairs, training_splits
    from unet.losses import get_loss
    from unet.model import build_unet
    from unet.synthetic import write_sample_dataset
    from unet.train import data_workers, keras_dataset

    steps = 3 if a.quick else a.steps
    data = a.data
    if data is None:
        data = tempfile.mkdtemp(prefix="bench-data-")
        write_sample_dataset(data, count=24, seed=0, size=(320, 400))
    train, _, _ = training_splits(data)
    t0 = time.perf_counter()
    pairs, _, _ = load_pairs(train)
    decode = time.perf_counter() - t0
    batcher = PairBatcher(pairs, a.size, a.batch, Augment(color=a.color, noise=a.noise), steps=steps, seed=0)

    def fresh():
        import keras

        keras.utils.set_random_seed(0)
        m = build_unet(a.preset, a.size)
        m.compile("adam", get_loss("bce_dice"))
        return m

    # The same batches, pre-loaded: what a perfect pipeline would deliver.
    xs, ys = zip(*(batcher.batch(i) for i in range(steps)))
    x, y = np.concatenate(xs), np.concatenate(ys)

    def timed_fit(model, **kw) -> float:
        model.fit(epochs=1, verbose=0, **kw)  # warm-up epoch: tracing and compilation
        t = time.perf_counter()
        model.fit(epochs=1, verbose=0, **kw)
        return steps * a.batch / (time.perf_counter() - t)

    batcher.epoch = 0
    import keras

    print(f"# training benchmark: backend {keras.backend.backend()}, preset {a.preset}, {a.size}x{a.size}, "
          f"batch {a.batch}, {steps} steps, {len(pairs)} photos decoded and cached once in {decode:.2f} s, "
          f"{os.cpu_count()} CPU cores, {data_workers()} data threads, colour augmentation {a.color}, noise {a.noise}", flush=True)
    preloaded = timed_fit(fresh(), x=x, y=y, batch_size=a.batch, shuffle=False)
    print(f"fit on pre-loaded arrays (baseline)  {preloaded:6.2f} img/s", flush=True)
    processes = max(2, data_workers())
    for label, procs in (("threads", 0), (f"{processes} processes", processes)):
        batcher.epoch = 0
        data = keras_dataset(batcher, processes=procs)
        try:
            pipeline = timed_fit(fresh(), x=data)
        finally:
            data.close()
        print(f"fit with the real pipeline, {label:<12} {pipeline:6.2f} img/s   {pipeline / preloaded:.2f}x baseline "
              f"(target >= 0.85 on a GPU)", flush=True)

    # What the pipeline alone can deliver (no model): the rate an accelerator can be fed at.
    from concurrent.futures import ThreadPoolExecutor

    from unet.batches import ProcessBatches

    n_batches = max(8, 4 * steps)

    def rate(make) -> float:
        make(0)  # warm-up (threads started, the workers' first batches)
        t = time.perf_counter()
        make(1)
        return n_batches * a.batch / (time.perf_counter() - t)

    def threads(workers):
        def make(epoch):
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda j: batcher.batch(j % len(batcher), epoch * 1000 + j // len(batcher)),
                              range(n_batches)))
        return make

    results = {f"{w:2d} thread(s)": rate(threads(w)) for w in sorted({1, data_workers()})}
    with ProcessBatches(batcher, processes) as pool:
        def made_by_processes(epoch):  # n_batches in order, over as many epochs as that takes
            for j in range(n_batches):
                e, i = divmod(j, len(batcher))
                pool.batch(epoch * 1000 + e, i)

        results[f"{processes:2d} processes"] = rate(made_by_processes)
    one = results[" 1 thread(s)"]
    for label, r in results.items():
        print(f"pipeline alone, {label:<13} {r:6.0f} img/s   {r / one:.2f}x one thread", flush=True)


if __name__ == "__main__":
    main()

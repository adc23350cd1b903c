"""Scale-out on Ray (issue #17): each figure a ratio measured in this run.

    python bench/bench_scale.py            # 200 photos (about 10 minutes on 2 cores)
    python bench/bench_scale.py --quick    # 24 photos

A local Ray cluster with 2 CPUs segments the same folder of 544x384 JPEGs (DeepCrack's
size) with the bundled model, writing every mask and overlay, as

- 2 workers of 1 CPU each, against 1 worker of 1 CPU (target >= 1.6x);
- 1 worker of 1 CPU, against the single-process ``predict`` pinned to one core with one
  TensorFlow thread (target >= 0.9x); and 1 worker of 2 CPUs against the single-process
  ``predict`` on the whole machine.

Each Ray figure is the whole job: the workers' start (TensorFlow import, model load) included.
The single-process figures run in fresh subprocesses (``python -m unet predict``) timed from
the command's start, TensorFlow import and model load included, so both sides pay the same.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def single_process(src: Path, out: Path, one_core: bool) -> float:
    """Seconds for `python -m unet predict` in a fresh process (pinned to core 0 with one thread)."""
    code = ("import os, sys\n"
            + ("os.sched_setaffinity(0, {0})\nimport tensorflow as tf\n"
               "tf.config.threading.set_intra_op_parallelism_threads(1)\n"
               "tf.config.threading.set_inter_op_parallelism_threads(1)\n" if one_core else "")
            + "from unet.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNET_PROGRESS_SECONDS": "100000"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, "predict", str(src), "--out", str(out)], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--photos", type=int, default=200)
    a = ap.parse_args()
    n = 24 if a.quick else a.photos

    from PIL import Image

    from unet.cluster import connect, predict_files_ray
    from unet.synthetic import damaged_wall

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(n):
            Image.fromarray(damaged_wall(i, 384, 544)[0]).save(src / f"p{i:04d}.jpg", quality=92)
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
        print(f"# scale-out benchmark: {n} photos of 544x384, {os.cpu_count()} CPU cores "
              f"({' '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16') if f in flags)})")
        one_core = single_process(src, Path(tmp) / "s1", one_core=True)
        whole = single_process(src, Path(tmp) / "s2", one_core=False)
        connect(None, num_cpus=2)
        times = {}
        for label, workers, cpus in (("1 worker, 1 CPU", 1, 1), ("2 workers, 1 CPU each", 2, 1),
                                     ("1 worker, 2 CPUs", 1, 2)):
            t = time.perf_counter()
            rows = predict_files_ray(None, [src], Path(tmp) / f"ray{workers}{cpus}", workers=workers,
                                     cpus_per_worker=cpus, batch_size=8)
            times[label] = time.perf_counter() - t
            assert not any(r["error"] for r in rows)
        same = all((Path(tmp) / "s2" / p.name).read_bytes() == p.read_bytes()
                   for p in (Path(tmp) / "ray21").iterdir())
    rate = {k: n / v for k, v in times.items()}
    print(f"single process, 1 core, 1 thread:   {n / one_core:6.2f} photos/s ({one_core:.1f} s)")
    print(f"single process, whole machine:      {n / whole:6.2f} photos/s ({whole:.1f} s)")
    for k, v in times.items():
        print(f"ray, {k:<22}         {rate[k]:6.2f} photos/s ({v:.1f} s)")
    print(f"2 workers vs 1 worker (1 CPU each):              {rate['2 workers, 1 CPU each'] / rate['1 worker, 1 CPU']:.2f}x"
          " (target >= 1.6)")
    print(f"ray 1 worker (1 CPU) vs single process on 1 core: {rate['1 worker, 1 CPU'] * one_core / n:.2f}x "
          "(target >= 0.9)")
    print(f"ray 1 worker (2 CPUs) vs single process:          {rate['1 worker, 2 CPUs'] * whole / n:.2f}x")
    print(f"outputs byte for byte the same as the single process: {same}")


if __name__ == "__main__":
    main()

"""Crack measurements: their cost beside segmentation, and their agreement with the true masks.

    python bench/bench_measure.py [--quick] [--model models/default.keras]

1. A 12-megapixel photo (4000x3000, generated cracks of known geometry) is segmented
   once with the model and its mask measured (best of 3): the ratio measure / segment
   must be <= 0.5.
2. On the shared validation splits (skipped when ../shared/data is absent): each photo's
   total crack length from its true mask against the length from the model's mask, at
   the model's own settings. Prints the median relative difference (target: within 15%)
   and its spread, per split.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = ROOT.parent / "shared" / "data"
SPLITS = {"masonry": SHARED / "masonry" / "val", "deepcrack": SHARED / "deepcrack" / "val"}


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    seen = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(seen) or "no AVX2"


def speed(dm, quick: bool) -> None:
    from unet.cracks import measure
    from unet.synthetic import measured_cracks

    h, w = (1500, 2000) if quick else (3000, 4000)
    image, truth_mask, truths = measured_cracks(7, h, w, per_side=8, widths=(2, 14))
    start = time.perf_counter()
    seg = dm.segment(image)
    t_seg = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        found = measure(seg.mask)
        times.append(time.perf_counter() - start)
    t_measure = min(times)
    true = measure(truth_mask)
    print(f"{w}x{h} photo ({h * w / 1e6:.0f} MP), {len(truths)} drawn cracks: segment {t_seg:.1f} s, measure "
          f"{t_measure:.2f} s = {t_measure / t_seg:.3f}x segmenting (target <= 0.5)")
    print(f"  cracks found {found.count} (drawn {len(truths)}); total length {found.total_length_px:,.0f} px from "
          f"the model's mask, {true.total_length_px:,.0f} px from the true mask, "
          f"{sum(t.length for t in truths):,.0f} px drawn")


def agreement(dm) -> None:
    from unet.cracks import measure
    from unet.data import load_pair
    from unet.evaluate import eval_samples

    if not all(p.is_dir() for p in SPLITS.values()):
        print(f"# {SHARED} is absent: no validation agreement to measure")
        return
    print(f"# total crack length per photo, model mask vs true mask, at threshold {dm.card.threshold:g}, "
          f"scale {dm.card.scale}")
    for name, split in SPLITS.items():
        samples, _ = eval_samples(split)
        rel, width_diff = [], []
        start = time.perf_counter()
        for s in samples:
            image, mask = load_pair(s)
            true = measure(mask)
            if true.total_length_px <= 0:
                continue
            found = measure(dm.segment(image).mask)
            rel.append(found.total_length_px / true.total_length_px - 1)
            width_diff.append(found.max_width_px - true.max_width_px)
        r = np.array(rel)
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        print(f"{name:<10} {len(r)} photos ({time.perf_counter() - start:.0f} s): length difference median "
              f"{100 * med:+.1f}% (target within 15%), middle half {100 * q1:+.1f}% to {100 * q3:+.1f}%, "
              f"median |difference| {100 * np.median(np.abs(r)):.1f}%, 90th percentile |difference| "
              f"{100 * np.percentile(np.abs(r), 90):.1f}%; widest crack, model minus truth: median "
              f"{np.median(width_diff):+.1f} px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    ap.add_argument("--quick", action="store_true", help="a 3 MP photo and no validation splits")
    a = ap.parse_args()
    from unet.damage_model import DamageModel

    dm = DamageModel.load(a.model)
    print(f"# crack measurement benchmark: model {Path(a.model).name}, {os.cpu_count()} CPU cores, "
          f"CPU flags seen: {cpu_flags()}")
    speed(dm, a.quick)
    if not a.quick:
        agreement(dm)


if __name__ == "__main__":
    main()

"""The automatic scale's cost (issue #14): seconds per megapixel with the bundled model at its
shipped setting (scale "auto") against the same model at the photo's own size (scale 1, the
setting before #14), measured in one run on generated walls of several sizes.

    python bench/bench_autoscale.py [--repeats 2]

Target: no more than 1.5x the time per megapixel of scale 1 for any size. The automatic scale
costs a coarse pass or a few (from 1/16 of the photo up, until cracks show) and then two
passes, at the chosen scale and twice it; a photo with wide cracks is seen smaller, so a
large photo usually costs less than at its own size. Up to 512 px the walls are generated at
their size (cracks 1-5 px wide: little or no shrinking, the most coarse passes, the dearest
case); the larger photos are a 512 px wall enlarged, as a phone photo shows a wall up close.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.bench_passes import cpu_flags  # noqa: E402

SIZES = [(224, 224), (384, 544), (1080, 1920), (3000, 4000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import numpy as np
    from PIL import Image

    from unet import load_model
    from unet.synthetic import damaged_wall

    dm = load_model()
    print(f"# CPU flags seen: {cpu_flags()}; {os.cpu_count()} cores; model {dm.path.name}, card scale {dm.scale}")
    print("# size        scale 1 s/MP   auto s/MP   ratio   auto chose   (target ratio <= 1.5)")
    for h, w in SIZES:
        image, _, _ = damaged_wall(7, min(h, 512), min(w, 512))
        if (h, w) != image.shape[:2]:  # a larger photo of the same wall, as a phone would take it
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))
        mp = h * w / 1e6
        best, chosen = {1.0: float("inf"), "auto": float("inf")}, {}
        for scale in best:
            dm.segment(image, scale=scale)  # warm-up: compiled shapes
        # the two settings take turns, so a machine that slows down midway slows both alike
        for _ in range(a.repeats):
            for scale in best:
                t = time.perf_counter()
                chosen[scale] = dm.segment(image, scale=scale).scale
                best[scale] = min(best[scale], time.perf_counter() - t)
        timing = {scale: (best[scale] / mp, chosen[scale]) for scale in best}
        ratio = timing["auto"][0] / timing[1.0][0]
        print(f"{w}x{h:<8}  {timing[1.0][0]:>10.3f}   {timing['auto'][0]:>9.3f}   {ratio:>5.2f}x   "
              f"{timing['auto'][1]:g}", flush=True)


if __name__ == "__main__":
    main()

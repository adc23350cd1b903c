"""One large phone photo through the bundled model at its shipped settings: seconds and the
process's peak memory, against the memory ceiling (2 GiB, as for the 12 MP photo in
docs/benchmarks.md).

    python bench/bench_large_photo.py [--size 8064x6048] [--kind enlarged|hairlines] [--model ...]

Phones now save 24-48 MP photos (8064x6048 is an iPhone's 48 MP mode); the 100 MP limit admits
them. ``enlarged``: a 512 px generated wall enlarged to the size, a wall photographed up close
(the automatic scale sees it small: cheap). ``hairlines``: 512 px walls of thin cracks (1-5 px
wide) tiled to the size at their own scale (thin cracks keep the photo large: seen at 0.5 on
this CPU, 16 times the pixels of ``enlarged``, the dear case). One process per run, so the peak is this photo's (the model and
TensorFlow included; printed after loading them too).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.bench_passes import cpu_flags  # noqa: E402

CEILING_MIB = 2048


def _peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="8064x6048", help="WxH (default: 48 MP)")
    ap.add_argument("--kind", choices=("enlarged", "hairlines"), default="enlarged")
    ap.add_argument("--model", help="the model (default: the bundled one)")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    import numpy as np
    from PIL import Image

    from unet import load_model
    from unet.synthetic import damaged_wall

    dm = load_model(a.model)
    wall, _, _ = damaged_wall(7, 512, 512)
    if a.kind == "enlarged":
        image = np.asarray(Image.fromarray(wall).resize((w, h), Image.BICUBIC))
    else:
        image = np.ascontiguousarray(np.tile(wall, (h // 512 + 1, w // 512 + 1, 1))[:h, :w])
    loaded = _peak_mib()
    t = time.perf_counter()
    seg = dm.segment(image)
    seconds = time.perf_counter() - t
    peak = _peak_mib()
    print(f"# CPU flags seen: {cpu_flags()}; {os.cpu_count()} cores; model {dm.path}, card scale {dm.scale}")
    print(f"{w}x{h} ({w * h / 1e6:.0f} MP, {a.kind}): {seconds:.1f} s ({seconds / (w * h / 1e6):.3f} s/MP), "
          f"seen at scale {seg.scale:g}, {seg.damaged_pct:.2f}% damaged; peak memory {peak} MiB "
          f"({loaded} MiB with the model and the photo loaded): {peak / CEILING_MIB:.2f}x the {CEILING_MIB} MiB ceiling")


if __name__ == "__main__":
    main()

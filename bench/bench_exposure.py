"""Pixel F1 of the bundled model on photos darkened or brightened, as taken and with the
exposure rule the predictor applies (issue #14: "a photo unlike the training data").

    python bench/bench_exposure.py [--model models/default.keras] [--fold 1/5] [--gains 1 0.6 0.4 0.3 0.2 1.6 2.2 3]

Each photo of fold K/N of each dataset's training photos (whole source walls per fold; the
val splits are not read) is multiplied by each gain (clipped at white, as a camera does) and
segmented twice at the model's shipped settings: with the network seeing the photo as it is
(the rule switched off) and as ``Predictor`` shows it (unet.predict.exposure_gain: a photo
whose mean brightness is outside the training photos' 75-225 is scaled to 135). F1 is pooled
over each dataset's pixels. Synthetic darkening has no sensor noise: a real dark photo is
noisier, so its recovery is an upper bound. Needs ../shared/data; exits 0 with a note when
it is absent.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    ap.add_argument("--fold", default="1/5", metavar="K/N")
    ap.add_argument("--gains", nargs="+", type=float, default=[1.0, 0.6, 0.4, 0.3, 0.2, 1.6, 2.2, 3.0])
    a = ap.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to measure")
        return
    import numpy as np

    import unet.predict as predict
    from unet import load_model
    from unet.data import load_pair, parse_fold
    from unet.evaluate import eval_samples

    model = load_model(a.model)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    shipped_gain = predict.exposure_gain
    print(f"{a.model}, fold {a.fold} of the training photos; F1 pooled over pixels")
    print(f"{'dataset':10} {'gain':>5} {'mean luma':>9} {'outside':>8} {'F1 as is':>8} {'F1 rule':>8}")
    for name in ("masonry", "deepcrack"):
        samples, _ = eval_samples(SHARED / name, parse_fold(a.fold))
        pairs = [(image, mask.astype(bool)) for image, mask in (load_pair(s) for s in samples)]
        for gain in a.gains:
            counts = {"as is": [0, 0, 0], "rule": [0, 0, 0]}
            lumas, moved = [], 0
            for image, truth in pairs:
                photo = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                lumas.append(float((photo.astype(np.float32) @ luma).mean()))
                moved += shipped_gain(photo) != 1.0
                for mode in counts:
                    predict.exposure_gain = shipped_gain if mode == "rule" else (lambda image: 1.0)
                    try:
                        found = model.segment(photo).mask
                    finally:
                        predict.exposure_gain = shipped_gain
                    c = counts[mode]
                    c[0] += int((found & truth).sum())
                    c[1] += int((found & ~truth).sum())
                    c[2] += int((~found & truth).sum())
            f1 = {m: 2 * c[0] / max(1, 2 * c[0] + c[1] + c[2]) for m, c in counts.items()}
            print(f"{name:10} {gain:5.2f} {np.mean(lumas):9.0f} {moved:4d}/{len(pairs):<3d} "
                  f"{f1['as is']:8.3f} {f1['rule']:8.3f}", flush=True)


if __name__ == "__main__":
    main()

"""Pixel F1 of the bundled model on photos darkened, brightened or noisy, as taken and with the
exposure and noise rules the predictor applies (issue #14: "a photo unlike the training data").

    python bench/bench_exposure.py [--model models/default.keras] [--fold 1/5] [--gains 1 0.6 0.4 0.3 0.2 1.6 2.2 3]
                                   [--noise 8 12 20 30 45]

Each photo of fold K/N of each dataset's training photos (whole source walls per fold; the
val splits are not read) is multiplied by each gain (clipped at white, as a camera does) and
segmented twice at the model's shipped settings: with the network seeing the photo as it is
(the rule switched off) and as ``Predictor`` shows it (unet.predict.exposure_gain: a photo
whose mean brightness is outside the training photos' 75-225 is scaled to 135). F1 is pooled
over each dataset's pixels. Synthetic darkening has no sensor noise: a real dark photo is
noisier, so its recovery is an upper bound. ``--noise``: each photo as taken, with Gaussian
noise of each standard deviation (0-255, per pixel and channel, seeded) added instead; the
rule there is unet.predict.model_view's smoothing of a photo whose measured noise exceeds
NOISE_GATE. "moved": photos the rule changed. Needs ../shared/data; exits 0 with a note when
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
    ap.add_argument("--noise", nargs="*", type=float, default=[], metavar="SD",
                    help="also photos as taken with Gaussian noise of these standard deviations (0-255)")
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
    rules = {"exposure_gain": predict.exposure_gain, "smoothing_radius": predict.smoothing_radius}
    off = {"exposure_gain": lambda image: 1.0, "smoothing_radius": lambda sigma: 0.0}

    def gained(gain):
        return lambda image, rng: np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)

    def noisy(sd):
        return lambda image, rng: np.clip(image + rng.normal(0, sd, image.shape) + 0.5, 0, 255).astype(np.uint8)

    changes = [(f"gain {g:g}", gained(g)) for g in a.gains] + [(f"noise {sd:g}", noisy(sd)) for sd in a.noise]
    print(f"{a.model}, fold {a.fold} of the training photos; F1 pooled over pixels")
    print(f"{'dataset':10} {'photos':>9} {'mean luma':>9} {'noise':>5} {'moved':>8} {'F1 as is':>8} {'F1 rule':>8}")
    for name in ("masonry", "deepcrack"):
        samples, _ = eval_samples(SHARED / name, parse_fold(a.fold))
        pairs = [(image, mask.astype(bool)) for image, mask in (load_pair(s) for s in samples)]
        for label, change in changes:
            rng = np.random.default_rng(0)
            counts = {"as is": [0, 0, 0], "rule": [0, 0, 0]}
            lumas, sigmas, moved = [], [], 0
            for image, truth in pairs:
                photo = change(image, rng)
                lumas.append(float((photo.astype(np.float32) @ luma).mean()))
                sigmas.append(predict.noise_sigma(photo))
                moved += predict.model_view(photo) is not photo
                for mode in counts:
                    for rule, shipped in rules.items():
                        setattr(predict, rule, shipped if mode == "rule" else off[rule])
                    try:
                        found = model.segment(photo).mask
                    finally:
                        for rule, shipped in rules.items():
                            setattr(predict, rule, shipped)
                    c = counts[mode]
                    c[0] += int((found & truth).sum())
                    c[1] += int((found & ~truth).sum())
                    c[2] += int((~found & truth).sum())
            f1 = {m: 2 * c[0] / max(1, 2 * c[0] + c[1] + c[2]) for m, c in counts.items()}
            print(f"{name:10} {label:>9} {np.mean(lumas):9.0f} {np.median(sigmas):5.1f} {moved:4d}/{len(pairs):<3d} "
                  f"{f1['as is']:8.3f} {f1['rule']:8.3f}", flush=True)


if __name__ == "__main__":
    main()

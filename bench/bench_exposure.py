"""Pixel F1 of the bundled model on photos darkened, brightened, noisy or out of focus, as taken
and with the exposure, noise and focus rules the predictor applies (issue #14: "a photo unlike
the training data").

    python bench/bench_exposure.py [--model models/default.keras] [--fold 1/5] [--gains 1 0.6 0.4 0.3 0.2 1.6 2.2 3]
                                   [--noise 0 8 12 20 30 45] [--blur 0 1.5 3 5 8] [--jpeg 0 75 50 30 15]

Each photo of fold K/N of each dataset's training photos (whole source walls per fold; the
val splits are not read) is multiplied by each gain (clipped at white, as a camera does) and
segmented three times at the model's shipped settings: with the network seeing the photo as it
is (the rules switched off), with the exposure rule alone (unet.predict.exposure_gain: a photo
whose mean brightness is outside the training photos' 75-225 is scaled to 135), and as
``Predictor`` shows it (both rules, unet.predict.model_view). F1 is pooled
over each dataset's pixels. Synthetic darkening has no sensor noise: a real dark photo is
noisier, so its recovery is an upper bound. ``--noise``: Gaussian noise of each standard
deviation (0-255, per pixel and channel, seeded) is added after each gain, as a sensor adds it
to a dark exposure (every gain with every noise); the rule there also includes
unet.predict.model_view's smoothing of a photo whose measured noise exceeds NOISE_GATE.
``--blur``: a Gaussian blur of each radius (Pillow's, px) comes first, as a lens out of focus
does before the sensor (every blur with every gain and noise); the rules then include the focus
rule's sharpening of every view of a photo whose blur exceeds BLUR_GATE (unet.predict.focus_blur,
deblur_radius). ``--jpeg``: last of all, the photo is saved as a JPEG of each quality (Pillow's,
4:2:0 chroma, as phones and messaging apps save them; 0: not saved) and read back as an uploaded
photo is. "blur read": the median of unet.predict.blur_sigma over the photos. "moved": photos the
rules changed. Needs ../shared/data; exits 0 with a note when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._args import SHARED, fold_options  # noqa: E402


def main() -> None:
    ap = fold_options(__doc__.splitlines()[0])
    ap.add_argument("--gains", nargs="+", type=float, default=[1.0, 0.6, 0.4, 0.3, 0.2, 1.6, 2.2, 3.0])
    ap.add_argument("--noise", nargs="+", type=float, default=[0.0], metavar="SD",
                    help="Gaussian noise of these standard deviations (0-255) added after each gain")
    ap.add_argument("--blur", nargs="+", type=float, default=[0.0], metavar="PX",
                    help="Gaussian blurs of these radii (px) applied before each gain and noise")
    ap.add_argument("--jpeg", nargs="+", type=int, default=[0], metavar="Q",
                    help="JPEG qualities (1-95) each changed photo is saved at and read back; 0: not saved")
    a = ap.parse_args()
    if any(not 0 <= q <= 95 for q in a.jpeg):
        ap.error("--jpeg: qualities are 1-95 (0: not saved as a JPEG)")
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to measure")
        return
    import numpy as np

    import unet.predict as predict
    from unet import load_model
    from unet.data import load_pair, parse_fold
    from unet.evaluate import eval_samples
    from unet.imaging import read_image

    model = load_model(a.model)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    rules = {"exposure_gain": predict.exposure_gain, "smoothing_radius": predict.smoothing_radius,
             "deblur_radius": predict.deblur_radius}
    off = {"exposure_gain": lambda image: 1.0, "smoothing_radius": lambda sigma: 0.0,
           "deblur_radius": lambda sigma: 0.0}

    def changed(blur, gain, sd, quality):
        def change(image, rng):
            photo = predict.smoothed(image, blur).astype(np.float32) * gain
            if sd:
                photo += rng.normal(0, sd, image.shape)
            photo = np.clip(photo + 0.5 * (sd > 0), 0, 255).astype(np.uint8)
            return jpeg(photo, quality) if quality else photo
        return change

    def jpeg(photo, quality):  # read back as an uploaded photo is (unet.imaging.read_image)
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format="JPEG", quality=quality)
        return read_image(buf.getvalue(), name=f"quality-{quality}.jpg")

    changes = [(f"{b:g}", f"{g:g}", f"{sd:g}", f"{q or '-'}", changed(b, g, sd, q))
               for b in a.blur for g in a.gains for sd in a.noise for q in a.jpeg]
    # the network's view: the photo as it is, with the exposure rule alone, with both rules
    modes = {"as is": (), "exposure": ("exposure_gain",), "rules": tuple(rules)}
    print(f"{a.model}, fold {a.fold} of the training photos; F1 pooled over pixels")
    print(f"{'dataset':10} {'blur':>5} {'gain':>5} {'noise':>5} {'jpeg':>4} {'mean luma':>9} {'read':>5} {'blur read':>9} {'moved':>8} "
          f"{'F1 as is':>8} {'exposure':>8} {'rules':>8}")
    for name in ("masonry", "deepcrack"):
        samples, _ = eval_samples(SHARED / name, parse_fold(a.fold))
        pairs = [(image, mask.astype(bool)) for image, mask in (load_pair(s) for s in samples)]
        for blur, gain, sd, quality, change in changes:
            rng = np.random.default_rng(0)
            counts = {mode: [0, 0, 0] for mode in modes}
            lumas, sigmas, blurs, moved = [], [], [], 0
            for image, truth in pairs:
                photo = change(image, rng)
                lumas.append(float((photo.astype(np.float32) @ luma).mean()))
                sigmas.append(predict.noise_sigma(photo))
                view_gain, _, radius, seen_blur = predict.view_settings(photo)
                blurs.append(predict.blur_sigma(photo))
                for mode, on in modes.items():
                    for rule, shipped in rules.items():
                        setattr(predict, rule, shipped if rule in on else off[rule])
                    try:
                        seg = model.segment(photo)
                    finally:
                        for rule, shipped in rules.items():
                            setattr(predict, rule, shipped)
                    found = seg.mask
                    if mode == "rules":
                        finest = seen_blur * max(predict.seen_scales(seg.scale, model.scale))
                        moved += view_gain != 1.0 or radius > 0 or predict.deblur_radius(finest) > 0
                    c = counts[mode]
                    c[0] += int((found & truth).sum())
                    c[1] += int((found & ~truth).sum())
                    c[2] += int((~found & truth).sum())
            f1 = {m: 2 * c[0] / max(1, 2 * c[0] + c[1] + c[2]) for m, c in counts.items()}
            print(f"{name:10} {blur:>5} {gain:>5} {sd:>5} {quality:>4} {np.mean(lumas):9.0f} {np.median(sigmas):5.1f} "
                  f"{np.median(blurs):9.1f} {moved:4d}/{len(pairs):<3d} "
                  + " ".join(f"{f1[mode]:8.3f}" for mode in modes), flush=True)

if __name__ == "__main__":
    main()

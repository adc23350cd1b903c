"""Pixel F1 of a model on photos in a wide-gamut colour space (an iPhone's Display P3, a camera's
Adobe RGB), read with their embedded ICC profile (unet.imaging converts them to sRGB, the
training photos' space) and without it (the numbers read as written, as before).

    python bench/bench_colour.py [--model models/default.keras] [--fold 1/5]

Each photo of fold K/N of each dataset's training photos (the val splits are not read) is
re-encoded as the numbers a camera writes for the same scene in that space
(unet.synthetic.in_wide_gamut), saved as a PNG tagged with the space's profile
(unet.synthetic.icc_profile) or untagged, read back as an upload is and segmented at the model's
shipped settings. F1 is pooled over each dataset's pixels. Needs ../shared/data; exits 0 with a
note when it is absent.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._args import SHARED, fold_options  # noqa: E402


def main() -> None:
    ap = fold_options(__doc__.splitlines()[0])
    a = ap.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to measure")
        return
    from PIL import Image

    from unet import load_model
    from unet.data import load_pair, parse_fold
    from unet.evaluate import eval_samples
    from unet.imaging import read_image
    from unet.synthetic import ADOBE_RGB_PRIMARIES, P3_PRIMARIES, icc_profile, in_wide_gamut

    spaces = {"sRGB": None, "Display P3": (P3_PRIMARIES, 2.2), "Adobe RGB": (ADOBE_RGB_PRIMARIES, 563 / 256)}
    profiles = {space: icc_profile(*how, space) for space, how in spaces.items() if how}
    model = load_model(a.model)
    print(f"{a.model}, fold {a.fold} of the training photos; F1 pooled over pixels")
    print(f"{'dataset':10} {'photos':>6} " + " ".join(f"{k + (' tagged' if v else ''):>17}" for k, v in spaces.items())
          + " " + " ".join(f"{k + ' untagged':>19}" for k, v in spaces.items() if v))
    for name in ("masonry", "deepcrack"):
        samples, _ = eval_samples(SHARED / name, parse_fold(a.fold))
        counts: dict[str, list[int]] = {}
        for sample in samples:
            image, truth = load_pair(sample)
            truth = truth.astype(bool)
            for space, how in spaces.items():
                for tagged in ((True,) if how is None else (True, False)):
                    photo = image if how is None else in_wide_gamut(image, *how)
                    buf = io.BytesIO()
                    Image.fromarray(photo).save(buf, "PNG", **({"icc_profile": profiles[space]} if how and tagged else {}))
                    found = model.segment(read_image(buf.getvalue(), name=f"{space}.png")).mask
                    c = counts.setdefault(f"{space} {'tagged' if tagged else 'untagged'}", [0, 0, 0])
                    c[0] += int((found & truth).sum())
                    c[1] += int((found & ~truth).sum())
                    c[2] += int((~found & truth).sum())
        f1 = {k: 2 * c[0] / max(1, 2 * c[0] + c[1] + c[2]) for k, c in counts.items()}
        tagged = [f"{f1[k + ' tagged']:17.4f}" for k in spaces]
        untagged = [f"{f1[k + ' untagged']:19.4f}" for k, v in spaces.items() if v]
        print(f"{name:10} {len(samples):6d} " + " ".join(tagged) + " " + " ".join(untagged), flush=True)


if __name__ == "__main__":
    main()

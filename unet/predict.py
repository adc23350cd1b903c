"""Segmenting photos of any size with the overlap-tile strategy.

A photo that fits in one pass is mirror-padded to a multiple of 16 and predicted whole.
A larger photo is mirror-padded by a margin on every side and cut into overlapping
tiles; each tile's prediction is weighted by a window that falls towards its edges
(where the network sees the least context) and the weighted tiles are summed and
normalised. The result has the photo's own resolution; nothing is ever squashed to
the model's input size, so hairline cracks survive. A model may carry a ``scale`` in its card
(chosen with ``python -m unet calibrate --scales``): photos are then resized by that factor
before the tiles are cut, and the map is resized back to the photo's own size. The scale
``"auto"`` (the bundled model's) picks it per photo from the width of the cracks found in
a coarse pass (:func:`choose_scale`): a 12-megapixel photo of a wide crack is shrunk until
the crack is as wide as those the model learned from, a photo of hairlines is not.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError, UnetError
from .data import mirror_pad
from .imaging import IMAGE_EXTENSIONS, ImageError, read_image
from .model import AUTO, check_scale

OVERLAY_COLOR = (255, 32, 32)

# Automatic scale (issue #14). The training masks' cracks are 2-12 px wide (median 4.5-5.7,
# measured as 2 x area / perimeter); a photo enlarged 2x or 4x lost most of its cracks. The
# rule, chosen on enlarged photos of a held-out fold of the training photos and on generated
# walls (never the val splits; docs/auto-scale.md): from the coarsest scale of the ladder up,
# the first map with at least AUTO_MIN_FOUND of its pixels damaged gives the width of the
# cracks in the photo's own pixels; the photo is seen at the largest scale of the ladder at
# which they are at most AUTO_MAX_WIDTH pixels wide. A photo with no such map (no crack, or
# hairlines only) is seen at its own size.
AUTO_MAX_WIDTH = 6.0
AUTO_MIN_FOUND = 0.002
AUTO_MIN_SIDE = 96  # the ladder stops before the photo would be smaller than this across
AUTO_MIN_SCALE = 0.0625


@dataclass(frozen=True)
class Segmentation:
    """The damage found in one photo.

    Attributes:
        probability: float32 (H, W), damage probability per pixel.
        mask: bool (H, W), ``probability >= threshold``.
        damaged_pct: share of damaged pixels, in percent.
        threshold: the threshold used.
    """

    probability: np.ndarray
    mask: np.ndarray
    damaged_pct: float
    threshold: float
    scale: float = 1.0  # the resize the model saw the photo at (chosen per photo with "auto")

    @classmethod
    def from_probability(cls, probability: np.ndarray, threshold: float, scale: float = 1.0) -> "Segmentation":
        mask = probability >= threshold
        # count_nonzero: the same share as mask.mean() (an exact count over the size), without
        # a float copy of the mask (0.1 ms of a 384x384 photo's 1 ms outside the network).
        return cls(probability, mask, 100.0 * (np.count_nonzero(mask) / mask.size), float(threshold), float(scale))

    def at(self, threshold: float) -> "Segmentation":
        """The same probabilities at another threshold (no model call)."""
        return Segmentation.from_probability(self.probability, threshold, self.scale)

    @property
    def doubt(self) -> str:
        """Why this mask should be checked by eye, or '' (see :func:`doubt`)."""
        return doubt(self.probability, self.threshold)


# A mask is flagged when the pixels the model nearly called damaged (probability from half
# the threshold up to it) are at least as many as those it did, and at least DOUBT_MIN_PCT
# of the photo: the model is hedging (a faint or unfamiliar crack, a photo unlike the
# training ones), and the threshold, not the photo, decides what is drawn.
DOUBT_MIN_PCT = 0.1


def doubt(probability: np.ndarray, threshold: float) -> str:
    """A one-line reason to check this mask by eye, or '' when the model is sure of it."""
    sure = float((probability >= threshold).mean()) * 100
    near = float(((probability >= threshold / 2) & (probability < threshold)).mean()) * 100
    if near >= DOUBT_MIN_PCT and near >= sure:
        return (f"unsure: {near:.2f}% of the photo is nearly damage (probability {threshold / 2:.2f}-{threshold:.2f}) "
                f"against {sure:.2f}% drawn; check the heatmap, a lower threshold may show more")
    return ""


# Exposure. The training photos' mean brightness (luma, 0-255) spans 77-224. Darkened copies of
# fold 1/5's photos lost their cracks (masonry F1 0.920 as taken, 0.387 at mean 51, 0.064 at
# 38; DeepCrack 0.854, 0.662, 0.477); brought back to EXPOSURE_TARGET before the model saw
# them, they scored 0.921 and 0.847 again. Brightened copies (x2.2: mean 221-245) fell less and
# regained part (masonry 0.859 -> 0.870, DeepCrack 0.717 -> 0.814); docs/exposure.md. So a
# photo darker or brighter than every training photo is scaled to EXPOSURE_TARGET (a gain,
# clipped at white) before the model sees it, and the note says so; a photo within the
# training photos' range is never touched. A photo mostly blown out to white has lost what no
# gain brings back, and one far too dark is mostly noise: both are flagged for a check by eye.
DARK_LUMA = 75.0  # the training photos: 77 or more
BRIGHT_LUMA = 225.0  # the training photos: 224 or less
EXPOSURE_TARGET = 135.0  # about the training photos' median brightness
MAX_GAIN = 8.0  # below a mean of about 17 there is little left but sensor noise
BLOWN_OUT = 0.5  # share of pixels at white (luma >= 250); the training photos: at most 0.23
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _luma_sample(image: np.ndarray) -> np.ndarray:
    """Luma of about a quarter million of the photo's pixels (a regular grid): enough for its
    mean and share of white, at a few milliseconds for a 12 MP photo."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 250_000)))
    return image[::step, ::step].astype(np.float32) @ _LUMA


def _gain(mean: float) -> float:
    """The gain for a photo of this mean brightness (see :func:`exposure_gain`)."""
    if DARK_LUMA <= mean <= BRIGHT_LUMA:
        return 1.0
    return min(MAX_GAIN, EXPOSURE_TARGET / max(mean, 1.0))


def exposure_gain(image: np.ndarray) -> float:
    """The brightness gain of the model's view of this photo: 1 within the training photos'
    range (DARK_LUMA-BRIGHT_LUMA on average), else what brings it to EXPOSURE_TARGET (a gain of at
    most MAX_GAIN)."""
    return _gain(float(_luma_sample(image).mean()))


def exposed(image: np.ndarray, gain: float) -> np.ndarray:
    """The photo with its brightness times ``gain`` (clipped at white); itself when the gain is 1."""
    if gain == 1.0:
        return image
    # a table of 256 values: no float copy of a 12 MP photo (144 MB), one uint8 result
    table = np.clip(np.arange(256, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
    return table[image]


def exposure_note(image: np.ndarray) -> tuple[str, bool]:
    """(what the exposure did and what cannot be trusted, whether the mask needs checking by
    eye); ('', False) for a photo exposed like the training photos."""
    luma = _luma_sample(image)
    mean, white = float(luma.mean()), float((luma >= 250).mean())
    notes, retake, gain = [], False, _gain(mean)
    if gain != 1.0:
        notes.append(f"{DIM_NOTE if gain > 1 else 'a bright photo'} (mean brightness {mean:.0f}/255, the training "
                     f"photos' {DARK_LUMA:.0f}-{BRIGHT_LUMA:.0f}): {'brightened' if gain > 1 else 'darkened'} "
                     f"x{gain:.2g} for the model")
        if gain >= MAX_GAIN:
            notes.append("too dark to trust, retake it with more light")
            retake = True
    if white >= BLOWN_OUT:
        notes.append(f"overexposed: {100 * white:.0f}% of the photo is pure white, where no crack can be seen; "
                     "retake it with less light or exposure")
        retake = True
    return "; ".join(notes), retake


# Noise. Gaussian sensor noise added to fold 1/5's photos cost a model that never saw them most
# of masonry's cracks (F1 0.896 as taken; 0.811 at a standard deviation of 12/255, 0.537 at 20,
# 0.311 at 30: recall 0.38 at 20) and less of DeepCrack's (0.861; 0.853, 0.840, 0.807). A
# Gaussian blur that leaves NOISE_TARGET of the noise brought them back to 0.891 / 0.892 / 0.886
# and 0.852 / 0.841 / 0.829 (bench/bench_exposure.py --noise, docs/exposure.md). The training
# photos' own noise, read alike: masonry 99% at or below 10 (at most 12.6, brick texture),
# DeepCrack 90% below 9.6 (asphalt grain up to 22); the fold as taken moves by at most 0.001. So
# a photo whose noise reads above NOISE_GATE is smoothed for the model, as its exposure is
# changed: the photo shown and written stays as taken, and the note says so.
NOISE_GATE = 10.0  # standard deviation, 0-255, of the finest-scale detail (noise_sigma)
NOISE_TARGET = 7.0  # what the blur leaves of it (chosen on the fold over 4, 5, 6 and 8)
# Pillow's GaussianBlur(radius) and the share of white noise's standard deviation it leaves,
# measured on noise of 20/255 at 512x512 (tests/test_predict.py checks it against Pillow)
BLUR_RADII = (0.3, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0)
BLUR_LEFT = (0.845, 0.630, 0.530, 0.445, 0.377, 0.285, 0.235, 0.188, 0.140)


def noise_sigma(image: np.ndarray, gain: float = 1.0) -> float:
    """The photo's noise, as the standard deviation (0-255) of white noise that would give it:
    the median absolute diagonal detail of 2x2 pixel blocks (orthonormal Haar, the finest scale),
    / 0.6745, per channel, the median of the channels; over a grid of about 65,000 blocks (every
    block of a photo up to about 0.26 MP; 5 ms for 12 MP). Robust to edges and cracks, which are
    few of the blocks; a fine regular texture reads as noise. ``gain``: of the photo brightened
    by it first (its exposure, :func:`exposed`)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return 0.0
    step = 2 * max(1, int(np.sqrt(h * w / 4 / 65_536)))  # between blocks' first pixels
    corner = [exposed(image[y:h:step, x:w:step], gain).astype(np.int16) for y in (0, 1) for x in (0, 1)]
    diag = np.abs(corner[0] - corner[1] - corner[2] + corner[3]).reshape(-1, image.shape[2]).T
    return float(np.median(np.median(diag, axis=1)) / 2 / 0.6745)


def smoothing_radius(sigma: float) -> float:
    """The Gaussian blur radius that leaves NOISE_TARGET of noise ``sigma``; 0 at NOISE_GATE or below."""
    if sigma <= NOISE_GATE:
        return 0.0
    left = np.log(NOISE_TARGET / sigma)
    return float(np.interp(left, np.log(BLUR_LEFT[::-1]), BLUR_RADII[::-1]))


def smoothed(image: np.ndarray, radius: float) -> np.ndarray:
    """The photo blurred by a Gaussian of ``radius`` pixels; itself at 0."""
    if radius <= 0:
        return image
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def view_settings(image: np.ndarray) -> tuple[float, float, float, float]:
    """(the exposure gain, the noise read after it, the blur radius for that noise, the photo's
    own blur read after the gain when it is out of focus, else 0 (:func:`focus_blur`)): what
    :func:`model_view` does to this photo, what the focus rule does at each scale it is seen at
    (:class:`_Photo`), and what :func:`view_note` reports. A photo smoothed for its noise reads 0
    blur: it is not sharpened again."""
    gain = exposure_gain(image)
    sigma = noise_sigma(image, gain)
    radius = smoothing_radius(sigma)
    return gain, sigma, radius, 0.0 if radius else focus_blur(blur_sigma(image, gain))


DIM_NOTE, GRAINY_NOTE = "a dark photo", "a noisy photo"  # how a photo's note says it was brightened, smoothed


def noise_robust_would_help(model_path, note: str) -> bool:
    """Whether to point a photo to the bundled noise-robust model: it was segmented by the bundled
    default, and its note (:func:`view_note`; ``results.csv``'s ``note``) says it was brightened or
    smoothed for it, a dim or grainy photo, whose grain a JPEG may also have hidden from the noise
    reading: the noise-robust model usually keeps more of such photos' cracks (docs/exposure.md)."""
    from .model import DEFAULT_MODEL, NOISE_ROBUST_MODEL

    return (model_path is not None and Path(model_path).resolve() == DEFAULT_MODEL and NOISE_ROBUST_MODEL.is_file()
            and any(part.startswith((DIM_NOTE, GRAINY_NOTE)) for part in note.split("; ")))


def confidence(doubt: str, retake: bool) -> str:
    """``results.csv``'s ``confidence``: "low" when the model hedged (``doubt``, :func:`doubt`) or
    the photo cannot be trusted as taken (``retake``, :func:`view_note`), else "high"."""
    return "low" if doubt or retake else "high"


def low_confidence(row: dict) -> bool:
    """Whether a row of ``results.csv`` (or ``survey.csv``) is a mask to check by eye (its ``note`` says why)."""
    return not row.get("error") and str(row.get("confidence", "")) == "low"


def for_noise_robust(model_path, rows: Iterable[dict]) -> list[str]:
    """The names of the photos of ``results.csv`` rows to point to the bundled noise-robust model
    (:func:`noise_robust_would_help`)."""
    return [Path(r["file"]).name for r in rows
            if not r.get("error") and noise_robust_would_help(model_path, r.get("note") or "")]


def few(names: Sequence[str], most: int = 3) -> str:
    """``names`` for a one-line message: the first ``most``, then ", ..." when there are more."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def model_view(image: np.ndarray) -> np.ndarray:
    """The photo as the network sees it at its own size: its exposure (:func:`exposure_gain`),
    its noise (:func:`smoothing_radius`) and its focus (:func:`deblur_radius`); the photo itself
    when it is like the training photos. At another scale, :class:`_Photo` applies the focus rule."""
    return _viewed(image).at(1.0)


def _viewed(image: np.ndarray) -> "_Photo":
    """The photo with its exposure and noise rule applied, sharpened for its blur at whatever
    scale it is then seen at."""
    gain, _, radius, blur = view_settings(image)
    return _Photo(smoothed(exposed(image, gain), radius), blur)


def view_note(image: np.ndarray, scales: Sequence[float] = (1.0,)) -> tuple[str, bool]:
    """(what :func:`model_view` did to the photo seen at these scales (:func:`seen_scales`) and
    what cannot be trusted, whether the mask needs checking by eye); ('', False) for a photo like
    the training photos."""
    notes, retake = exposure_note(image)
    notes = [notes] if notes else []
    _, sigma, radius, blur = view_settings(image)
    if radius:
        notes.append(f"{GRAINY_NOTE} (noise {sigma:.0f}/255, the training photos' mostly below {NOISE_GATE:.0f}): "
                     f"smoothed (blur {radius:.2f} px) for the model")
    finest = blur * max(scales)
    if deblur_radius(finest):
        notes.append(f"out of focus (blur {blur:.1f} px, the training photos' at most {BLUR_GATE:g}; {finest:.1f} px "
                     f"as the model sees it): sharpened for the model (deblur {deblur_radius(finest):.1f} px)"
                     + ("; the finest cracks may still be missed, retake it in focus" if finest > BLUR_GATE else ""))
        retake = retake or finest > BLUR_RETAKE
    return "; ".join(notes), retake


# Focus. Fold 1/5's photos blurred by a Gaussian of 3 / 5 px cost a model that never saw them
# masonry F1 0.896 -> 0.866 / 0.797 (recall 0.81 / 0.69) and DeepCrack 0.862 -> 0.785 / 0.700.
# Deconvolving them by the blur they were given (Wiener) brought them back to 0.880 / 0.879 and
# 0.824 / 0.783; the same filter on the photos as taken cost masonry 0.13, so it runs only on a
# photo measured to be out of focus. The training photos' blur, read alike (blur_sigma): masonry
# at most 2.0 px, DeepCrack 99% at or below 2.9 (blurred close-ups up to 3.8). A gate at 2.5
# rescued more of the fold's photos blurred by 3 px, but it also sharpened 2 of DeepCrack's 60 val
# photos, blurred close-ups like 4 of its training photos, and cost that split 0.003 F1 (its one
# reading): the gate is above every training photo, as the exposure rule's range is. The network sees
# a photo at several scales (the automatic scale's coarse passes, then one or two), and a photo
# shrunk 4x has a quarter of its blur: so an out-of-focus photo (its own blur above BLUR_GATE) has
# each of its views sharpened by what its blur leaves at that scale (:class:`_Photo`; a 12 MP
# close-up seen small costs nothing), never the photo shown and written. Sharpening the photo
# once at its own size, before the scale is chosen, scored within 0.01 of this, at up to 4 s per
# soft 12 MP photo on a 2-core CPU (docs/exposure.md).
BLUR_GATE = 4.0  # px at the photo's own size: above every training photo (the blurriest, a DeepCrack close-up: 3.8)
BLUR_RETAKE = 5.0  # px as the network sees it: the mask is flagged for a check by eye (about half the loss is given back)
BLUR_LEFT_SHARP = 1.0  # px: the training photos' typical blur (median 0.6-1.1), not deconvolved
WIENER_K = 0.005  # the filter's noise-to-signal ratio: how far it may amplify what blur took away
_BLUR_PROBE = 3.0  # px: the known blur added to read the photo's own (blur_sigma)
_BLUR_QUIET = 2.0  # px: blur_sigma's first smoothing, which keeps sensor noise from posing as edges
_FOCUS_WINDOW = 192  # blur_sigma reads up to 3 x 3 windows of this side (a DeepCrack photo whole)


def _gaussian_filtered(gray: np.ndarray, sigma: float) -> np.ndarray:
    """A float image blurred by a Gaussian of ``sigma`` px (separable, mirrored edges): Pillow
    blurs only 8-bit images, whose rounding swamps the gentle slopes of an out-of-focus edge."""
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-x * x / (2 * sigma * sigma))
    k /= k.sum()
    padded = np.pad(gray, r, mode="symmetric")
    rows = sum(w * padded[:, i : i + gray.shape[1]] for i, w in enumerate(k))
    return sum(w * rows[i : i + gray.shape[0]] for i, w in enumerate(k))


def _slopes(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude (central differences) of the inside pixels."""
    return np.hypot(gray[2:, 1:-1] - gray[:-2, 1:-1], gray[1:-1, 2:] - gray[1:-1, :-2])


def blur_sigma(image: np.ndarray, gain: float = 1.0) -> float:
    """How out of focus a photo is: the standard deviation, in its own pixels, of the Gaussian
    blur its sharpest edges show; 0 for a photo with no edges to read.

    A step edge blurred by s has a steepest slope proportional to 1 / s; blurred once more by a
    known s0 (_BLUR_PROBE), 1 / sqrt(s^2 + s0^2). The ratio R of the two slopes at the photo's
    steepest 1% of pixels (the median over them) gives s = s0 / sqrt(R^2 - 1). Both are read
    after a first blur of q = _BLUR_QUIET (then subtracted: sqrt(s^2 - q^2)): without it, sensor
    noise of 3/255 on a photo blurred by 8 px made its steepest pixels noise, and it read 1.1.
    Read on up to 9 windows of 192 x 192 spread over the photo (about 25 ms for 12 MP). ``gain``:
    of the photo brightened by it first (its exposure, :func:`exposed`)."""
    h, w = image.shape[:2]
    side = _FOCUS_WINDOW
    ys = sorted({int(v) for v in np.linspace(0, max(0, h - side), 3)})
    xs = sorted({int(v) for v in np.linspace(0, max(0, w - side), 3)})
    steep, probed = [], []
    for y in ys:
        for x in xs:
            gray = exposed(image[y : y + side, x : x + side], gain).astype(np.float32) @ _LUMA
            if min(gray.shape) < 8:
                continue
            steep.append(_slopes(_gaussian_filtered(gray, _BLUR_QUIET)).ravel())
            probed.append(_slopes(_gaussian_filtered(gray, float(np.hypot(_BLUR_QUIET, _BLUR_PROBE)))).ravel())
    if not steep:
        return 0.0
    a, b = np.concatenate(steep), np.concatenate(probed)
    chosen = a >= max(float(np.percentile(a, 99)), 2.0)
    if chosen.sum() < 20:
        return 0.0
    ratio = float(np.median(a[chosen] / np.maximum(b[chosen], 1e-3)))
    read = _BLUR_PROBE / np.sqrt(max(ratio * ratio - 1.0, 1e-4))
    return float(np.sqrt(max(read * read - _BLUR_QUIET**2, 0.0)))


def focus_blur(sigma: float) -> float:
    """The blur an out-of-focus photo carries to every scale it is seen at: its own (``sigma``,
    :func:`blur_sigma`) when above BLUR_GATE, else 0 (nothing is sharpened at any scale)."""
    return sigma if sigma > BLUR_GATE else 0.0


def deblur_radius(sigma: float) -> float:
    """The Gaussian blur to undo in a view of an out-of-focus photo whose blur there is ``sigma``
    (px at that scale): what exceeds the training photos' own (BLUR_LEFT_SHARP), 0 within it."""
    if sigma <= BLUR_LEFT_SHARP:
        return 0.0
    return float(np.sqrt(sigma * sigma - BLUR_LEFT_SHARP**2))


def sharpened(image: np.ndarray, radius: float) -> np.ndarray:
    """The photo with a Gaussian blur of ``radius`` px undone (Wiener deconvolution, WIENER_K),
    mirrored at its edges so that nothing wraps around; itself at 0."""
    if radius <= 0:
        return image
    h, w = image.shape[:2]
    pad = 4 * int(np.ceil(radius)) + 4
    padded = np.pad(image.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    ph, pw = padded.shape[:2]
    fy, fx = np.fft.fftfreq(ph).astype(np.float32)[:, None], np.fft.rfftfreq(pw).astype(np.float32)[None, :]
    otf = np.exp(-2 * np.pi**2 * radius**2 * (fx * fx + fy * fy))
    gain = otf / (otf * otf + WIENER_K)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        channel = np.fft.irfft2(np.fft.rfft2(padded[..., c]) * gain, s=(ph, pw))[pad : pad + h, pad : pad + w]
        out[..., c] = np.clip(channel + 0.5, 0, 255)
    return out


def seen_scales(scale: float, asked: float | str) -> list[float]:
    """The scales a photo is seen at when ``scale`` was chosen for it: with the automatic scale,
    that one and twice it, when that is at most 1 (their maps blended, :func:`_blend_scales`)."""
    return [scale, 2 * scale] if asked == AUTO and scale < 1 else [scale]


def scale_ladder(shape: tuple) -> list[float]:
    """The scales :func:`choose_scale` considers for a photo of this shape, coarsest first:
    1, 1/2, 1/4 ... down to AUTO_MIN_SCALE, while the photo stays AUTO_MIN_SIDE across."""
    side, ladder = max(shape[:2]), [1.0]
    while ladder[-1] / 2 >= AUTO_MIN_SCALE and side * ladder[-1] / 2 >= AUTO_MIN_SIDE:
        ladder.append(ladder[-1] / 2)
    return ladder[::-1]


def crack_width(mask: np.ndarray) -> float:
    """The mean width of a mask's cracks in pixels, as 2 x area / perimeter (a long band of
    width w has area L w and perimeter about 2 L); NaN for an empty mask."""
    area = int(mask.sum())
    if not area:
        return float("nan")
    edges = int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
                + mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum())
    return 2.0 * area / edges


def choose_scale(probe: Callable[[float], np.ndarray], shape: tuple, threshold: float
                 ) -> tuple[float, np.ndarray | None]:
    """The automatic scale of a photo, and its map at that scale when the probe already made it.

    ``probe(scale)`` is the probability map of the photo as the model sees it at that scale.
    Maps are made from the coarsest scale of :func:`scale_ladder` up, until one has at least
    AUTO_MIN_FOUND of its pixels at or above ``threshold``; the width of those pixels'
    cracks, in the photo's own pixels, picks the largest scale of the ladder that makes them
    at most AUTO_MAX_WIDTH wide (the coarsest, if none does).
    """
    steps = _choosing(shape, threshold)
    scale = next(steps)
    while True:
        try:
            scale = steps.send(probe(scale))
        except StopIteration as done:
            return done.value


def _choosing(shape: tuple, threshold: float):
    """:func:`choose_scale` as a generator: yields the next scale to probe, is sent its map, and
    returns (the scale, its map or None). A folder's photos probe side by side this way, their
    coarse maps sharing forward passes."""
    ladder = scale_ladder(shape)
    for s in ladder:
        prob = yield s
        mask = prob >= threshold
        if mask.mean() >= AUTO_MIN_FOUND:
            width = crack_width(mask) / s
            pick = max([x for x in ladder if width * x <= AUTO_MAX_WIDTH], default=ladder[0])
            return pick, (prob if pick == s else None)
    return 1.0, prob  # nothing found: the ladder ends at 1, so the last map is the photo's own


def _ramp(tile: int, margin: int) -> np.ndarray:
    """1-D blending weights: 1 in the tile's centre, falling linearly to ~0 over the margin."""
    ramp = np.ones(tile, np.float32)
    if margin > 0:
        edge = (np.arange(margin, dtype=np.float32) + 0.5) / margin
        ramp[:margin] = edge
        ramp[-margin:] = edge[::-1]
    return ramp


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


# A photo (H, W, ...) and its mirror images, for test-time augmentation; each is its own inverse.
_FLIPS = (lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1])
# Pixels per forward pass when no batch size is named. On a CPU, four 256x256 tiles (or one
# 512x512): larger passes ran slower per pixel there (docs/benchmarks.md). On a GPU, 32
# tiles of 384x384: the best pass size measured on an H100 (issue #15), less on a GPU with
# less memory.
PASS_PIXELS = 4 * 256 * 256
GPU_PASS_PIXELS = 32 * 384 * 384
# The largest tile a large photo is cut into: larger tiles overlap less (the margin is set by
# the network's context, not by the tile), but on a CPU a pass past ~512x512 costs more per
# pixel (768: +8%, 1024: +35%, standard preset, 2 cores).
MAX_TILE = 1024


@functools.lru_cache(maxsize=1)
def accelerator() -> tuple[str, int | None]:
    """("gpu", bytes of its memory or None) when Keras's backend computes on a GPU, else ("cpu", None).
    Probed once per process (every predictor sizes its passes and threads by it)."""
    try:
        import keras

        name = keras.backend.backend()
        if name == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform == "gpu":
                stats = dev.memory_stats() or {}
                return "gpu", stats.get("bytes_limit")
        elif name == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                return "gpu", None
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                return "gpu", torch.cuda.get_device_properties(0).total_memory
    except Exception:  # a broken driver computes on the CPU
        pass
    return "cpu", None


def pass_pixels() -> int:
    """Pixels per forward pass for this machine: ``UNET_PASS_PIXELS`` when set; on a GPU
    :data:`GPU_PASS_PIXELS` (scaled down on a GPU with less than 80 GB); else :data:`PASS_PIXELS`."""
    chosen = os.environ.get("UNET_PASS_PIXELS")
    if chosen:
        try:
            value = int(chosen)
        except ValueError:
            raise ConfigError(f"UNET_PASS_PIXELS must be a whole number of pixels (got {chosen!r})") from None
        if value < 16 * 16:
            raise ConfigError(f"UNET_PASS_PIXELS must be at least 256 (got {value})")
        return value
    kind, memory = accelerator()
    if kind != "gpu":
        return PASS_PIXELS
    if memory:
        return int(max(PASS_PIXELS, min(GPU_PASS_PIXELS, GPU_PASS_PIXELS * memory / 80e9)))
    return GPU_PASS_PIXELS


class Predictor:
    """Runs one network over tiles in full passes, shared between photos.

    A :class:`~unet.DamageModel` owns one predictor and passes the per-call options
    (threshold, careful mode, scale) to it; build one yourself only to choose the tile,
    the pass size or the precision.

    Args:
        model: a :class:`~unet.DamageModel` (its card gives the threshold, the training
            size and the scale) or a bare Keras U-Net (threshold 0.5, scale 1).
        tile: tile side in pixels (a multiple of 16). Left out, it is the larger of the
            model's training size and 256, and the predictor sizes the work to the photo: a
            photo with no more pixels than a pass runs whole (padded to multiples of 16: no
            overlap, no blending), and a larger one is cut into the square tiles, from that
            tile up to the pass's side (at most :data:`MAX_TILE`), that cost the fewest
            pixels, all with the same margin. Named, every photo is cut into exactly that tile.
        margin: overlap margin; defaults to tile // 8 (of the smaller tile).
        batch_size: tiles per forward pass; defaults to as many as hold
            :func:`pass_pixels` (on a CPU, 4 at 256 and 1 at 384 and above; on a GPU, 32
            tiles of 384). A pass that is not full is padded only to the next power of
            two, so a single photo costs one tile's work.
        precision: ``float32``, or ``bfloat16`` for about twice the speed on CPUs with
            native bfloat16 (see docs/benchmarks.md for the accuracy cost).
        flips: the default for careful mode (test-time augmentation): ``True`` averages the
            maps of the photo and its three mirror images, each mapped back: four times
            the work, for a few thousandths of F1 (MODEL_CARD.md).
        scale: the default resize factor applied to each photo before the model sees it
            (the map is resized back); None takes the model card's. Below 1 the model sees
            more of the photo per tile, and a pass costs about ``scale**2`` as much.

    ``flips`` and ``scale`` can also be given per call to :meth:`probability`,
    :meth:`segment`, :meth:`segment_many` and :meth:`maps`.
    """

    def __init__(self, model, tile: int | None = None, margin: int | None = None, batch_size: int | None = None,
                 precision: str = "float32", flips: bool = False, scale: float | None = None):
        from .damage_model import DamageModel
        from .model import inference_copy

        owner = DamageModel.of(model)
        card = owner.card
        if precision not in ("float32", "bfloat16"):
            raise ConfigError("precision must be float32 or bfloat16")
        self.precision = precision
        # Batch norms folded into their convolutions: the same map, 1.15x (float32) to 1.5x
        # (bfloat16) faster a pass on a CPU (unet.model.inference_copy).
        self.model = inference_copy(owner.network, "mixed_bfloat16" if precision == "bfloat16" else "float32")
        self.default_threshold = float(card.threshold)
        self.tile = int(tile or max(256, card.input_size))
        if self.tile % 16:
            raise ConfigError(f"tile size {self.tile} is not a multiple of 16")
        self.margin = int(self.tile // 8 if margin is None else margin)
        self.pass_pixels = pass_pixels() if batch_size is None else int(batch_size) * self.tile**2
        self.batch_size = int(batch_size or max(1, self.pass_pixels // self.tile**2))
        # The larger tile for large photos (only when the tile was not named).
        side = min(MAX_TILE, int(self.pass_pixels**0.5) // 16 * 16)
        self.large_tile = side if tile is None and side > self.tile else self.tile
        self.flips = bool(flips)
        self.scale = check_scale(card.scale if scale is None else scale)
        # One model object serves every browser session of the app; Keras builds its
        # predict function lazily and is not guaranteed thread-safe, so calls take turns.
        self._lock = threading.Lock()
        self.map_threads = map_threads()
        self._pool = None

    def _options(self, flips: bool | None, scale: float | None) -> tuple[bool, float]:
        return (self.flips if flips is None else bool(flips)), (self.scale if scale is None else check_scale(scale))

    def passes_of(self, shape: tuple[int, int]) -> int:
        """Tiles per forward pass for tiles of this (height, width)."""
        return self.batch_size if shape == (self.tile, self.tile) else max(1, self.pass_pixels // (shape[0] * shape[1]))

    def runs_whole(self, h: int, w: int) -> bool:
        """Whether a photo of h x w (as the model sees it) goes through in one piece, padded to
        multiples of 16 (no overlap, no blending): when the predictor chose its own tiles and the
        photo has no more pixels than a pass (a DeepCrack photo, 544x384, on a CPU)."""
        return self.large_tile > self.tile and _up16(h) * _up16(w) <= self.pass_pixels

    def tile_for(self, h: int, w: int) -> int:
        """The tile side a photo of h x w pixels (as the model sees it) is cut into: of the sides
        from the tile to the large tile (multiples of 16; of 64 past 512, fewer compiled shapes),
        the one whose tiles cost the fewest pixels. A 4000x3000 photo costs 1.38x its own pixels
        in 512 tiles and 1.84x in 256 tiles (margin 32); a 1920x1080 one 1.45x in 448 tiles, 1.90x in 256."""
        if (h <= self.tile and w <= self.tile) or self.large_tile == self.tile:
            return self.tile

        def cost(t: int) -> tuple[int, int]:
            stride, ph, pw = t - 2 * self.margin, max(h + 2 * self.margin, t), max(w + 2 * self.margin, t)
            return len(_starts(ph, t, stride)) * len(_starts(pw, t, stride)) * t * t, t

        step = 16 if self.large_tile <= 512 else 64
        sides = sorted({self.tile, self.large_tile, *range(self.tile + step, self.large_tile, step)})
        return min(sides, key=cost)

    def forward(self, batch: np.ndarray, per_pass: int | None = None) -> np.ndarray:
        """Probabilities (N, H, W) for a uint8 batch (N, H, W, 3), in passes of ``per_pass``
        tiles (the predictor's batch size); a last, smaller pass is padded to the next power
        of two only (a handful of compiled shapes, and no full pass for one tile)."""
        size = per_pass or self.batch_size
        out = []
        for i in range(0, len(batch), size):
            chunk = batch[i : i + size]
            k = len(chunk)
            padded = min(size, 1 << (k - 1).bit_length())
            if k < padded:
                chunk = np.concatenate([chunk, np.zeros((padded - k,) + chunk.shape[1:], chunk.dtype)])
            with self._lock:
                probs = np.asarray(self.model.predict_on_batch(chunk), dtype=np.float32)[..., 0]
            out.append(probs[:k])
        return np.concatenate(out)

    def probability(self, image: np.ndarray, flips: bool | None = None, scale: float | None = None,
                    progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Damage probability (H, W) for an RGB uint8 photo of any size.

        With ``flips``, the mean of the maps of the photo and its mirror images, each mapped
        back: the same answer whichever way round the photo was taken. ``progress(fraction)``
        is called after each row of tiles (a page's progress bar; an exception it raises,
        such as a page's rerun, stops the work there).
        """
        return self.scaled_probability(image, flips, scale, progress)[0]

    def scaled_probability(self, image: np.ndarray, flips: bool | None = None, scale: float | str | None = None,
                           progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, float]:
        """:meth:`probability`, and the scale the model saw the photo at (its own with ``"auto"``)."""
        flips, scale = self._options(flips, scale)
        _check_rgb(image)
        return self._probability(image, flips, scale, progress)

    def choose(self, image: np.ndarray, flips: bool = False) -> tuple[float, np.ndarray | None]:
        """The automatic scale of a photo (:func:`choose_scale`), and its map as the model sees
        it at that scale when the coarse passes already made it."""
        return self._run_one(self._choose_rows(_viewed(image), _views(flips)))

    def _probability(self, image: np.ndarray, flips: bool, scale, progress=None) -> tuple[np.ndarray, float]:
        """(the photo's map, the scale the model saw it at)."""
        return self._run_one(self._photo_rows(image, _views(flips), scale, progress))

    def _run_one(self, work):
        """What one photo's tile generator returns, its tiles run in full passes of their own."""
        return next(iter(self._drive(iter([(None, [(_FLIPS[0], work)], _first)]), 1)))[0]

    def maps(self, images: Iterable[np.ndarray], flips: bool | None = None, scale: float | str | None = None,
             lookahead: int | None = None) -> Iterable[np.ndarray]:
        """The probability maps of a stream of photos, in order, one as soon as it is done.

        Tiles of several photos share forward passes: up to ``lookahead`` photos (default:
        enough to fill a pass, at least 2) are in flight at once, each holding only its
        current band of tiles. Each map equals :meth:`probability` of its photo.
        """
        for prob, _ in self.scaled_maps(images, flips, scale, lookahead):
            yield prob

    def scaled_maps(self, images: Iterable[np.ndarray], flips: bool | None = None, scale: float | str | None = None,
                    lookahead: int | None = None) -> Iterable[tuple[np.ndarray, float]]:
        """:meth:`maps`, each with the scale the model saw its photo at (chosen per photo with
        ``"auto"``; the coarse passes of several photos share forward passes, as their tiles do)."""
        flips, scale = self._options(flips, scale)
        window = lookahead or max(2, self.batch_size)

        def jobs():
            for image in images:
                _check_rgb(image)
                photo = self._photo_rows(image, _views(flips), scale)
                yield None, [(_FLIPS[0], photo)], _first

        for (prob, chosen), _ in self._drive(jobs(), window):
            yield prob, chosen

    def _photo_rows(self, image: np.ndarray, views, scale, progress: Callable[[float], None] | None = None):
        """One photo's whole work as a tile generator (:meth:`_rows`): with ``"auto"`` its coarse
        maps first, then its maps at the chosen scales; returns (its map, the scale it was seen
        at). Several photos' generators run side by side in :meth:`_drive`, so their tiles, the
        coarse passes' included, share forward passes. ``progress`` follows the last (largest) scale.
        The photo's exposure, noise and focus rules (:func:`model_view`) are applied here, in its first step."""
        photo = _viewed(image)
        if scale != AUTO:
            chosen, first = scale, None
        else:
            chosen, first = yield from self._choose_rows(photo, views)
        scales = seen_scales(chosen, scale)
        maps = [first] if first is not None else []
        for s in scales[len(maps):]:
            last = s == scales[-1]
            maps.append((yield from self._seen_rows(photo.at(s, last), views, progress if last else None)))
        if first is not None and len(scales) == 1 and progress is not None:
            progress(1.0)
        return _blend_scales(maps, *image.shape[:2]), chosen

    def _choose_rows(self, photo: "_Photo", views):
        """:func:`choose_scale` as a tile generator: returns (the scale, its map or None)."""
        steps = _choosing(photo.shape, self.default_threshold)
        probe = next(steps)
        while True:
            prob = yield from self._seen_rows(photo.at(probe), views)
            try:
                probe = steps.send(prob)
            except StopIteration as done:
                return done.value

    def _seen_rows(self, seen: np.ndarray, views, report: Callable[[float], None] | None = None):
        """The map of a photo as the model sees it (resized), as a tile generator: its mirror images'
        tiles side by side (they move together, so ``report`` follows the first), their maps
        flipped back and averaged."""
        maps = yield from _lockstep([self._rows(flip(seen), report if v == 0 else None) for v, flip in enumerate(views)])
        return _mean_of_views([flip(m) for flip, m in zip(views, maps)])

    def _drive(self, jobs, window: int):
        """Run photos' tile generators (:meth:`_rows`) with their tiles sharing passes.

        ``jobs`` yields (key, [(flip, generator), ...], combine) per photo; this yields
        (combine(the flipped-back maps), key) per photo, in order. Each pass takes the tiles of the oldest
        waiting photo and fills up with other photos' tiles of the same side.
        """
        source = iter(jobs)
        active: list[list] = []  # [key, views, [result per view], {view: (tile, tiles)}]
        exhausted = False
        while active or not exhausted:
            admitted: list[list] = []
            while not exhausted and len(active) + len(admitted) < window:
                try:
                    key, views, combine = next(source)
                except StopIteration:
                    exhausted = True
                    break
                admitted.append([key, views, [None] * len(views), {}, combine])
            # each new photo's first tiles (its exposure, its first resize), side by side
            self._advance([(e, v, None) for e in admitted for v in range(len(e[1]))])
            active += admitted
            while active and not active[0][3]:
                e = active.pop(0)
                yield e[4](e[2]), e[0]
            if not any(e[3] for e in active):
                continue
            waiting = [(e, v) for e in active for v in sorted(e[3])]
            shape = waiting[0][0][3][waiting[0][1]].shape[1:3]
            per_pass = self.passes_of(shape)
            chosen, count = [], 0
            for e, v in waiting:
                if e[3][v].shape[1:3] == shape and (count == 0 or count + len(e[3][v]) <= per_pass):
                    chosen.append((e, v))
                    count += len(e[3][v])
            probs = self.forward(np.concatenate([e[3][v] for e, v in chosen]), per_pass)
            ends = np.cumsum([len(e[3][v]) for e, v in chosen])
            self._advance([(e, v, probs[end - len(e[3][v]) : end]) for (e, v), end in zip(chosen, ends)])
            while active and not active[0][3]:
                e = active.pop(0)
                yield e[4](e[2]), e[0]

    def _advance(self, steps: list) -> None:
        """Send each (entry, view, probabilities) of :meth:`_drive` to its generator (None: its first
        tiles) and keep what comes back: its next tiles, or its map once it is done.

        Each step is a photo's own work (blending, thresholds, resizes, cutting its next tiles),
        independent of the others: with several, they run on :attr:`map_threads` threads (on a
        GPU the model waits on this work, and numpy and Pillow let threads run side by side). A
        photo's progress callback is only ever given with a single photo, so it stays on the
        calling thread (a page's progress bar)."""

        def step(item):
            e, v, value = item
            try:
                return True, e[1][v][1].send(value)
            except StopIteration as done:
                return False, done.value

        pool = self._map_pool() if len(steps) > 1 else None
        outcomes = pool.map(step, steps) if pool is not None else map(step, steps)
        for (e, v, _), (more, value) in zip(steps, outcomes):
            if more:
                e[3][v] = value
            else:  # its map (at the first step: a map made already, the automatic scale's probe)
                e[3].pop(v, None)
                e[2][v] = e[1][v][0](value)

    def _map_pool(self):
        """The threads of :meth:`_advance` (None when :attr:`map_threads` is 1), made once."""
        if self.map_threads <= 1:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.map_threads, thread_name_prefix="unet-maps")
            return self._pool

    def _rows(self, image: np.ndarray, report: Callable[[float], None] | None = None):
        """A generator: yields rows of tiles (N, th, tw, 3), as many rows as a pass holds (at
        least one), is sent their probabilities, and returns the photo's map.

        Tiles are cut straight from the photo with mirrored indices (no padded copy) and
        blended in a band one tile high that moves down the photo, so memory beyond the
        photo itself is the output map plus a band, whatever the photo's size.
        """
        h, w = image.shape[:2]
        if self.runs_whole(h, w):
            prob = (yield mirror_pad(image, _up16(h), _up16(w))[None])[0, :h, :w]
            if report is not None:
                report(1.0)
            return prob
        t, m = self.tile_for(h, w), self.margin
        if t == self.tile and h <= t and w <= t:  # one tile, run whole (a larger tile keeps its margin)
            prob = (yield _mirror_tile(image, 0, 0, t)[None])[0, :h, :w]
            if report is not None:
                report(1.0)
            return prob
        ramp = _ramp(t, m)
        window = np.outer(ramp, ramp)
        stride = t - 2 * m
        # Coordinates in a virtual photo mirrored by m on every side (context for the border
        # pixels) and extended at the bottom/right so the last row and column of tiles fit.
        ph, pw = max(h + 2 * m, t), max(w + 2 * m, t)
        ys, xs = _starts(ph, t, stride), _starts(pw, t, stride)
        # The window is a ramp times a ramp, so the weights' sum over all tiles is the sum of
        # the row ramps times the sum of the column ramps: two vectors (kept inverted), no weight band.
        wy, wx = np.zeros(ph, np.float32), np.zeros(pw, np.float32)
        for y0 in ys:
            wy[y0 : y0 + t] += ramp
        for x in xs:
            wx[x : x + t] += ramp
        wy, wx = 1 / np.maximum(wy, 1e-6), 1 / np.maximum(wx, 1e-6)
        out = np.empty((h, w), np.float32)
        acc = np.zeros((t, pw), np.float32)  # the band of rows [y0, y0 + t)
        weighted = np.empty((t, t), np.float32)
        # Rows of tiles go out together when a pass holds several (a GPU's pass holds 4 tiles of
        # 1024 where a 12 MP photo's row has 5: one row at a time was a pass of 4 and one of 1).
        together = max(1, self.passes_of((t, t)) // len(xs))
        for first in range(0, len(ys), together):
            group = ys[first : first + together]
            probs = yield np.stack([_mirror_tile(image, y0 - m, x - m, t) for y0 in group for x in xs])
            for row, y0 in enumerate(group, first):
                for x, p in zip(xs, probs[(row - first) * len(xs) : (row - first + 1) * len(xs)]):
                    acc[:, x : x + t] += np.multiply(p, window, out=weighted)
                done = (ys[row + 1] - y0) if row + 1 < len(ys) else t  # rows no later tile touches
                _emit(out, acc[:done], wy, wx, y0, m, h, w)
                acc[: t - done] = acc[done:]  # move the band down, in place
                acc[t - done :] = 0
                if report is not None:
                    report((row + 1) / len(ys))
        return out

    def segment(self, image: np.ndarray, threshold: float | None = None, flips: bool | None = None,
                scale: float | None = None) -> Segmentation:
        t = self.default_threshold if threshold is None else float(threshold)
        prob, seen_scale = self.scaled_probability(image, flips, scale)
        return Segmentation.from_probability(prob, t, seen_scale)

    def segment_many(self, images: Sequence[np.ndarray], threshold: float | None = None,
                     flips: bool | None = None, scale: float | None = None) -> list[Segmentation]:
        """Segment many photos, their tiles sharing full passes (each equals :meth:`segment`)."""
        t = self.default_threshold if threshold is None else float(threshold)
        return [Segmentation.from_probability(p, t, s) for p, s in self.scaled_maps(images, flips, scale)]


def _up16(n: int) -> int:
    return -(-n // 16) * 16


def _views(flips: bool) -> tuple:
    """The mirror images a map is averaged over: the photo alone, or with its three flips."""
    return _FLIPS if flips else _FLIPS[:1]


def _first(done: list):
    """The result of a job of one generator (:meth:`Predictor._drive`)."""
    return done[0]


def _lockstep(gens: list):
    """Tile generators of the same shape of photo (its mirror images) as one: each row of tiles
    is theirs together, and it returns their maps. Mirror images have the same tiles, so they
    end together."""
    rows = [next(g) for g in gens]
    while True:
        probs = yield np.concatenate(rows) if len(rows) > 1 else rows[0]
        maps, at = [], 0
        for i, g in enumerate(gens):
            n = len(rows[i])
            try:
                rows[i] = g.send(probs[at : at + n])
            except StopIteration as done:
                maps.append(done.value)
            at += n
        if maps:
            return maps


def _mean_of_views(maps: list[np.ndarray]) -> np.ndarray:
    return maps[0] if len(maps) == 1 else sum(maps) / len(maps)


def _blend_scales(maps: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """One map at the photo's size from its maps at the automatic scale and at twice it: their
    geometric mean, so a pixel is damage only where both scales agree (the finer one's speckle
    on enlarged texture and the coarser one's blur of hairlines both fall away). Chosen on the
    held-out fold and generated walls: 0.010 F1 at worst between 1x, 2x and 4x, against 0.017
    for the automatic scale alone and 0.44 for the photo's own (docs/auto-scale.md).

    The mean is taken at the finer map's size and then enlarged once: a 12 MP photo seen at
    1/8 was two enlargements to 12 MP and a product and root of 12 million pixels (0.45 s
    here), now one enlargement (0.17 s). Masks of enlarged generated walls agree with the
    mean taken at full size on 99.94-99.997% of their pixels (F1 -0.004 to +0.003)."""
    if len(maps) == 1:
        return _restored(maps[0], h, w)
    coarse, fine = maps
    return _restored(np.sqrt(_restored(coarse, *fine.shape) * fine), h, w)


class _Photo:
    """A photo (H, W, 3) as the model sees it at any scale: resized by Pillow (bilinear,
    antialiased when shrinking) from one Pillow copy of it, made at the first resize (the
    automatic scale resizes a photo three times or more; each copy of a 12 MP photo was 45 ms),
    then, for an out-of-focus photo (``blur``: px at its own size, :func:`focus_blur`), sharpened
    by what that blur leaves at that scale beyond the training photos' own."""

    def __init__(self, image: np.ndarray, blur: float = 0.0):
        self.image, self.shape, self.blur, self._pil = image, image.shape, blur, None

    def at(self, scale: float, last: bool = False) -> np.ndarray:
        """The photo resized by ``scale``, sharpened for its blur there (:func:`deblur_radius`);
        with ``last``, the Pillow copy is let go after it (not held through the passes of the
        photo's last scale)."""
        return sharpened(self._resized(scale, last), deblur_radius(self.blur * scale))

    def _resized(self, scale: float, last: bool) -> np.ndarray:
        if scale == 1.0:
            seen = self.image
        else:
            from PIL import Image

            if self._pil is None:
                self._pil = Image.fromarray(self.image)
            h, w = self.shape[:2]
            seen = np.asarray(self._pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
        if last:
            self._pil = None
        return seen


def _restored(prob: np.ndarray, h: int, w: int) -> np.ndarray:
    """A map back at the photo's own size (bilinear)."""
    if prob.shape == (h, w):
        return prob
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(prob, np.float32), "F").resize((w, h), Image.BILINEAR))


def _check_rgb(image: np.ndarray) -> bool:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return True


def _mirror_index(start: int, size: int, n: int) -> np.ndarray:
    """Indices start..start+size-1 folded into 0..n-1 by mirroring (edge pixel repeated)."""
    i = np.arange(start, start + size) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def _mirror_tile(image: np.ndarray, y: int, x: int, t: int) -> np.ndarray:
    """The t x t window at (y, x) of the photo extended by mirroring on every side."""
    h, w = image.shape[:2]
    if 0 <= y and y + t <= h and 0 <= x and x + t <= w:
        return image[y : y + t, x : x + t]
    y0, y1, x0, x1 = max(y, 0), min(y + t, h), max(x, 0), min(x + t, w)
    pads = ((y0 - y, y + t - y1), (x0 - x, x + t - x1))
    if all(0 < b - a and max(p) <= b - a for (a, b), p in zip(((y0, y1), (x0, x1)), pads)):
        # The part inside the photo, mirrored at the photo's edges: a slice and a pad, 20-40x
        # faster than gathering with index arrays (a border tile of a 12 MP photo).
        return np.pad(image[y0:y1, x0:x1], pads + ((0, 0),) * (image.ndim - 2), mode="symmetric")
    return image[np.ix_(_mirror_index(y, t, h), _mirror_index(x, t, w))]  # mirrored more than once


def _emit(out, acc, iy, ix, y0, m, h, w) -> None:
    """Write finished band rows (virtual rows y0.., shifted by the margin) into the output,
    divided by the blending weights there (times ``iy`` per row and ``ix`` per column, the
    inverses of the row and column weights)."""
    top, bottom = max(y0 - m, 0), min(y0 - m + len(acc), h)
    if bottom <= top:
        return
    a = acc[top - (y0 - m) : bottom - (y0 - m), m : m + w]
    part = out[top:bottom]
    np.multiply(a, iy[top + m : bottom + m, None], out=part)
    part *= ix[m : m + w]


def named_precision() -> str | None:
    """The inference precision ``UNET_PRECISION`` names (float32 or bfloat16), or None for ``auto``."""
    chosen = os.environ.get("UNET_PRECISION", "auto")
    return None if chosen == "auto" else chosen


def default_precision() -> str:
    """The inference precision: ``UNET_PRECISION`` (float32 or bfloat16) when set; otherwise
    bfloat16 on a CPU-only machine whose CPU has native bfloat16 (measured 1.9x faster,
    validation F1 within 0.001 of float32: docs/benchmarks.md), else float32."""
    chosen = named_precision()
    if chosen:
        return chosen
    from .devices import detect_hardware
    from .model import cpu_has_bf16

    on_cpu = not any(d["kind"] == "GPU" for d in detect_hardware())
    return "bfloat16" if on_cpu and cpu_has_bf16() else "float32"


def segment(model, image: np.ndarray, threshold: float | None = None, flips: bool = False,
            scale: float | None = None) -> Segmentation:
    """Find the damaged pixels of one photo.

    Args:
        model: a :class:`~unet.DamageModel` (from :func:`unet.load_model`), or a bare
            Keras U-Net (run as it is, in float32).
        image: RGB uint8 array (H, W, 3) of any size.
        threshold: probability at which a pixel counts as damaged; None uses the
            model's own threshold (from its model card), else 0.5.
        flips: average over the photo's mirror images too (4x the time; see
            :class:`Predictor`).
        scale: resize the photo by this before the model sees it (the mask still comes
            back at the photo's size); None uses the model's own (its card's, else 1).

    Returns:
        A :class:`Segmentation` at the photo's own resolution.

    Example:
        >>> seg = segment(load_model(), read_image("wall.jpg"))
        >>> f"{seg.damaged_pct:.1f}% damaged"
    """
    from .damage_model import DamageModel

    return DamageModel.of(model).segment(image, threshold, flips=flips, scale=scale)


# ---------------------------------------------------------------------------------
# Pictures for people
# ---------------------------------------------------------------------------------


def overlay(image: np.ndarray, mask: np.ndarray, color=OVERLAY_COLOR, alpha: float = 0.55) -> np.ndarray:
    """The photo with damaged pixels tinted (uint8 RGB): ``(1 - alpha) * pixel + alpha * color``.

    Only the damaged pixels are touched, each channel through a table of its 256 tints (a
    12 MP photo with 5% damaged: 72 ms, where a float copy of the whole photo took 320 ms).
    """
    table = ((1 - alpha) * np.arange(256, dtype=np.float32)
             + alpha * np.asarray(color, np.float32)[:, None]).astype(np.uint8)  # (channel, value)
    out = image.copy()
    pixels = out.reshape(-1, 3)
    damaged = np.flatnonzero(mask)
    pixels[damaged] = table[np.arange(3), pixels[damaged]]
    return out


# A perceptually ordered dark-blue -> yellow ramp (anchor colours of a viridis-like map).
_HEAT = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)


def heatmap(probability: np.ndarray) -> np.ndarray:
    """Probability map as a uint8 RGB picture (dark = intact, yellow = damaged)."""
    x = np.clip(probability, 0, 1) * (len(_HEAT) - 1)
    i = np.minimum(x.astype(int), len(_HEAT) - 2)
    f = (x - i)[..., None]
    return ((1 - f) * _HEAT[i] + f * _HEAT[i + 1]).astype(np.uint8)


# ---------------------------------------------------------------------------------
# Batch prediction
# ---------------------------------------------------------------------------------


OUTPUT_SUFFIXES = ("_mask", "_overlay", "_cracks")
# Names datasets give their masks (see unet.data): never photos to segment.
_MASK_TAGS = ("_mask", "_lab", "_label", "_gt")
# The first three as before; scale: the resize the model saw the photo at; confidence: "low"
# when the mask should be checked by eye (the note says why: :func:`doubt`).
RESULT_FIELDS = ["file", "damaged_pct", "error", "mask", "overlay", "note", "scale", "confidence"]

# The bundled model learned from photos 224-544 px across (models/MODEL_CARD.md). The same
# wall enlarged 4x lost most of its cracks: a DeepCrack photo enlarged to 4000x3000 scored
# F1 0.23 as it is and 0.77 at scale 0.25 (issue #14). Past 3x that size, say so.
TRAINED_SIDE = 544
HINT_FACTOR = 3


def scale_hint(shape: tuple, scale: float) -> str:
    """A warning for a photo the model sees much larger than the photos it learned from, with the
    scale to try; '' when it is within :data:`HINT_FACTOR` times their size."""
    seen = max(shape[:2]) * scale
    if seen <= HINT_FACTOR * TRAINED_SIDE:
        return ""
    target = 2 * TRAINED_SIDE / max(shape[:2])  # about twice the training photos' size
    suggest = min((0.5, 0.25, 0.125), key=lambda s: abs(s - target))
    return (f"the model sees this photo {seen:,.0f} px across, {seen / TRAINED_SIDE:.0f}x the photos it learned "
            f"from: wide cracks may be missed or drawn thin; if the mask looks wrong, try scale {suggest:g}")
OUTPUT_COLUMNS = ("mask", "overlay", "cracks_csv", "cracks_png")  # columns that name a file we wrote


def result_fields(measure: bool = False, mm_per_px: float | None = None) -> list[str]:
    """The columns of ``results.csv``: with ``measure``, the per-photo crack measurements too."""
    if not measure:
        return list(RESULT_FIELDS)
    from .cracks import SUMMARY_FIELDS, SUMMARY_FIELDS_MM

    return RESULT_FIELDS + (SUMMARY_FIELDS_MM if mm_per_px is not None else SUMMARY_FIELDS) + ["cracks_csv",
                                                                                                "cracks_png"]


def _is_mask_or_output(path: Path) -> bool:
    """A dataset mask (in a ``masks/`` folder, or named ``*_mask``/``*_lab``) or one of our outputs."""
    stem = path.stem.lower()
    return path.parent.name.lower() in ("masks", "mask") or stem.endswith(_MASK_TAGS + OUTPUT_SUFFIXES)


def collect_images(inputs: Iterable[str | Path], skip: Iterable[str | Path] = ()) -> list[tuple[Path, str]]:
    """The photos to segment, each with an unambiguous output name.

    Files named directly are taken as they are; inside named folders, images are found
    recursively, skipping dataset masks, this tool's own outputs and anything under a
    ``skip`` folder (an output folder inside the input folder). The output name is the path relative to its named
    folder with ``/`` turned into ``__`` (``d2/x.png`` -> ``d2__x``); where two photos would
    still share a name (``x.png`` beside ``x.jpg``) the extension is added (``x.jpg`` ->
    ``x_jpg``), and then a counter after ``~``.
    """
    skip_dirs = [Path(p).resolve() for p in skip]
    found: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            root = p.resolve()
            for f in sorted(p.rglob("*")):
                if not (f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()) or _is_mask_or_output(f):
                    continue
                if any(d != root and f.resolve().is_relative_to(d) for d in skip_dirs):
                    continue  # an output folder inside the input folder (its own outputs are filtered by name)
                rel = f.resolve().relative_to(root) if f.resolve().is_relative_to(root) else Path(f.name)
                found.append((f, "__".join(rel.with_suffix("").parts)))
        else:
            found.append((p, p.stem))
    used: set[str] = set()
    named = []
    for path, base in found:
        name = base
        if name in used:
            name = f"{base}_{path.suffix.lstrip('.').lower()}"
        n = 2
        while name in used:
            name, n = f"{base}~{n}", n + 1
        used.add(name)
        named.append((path, name))
    return named


def output_folder(out_dir: str | Path) -> Path:
    """The output folder, made if needed; a clear :class:`UnetError` when it cannot be used."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UnetError(f"{out}: the output folder is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnetError(f"{out}: the output folder cannot be made ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UnetError(f"{out}: the output folder cannot be written (permission denied or read-only)")
    return out


def map_threads() -> int:
    """Threads for the photos' own work between the model's passes (:meth:`Predictor._advance`:
    exposure, resizes, blending, thresholds, cutting tiles): on a GPU half the cores, at most 8,
    since the model there waits on this work (an H200 ran 1,376 DeepCrack photos/s through
    the network, the folder 71); on a CPU one, as the network's passes take every core.
    ``UNET_MAP_THREADS`` overrides."""
    from .config import count_setting

    gpu = accelerator()[0] == "gpu"
    return count_setting("UNET_MAP_THREADS", max(1, min(8, (os.cpu_count() or 1) // 2)) if gpu else 1)


def writer_threads() -> int:
    """Threads rendering and writing a folder's outputs (overlay, PNG encoding): half the cores,
    at most 8 (one on this 2-core CPU, where the model needs the other). On a GPU machine the
    model outruns one writer many times over: an H200 ran the bundled model at about 1,300
    DeepCrack photos/s (docs/benchmarks.md). ``UNET_WRITE_THREADS`` overrides."""
    from .config import count_setting

    return count_setting("UNET_WRITE_THREADS", max(1, min(8, (os.cpu_count() or 1) // 2)))


def predict_files(
    model,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    threshold: float | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    flips: bool = False,
    scale: float | None = None,
    measure: bool = False,
    mm_per_px: float | None = None,
    on_result: Callable | None = None,
) -> list[dict]:
    """Segment files and folders; write ``<name>_mask.png``, ``<name>_overlay.png`` and ``results.csv``.

    With ``measure``, each photo's cracks are measured (:func:`unet.measure`): the
    per-photo numbers become columns of ``results.csv``, each crack a row of
    ``<name>_cracks.csv``, and ``<name>_cracks.png`` shows the centre lines coloured by
    width. ``mm_per_px`` (the photos' scale) adds millimetres and a grade.
    ``on_result(path, image, segmentation, measurement_or_None)`` is called after each photo.

    Nothing is lost:

    - a photo that cannot be read (corrupt, unreadable, vanished) gets its error in its
      row; the others still run;
    - ``results.csv`` has a row per input and exists after every run: it is rewritten as
      the work goes (every 5 s), and on an interruption (Ctrl-C) or a failure to write
      (full disk) the photos not done are listed as "not processed";
    - an output never replaces an input: the output folder, dataset masks and earlier
      outputs are not taken as photos, and a name that would land on an input is refused.

    Returns:
        One row per input file: ``file, damaged_pct, error, mask, overlay`` (and the
        measurement columns with ``measure``).

    Raises:
        UnetError: the output folder cannot be made or written (nothing is processed), or
            the disk filled up (after ``results.csv`` records how far it got).
        ConfigError: ``mm_per_px`` is not a positive number.
    """
    from .damage_model import DamageModel

    job = PhotoJob(inputs, out_dir, measure=measure, mm_per_px=mm_per_px)
    dm = DamageModel.of(model)
    predictor = dm.predictor
    cut = predictor.default_threshold if threshold is None else float(threshold)
    scale_setting = dm.card.scale if scale is None else check_scale(scale)
    depth = max(2, predictor.batch_size) + 2
    ready: dict[int, object] = {}  # index -> error text, or (future, image, seg): decoded, not yet final

    def write(i: int, image: np.ndarray, seg: Segmentation):
        """Write one photo's outputs; runs on the writing thread. Returns (row changes, measurement)."""
        outputs, changes, found = job.render(i, image, seg, scale_setting)
        job.write(outputs)
        return changes, found

    def finished():
        """Each photo's index, in order, once its row is final. Three stages overlap: photos are
        decoded ahead on threads, the model runs here (tiles of several photos sharing passes),
        and the outputs are written on a thread of their own."""
        fed: deque = deque()  # (index, photo) handed to the model, in order
        next_i = 0

        def photos():
            for i, (image, error) in enumerate(_prefetched(decoder, job.read, range(len(job.files)), depth)):
                if image is None:
                    ready[i] = error
                    continue
                fed.append((i, image))
                yield image

        def settle(wait_for: int | None):
            """Yield the indices whose rows can now be final, in order."""
            nonlocal next_i
            while next_i in ready:
                item = ready[next_i]
                if not isinstance(item, str):
                    future, image, seg = item
                    if not future.done() and next_i != wait_for and len(ready) <= depth:
                        return
                    changes, found = future.result()  # a failed write (full disk) raises here
                    job.rows[next_i].update(changes)
                    if on_result is not None:
                        on_result(job.files[next_i][0], image, seg, found)
                else:
                    job.rows[next_i]["error"] = item
                del ready[next_i]
                next_i += 1
                yield next_i - 1

        for prob, seen_scale in predictor.scaled_maps(photos(), flips, scale, lookahead=depth - 2):
            i, image = fed.popleft()
            seg = Segmentation.from_probability(prob, cut, seen_scale)
            ready[i] = (writer.submit(write, i, image, seg), image, seg)
            yield from settle(None)
        while next_i < len(job.files):
            yield from settle(next_i)
            if next_i < len(job.files) and next_i not in ready:  # nothing left to wait for
                break

    def settle_written() -> None:
        """After an interruption: let the outputs being written finish, drop those not started, and
        record every photo whose outputs are whole (a file on disk is always listed in results.csv)."""
        writer.shutdown(wait=True, cancel_futures=True)
        for i, item in ready.items():
            if isinstance(item, tuple) and item[0].done() and not item[0].cancelled() and item[0].exception() is None:
                job.rows[i].update(item[0].result()[0])

    decoder = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="unet-decode")
    writer = ThreadPoolExecutor(max_workers=writer_threads(), thread_name_prefix="unet-write")
    try:
        job.run(_Counted(finished(), len(job.files)), progress, on_stop=settle_written)
    finally:
        decoder.shutdown(wait=False, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)  # no output is left half-written
    return job.rows


class PhotoJob:
    """One batch of photos to segment into an output folder: the photos and their output
    names, the rows of ``results.csv``, and what every way of running it shares (this
    process's pipeline, :func:`predict_files`, or a Ray cluster, :func:`unet.cluster.predict_files_ray`):
    reading a photo, rendering its outputs to bytes, writing them, and keeping ``results.csv``
    whole through an interruption or a full disk.

    Raises:
        UnetError: the output folder cannot be made or written.
        ConfigError: ``mm_per_px`` is not a positive number.
    """

    def __init__(self, inputs: Sequence[str | Path], out_dir: str | Path, measure: bool = False,
                 mm_per_px: float | None = None):
        from .cracks import check_mm_per_px

        self.measure, self.mm_per_px = measure, check_mm_per_px(mm_per_px)
        self.fields = result_fields(measure, self.mm_per_px)
        self.out = output_folder(out_dir)
        self.files = collect_images(inputs, skip=[self.out])
        self.inputs_resolved = {p.resolve() for p, _ in self.files}
        self.csv_path = self.out / "results.csv"
        self.earlier = _earlier_outputs(self.csv_path)  # files an earlier run wrote here may be written again
        self.rows = [{**dict.fromkeys(self.fields, ""), "file": str(p), "error": "not processed"}
                     for p, _ in self.files]
        self.flush()

    def flush(self) -> None:
        from .files import write_csv_atomic

        write_csv_atomic(self.csv_path, self.rows, self.fields)

    def targets(self, name: str) -> dict[str, Path]:
        targets = {"mask": self.out / f"{name}_mask.png", "overlay": self.out / f"{name}_overlay.png"}
        if self.measure:
            targets.update(cracks_csv=self.out / f"{name}_cracks.csv", cracks_png=self.out / f"{name}_cracks.png")
        return targets

    def clash(self, i: int) -> str:
        """Why photo ``i`` must not be processed ('' when it may): an output would replace a file
        this tool did not write."""
        clash = [t for t in self.targets(self.files[i][1]).values()
                 if t.resolve() in self.inputs_resolved or (t.exists() and t.name not in self.earlier)]
        if clash:
            return (f"not processed: its output {clash[0].name} would replace a file this tool did not "
                    "write (an input, or a dataset's mask); choose another --out")
        return ""

    def read(self, i: int) -> tuple[np.ndarray | None, str]:
        """(photo ``i``, '') or (None, why it is not processed)."""
        return read_photo(self.files[i][0], self.clash(i))

    def render(self, i: int, image: np.ndarray, seg: Segmentation, scale_setting: float | str):
        """Photo ``i``'s outputs as ({column: (file name, bytes)}, row changes, measurement or None)."""
        return render_outputs(self.files[i][1], image, seg, scale_setting, self.measure, self.mm_per_px)

    def write(self, outputs: dict) -> None:
        from .files import write_bytes_atomic

        for filename, data in outputs.values():
            write_bytes_atomic(self.out / filename, data)

    def run(self, done: Iterable, progress: Callable | None = None, on_stop: Callable[[], None] = lambda: None):
        """Iterate ``done`` (it yields as photos finish, having updated their rows) under the
        progress wrapper; ``results.csv`` is rewritten every 5 s and at the end, and on an
        interruption (Ctrl-C) or a failed write (full disk) the photos not done are listed as
        "not processed" (``on_stop`` first records any finished meanwhile)."""
        last = time.monotonic()
        try:
            for _ in progress(done) if progress else done:
                if time.monotonic() - last > 5:
                    self.flush()
                    last = time.monotonic()
        except KeyboardInterrupt:
            on_stop()
            _mark_left(self.rows, "not processed (interrupted)")
            self.flush()
            raise
        except OSError as exc:  # writing an output failed: full disk, folder gone or made read-only
            on_stop()
            _mark_left(self.rows, f"not processed (writing the results failed: {exc.strerror})")
            try:
                self.flush()
            except OSError:
                pass
            raise UnetError(f"{self.out}: cannot write the results ({exc.strerror}); results.csv lists what was done"
                            if self.csv_path.is_file() else f"{self.out}: cannot write the results ({exc.strerror})"
                            ) from None
        self.flush()


def read_photo(path: Path, clash: str = "") -> tuple[np.ndarray | None, str]:
    """(the photo, '') or (None, the one line that says why it cannot be processed)."""
    if clash:
        return None, clash
    try:
        return read_image(path), ""
    except ImageError as exc:
        return None, exc.problem
    except OSError as exc:  # unreadable (permissions), vanished mid-run, I/O error
        return None, f"cannot be read ({exc.strerror or exc})"


def render_outputs(name: str, image: np.ndarray, seg: Segmentation, scale_setting: float | str, measure: bool = False,
                   mm_per_px: float | None = None):
    """A photo's output files as bytes, ({column: (file name, bytes)}, row changes, measurement
    or None): the same bytes wherever they are made. ``scale_setting`` is the scale asked for
    (``"auto"`` or a number); ``seg.scale`` the one the model saw the photo at."""
    from .cracks import measure as measure_mask
    from .cracks import width_picture
    from .files import csv_text
    from .imaging import encode_png

    outputs = {"mask": (f"{name}_mask.png", encode_png(seg.mask)),
               "overlay": (f"{name}_overlay.png", encode_png(overlay(image, seg.mask)))}
    found, changes = None, {}
    if measure:
        found = measure_mask(seg.mask, mm_per_px)
        outputs["cracks_csv"] = (f"{name}_cracks.csv", csv_text(found.rows(), found.fields).encode())
        outputs["cracks_png"] = (f"{name}_cracks.png", encode_png(width_picture(image, found)))
        changes.update(found.summary())
    unsure = seg.doubt
    seen_as, retake = view_note(image, seen_scales(seg.scale, scale_setting))
    hint = "" if scale_setting == AUTO else scale_hint(image.shape, seg.scale)
    changes.update({k: filename for k, (filename, _) in outputs.items()}, damaged_pct=round(seg.damaged_pct, 4),
                   error="", note="; ".join(n for n in (seen_as, unsure, hint) if n), scale=f"{seg.scale:g}",
                   confidence=confidence(unsure, retake))
    return outputs, changes, found


class _Counted:
    """An iterable that knows its length before it runs (for progress bars)."""

    def __init__(self, items: Iterable, n: int):
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.items)


def _prefetched(pool, fn: Callable, items: Iterable, depth: int):
    """``fn(item)`` for each item, in order, computed up to ``depth`` items ahead on ``pool``."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _earlier_outputs(csv_path: Path) -> set[str]:
    """The output files an earlier ``results.csv`` in this folder lists (ours to replace)."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            return {row[k] for row in csv.DictReader(f) for k in OUTPUT_COLUMNS if row.get(k)}
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()


def _mark_left(rows: list[dict], why: str) -> None:
    for row in rows:
        if row["error"] == "not processed":
            row["error"] = why

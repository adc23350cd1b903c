"""Segmenting photos of any size with the overlap-tile strategy.

A photo that fits in one tile is mirror-padded to the tile and predicted in one pass.
A larger photo is mirror-padded by a margin on every side and cut into overlapping
tiles; each tile's prediction is weighted by a window that falls towards its edges
(where the network sees the least context) and the weighted tiles are summed and
normalised. The result has the photo's own resolution; nothing is ever squashed to
the model's input size, so hairline cracks survive. A model may carry a ``scale`` in its card
(chosen on validation photos with ``python -m unet calibrate --scales``): photos are then
resized by that factor before the tiles are cut, and the map is resized back to the
photo's own size.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .imaging import IMAGE_EXTENSIONS, ImageError, read_image, save_png
from .model import check_scale

DEFAULT_THRESHOLD = 0.5
OVERLAY_COLOR = (255, 32, 32)


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

    def at(self, threshold: float) -> "Segmentation":
        """The same probabilities at another threshold (no model call)."""
        mask = self.probability >= threshold
        return replace(self, mask=mask, damaged_pct=100.0 * float(mask.mean()), threshold=float(threshold))


def _window(tile: int, margin: int) -> np.ndarray:
    """2-D blending weights: 1 in the tile's centre, falling linearly to ~0 over the margin."""
    ramp = np.ones(tile, np.float32)
    if margin > 0:
        edge = (np.arange(margin, dtype=np.float32) + 0.5) / margin
        ramp[:margin] = edge
        ramp[-margin:] = edge[::-1]
    return np.outer(ramp, ramp)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


# A photo (H, W, ...) and its mirror images, for test-time augmentation; each is its own inverse.
_FLIPS = (lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1])
PASS_PIXELS = 4 * 256 * 256  # pixels per forward pass when no batch size is named


class Predictor:
    """Runs one model over tiles in fixed-shape batches (one compiled graph).

    Args:
        model: a U-Net from :func:`unet.build_unet` or :func:`unet.load_model`.
        tile: tile side in pixels (a multiple of 16); defaults to the larger of the
            model's training size and 256.
        margin: overlap margin; defaults to tile // 8.
        batch_size: tiles per forward pass; defaults to as many as hold about four
            256x256 tiles' pixels (4 at 256, 1 at 384 and above). Larger passes run slower
            per pixel on a CPU: a 1 MP photo in 384 tiles took 2.13 s in passes of 4 and
            1.42 s in passes of 1 (bfloat16, 2 cores; docs/benchmarks.md).
        precision: ``float32``, or ``bfloat16`` for about twice the speed on CPUs with
            native bfloat16 (see docs/benchmarks.md for the accuracy cost).
        flips: test-time augmentation ("careful mode"). ``True`` averages the maps of the
            photo and its three mirror images (left-right, up-down, both), each mapped
            back: four times the work, for a few thousandths of F1 (MODEL_CARD.md).
        scale: resize factor applied to each photo before the model sees it (the map is
            resized back); defaults to the model's own (its card's ``scale``, else 1).
            Below 1 the model sees more of the photo per tile, and a pass costs about
            ``scale**2`` as much.
    """

    def __init__(self, model, tile: int | None = None, margin: int | None = None, batch_size: int | None = None,
                 precision: str = "float32", flips: bool = False, scale: float | None = None):
        from .model import model_info, with_precision

        info = model_info(model)
        if precision not in ("float32", "bfloat16"):
            raise ValueError("precision must be float32 or bfloat16")
        self.precision = precision
        self.model = with_precision(model, "mixed_bfloat16") if precision == "bfloat16" else model
        self.default_threshold = float(info.threshold)
        self.tile = int(tile or max(256, info.input_size))
        if self.tile % 16:
            raise ValueError(f"tile size {self.tile} is not a multiple of 16")
        self.margin = int(self.tile // 8 if margin is None else margin)
        self.batch_size = int(batch_size or max(1, PASS_PIXELS // self.tile**2))
        self.window = _window(self.tile, self.margin)
        self.flips = bool(flips)
        self.scale = check_scale(info.scale if scale is None else scale)
        self._careful: Predictor | None = None
        # One model object serves every browser session of the app; Keras builds its
        # predict function lazily and is not guaranteed thread-safe, so calls take turns.
        self._lock = threading.Lock()

    def careful(self) -> "Predictor":
        """This predictor in careful mode (``flips``), sharing its model copy, compiled graph
        and lock: switching modes neither rebuilds the model nor runs two calls at once."""
        if self.flips:
            return self
        if self._careful is None:
            self._careful = copy.copy(self)
            self._careful.flips = True
        return self._careful

    def at_scale(self, scale: float | None) -> "Predictor":
        """This predictor seeing photos at another scale (None: unchanged), sharing its model
        copy, compiled graph and lock."""
        scale = self.scale if scale is None else check_scale(scale)
        if scale == self.scale:
            return self
        other = copy.copy(self)
        other.scale, other._careful = scale, None
        return other

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, H, W) for a uint8 batch (N, H, W, 3), in fixed-size chunks."""
        n = len(batch)
        out = []
        for i in range(0, n, self.batch_size):
            chunk = batch[i : i + self.batch_size]
            k = len(chunk)
            if k < self.batch_size:  # pad the last chunk so the graph is never retraced
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - k,) + chunk.shape[1:], chunk.dtype)])
            with self._lock:
                probs = np.asarray(self.model.predict_on_batch(chunk), dtype=np.float32)[..., 0]
            out.append(probs[:k])
        return np.concatenate(out)

    def probability(self, image: np.ndarray) -> np.ndarray:
        """Damage probability (H, W) for an RGB uint8 photo of any size.

        With ``flips``, the mean of the maps of the photo and its mirror images, each mapped
        back: the same answer whichever way round the photo was taken.
        """
        _check_rgb(image)
        return self._restored(self._seen_map(self._resized(image)), *image.shape[:2])

    def _seen_map(self, seen: np.ndarray) -> np.ndarray:
        """The map of a photo already resized by ``scale``; with ``flips`` averaged over its
        mirror images, each mapped back."""
        if not self.flips:
            return self._probability(seen)
        return sum(flip(self._probability(flip(seen))) for flip in _FLIPS) / len(_FLIPS)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        """The photo as the model sees it: resized by ``scale`` (antialiased when shrinking)."""
        if self.scale == 1.0:
            return image
        from PIL import Image

        h, w = image.shape[:2]
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

    @staticmethod
    def _restored(prob: np.ndarray, h: int, w: int) -> np.ndarray:
        """A map back at the photo's own size (bilinear)."""
        if prob.shape == (h, w):
            return prob
        from PIL import Image

        return np.asarray(Image.fromarray(np.asarray(prob, np.float32), "F").resize((w, h), Image.BILINEAR))

    def _probability(self, image: np.ndarray) -> np.ndarray:
        """The map of one photo, one way round.

        Tiles are cut straight from the photo with mirrored indices (no padded copy) and
        blended in a band one tile high that moves down the photo, so memory beyond the
        photo itself is the output map plus a band, whatever the photo's size.
        """
        h, w = image.shape[:2]
        t, m = self.tile, self.margin
        if h <= t and w <= t:
            return self.forward(_mirror_tile(image, 0, 0, t)[None])[0, :h, :w]
        stride = t - 2 * m
        # Coordinates in a virtual photo mirrored by m on every side (context for the border
        # pixels) and extended at the bottom/right so the last row and column of tiles fit.
        ph, pw = max(h + 2 * m, t), max(w + 2 * m, t)
        ys, xs = _starts(ph, t, stride), _starts(pw, t, stride)
        out = np.empty((h, w), np.float32)
        acc = np.zeros((t, pw), np.float32)  # the band of rows [y0, y0 + t)
        weight = np.zeros((t, pw), np.float32)
        for row, y0 in enumerate(ys):
            tiles = np.stack([_mirror_tile(image, y0 - m, x - m, t) for x in xs])
            probs = self.forward(tiles)
            for x, p in zip(xs, probs):
                acc[:, x : x + t] += p * self.window
                weight[:, x : x + t] += self.window
            done = (ys[row + 1] - y0) if row + 1 < len(ys) else t  # rows no later tile touches
            _emit(out, acc[:done], weight[:done], y0, m, h, w)
            acc = np.concatenate([acc[done:], np.zeros((done, pw), np.float32)])
            weight = np.concatenate([weight[done:], np.zeros((done, pw), np.float32)])
        return out

    def segment(self, image: np.ndarray, threshold: float | None = None) -> Segmentation:
        t = self.default_threshold if threshold is None else float(threshold)
        prob = self.probability(image)
        mask = prob >= t
        return Segmentation(prob, mask, 100.0 * float(mask.mean()), t)

    def segment_many(self, images: Sequence[np.ndarray], threshold: float | None = None) -> list[Segmentation]:
        """Segment many photos; those that fit one tile share full batches (the batch path)."""
        t = self.default_threshold if threshold is None else float(threshold)
        results: list[Segmentation | None] = [None] * len(images)
        seen = {i: self._resized(im) for i, im in enumerate(images) if _check_rgb(im)}
        small = [i for i, im in seen.items() if im.shape[0] <= self.tile and im.shape[1] <= self.tile]
        flips = _FLIPS if self.flips else _FLIPS[:1]
        for start in range(0, len(small), self.batch_size):
            idx = small[start : start + self.batch_size]
            probs = self.forward(np.stack([_mirror_tile(flip(seen[i]), 0, 0, self.tile) for i in idx
                                           for flip in flips]))
            for j, i in enumerate(idx):
                h, w = seen[i].shape[:2]
                views = probs[j * len(flips) : (j + 1) * len(flips)]
                prob = sum(flip(p[:h, :w]) for flip, p in zip(flips, views)) / len(flips)
                prob = self._restored(prob, *images[i].shape[:2])
                mask = prob >= t
                results[i] = Segmentation(prob, mask, 100.0 * float(mask.mean()), t)
        for i, im in seen.items():  # larger photos: tiled one by one, resized only once
            if results[i] is None:
                prob = self._restored(self._seen_map(im), *images[i].shape[:2])
                mask = prob >= t
                results[i] = Segmentation(prob, mask, 100.0 * float(mask.mean()), t)
        return results  # type: ignore[return-value]


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
    return image[np.ix_(_mirror_index(y, t, h), _mirror_index(x, t, w))]


def _emit(out, acc, weight, y0, m, h, w) -> None:
    """Write finished band rows (virtual rows y0.., shifted by the margin) into the output."""
    top, bottom = max(y0 - m, 0), min(y0 - m + len(acc), h)
    if bottom <= top:
        return
    a = acc[top - (y0 - m) : bottom - (y0 - m), m : m + w]
    wt = weight[top - (y0 - m) : bottom - (y0 - m), m : m + w]
    out[top:bottom] = a / np.maximum(wt, 1e-6)


_PREDICTORS: "dict[int, tuple[object, Predictor]]" = {}
_PREDICTORS_LOCK = threading.Lock()


def default_precision() -> str:
    """The inference precision: ``UNET_PRECISION`` (float32 or bfloat16) when set; otherwise
    bfloat16 on a CPU-only machine whose CPU has native bfloat16 (measured 1.9x faster,
    validation F1 within 0.001 of float32: docs/benchmarks.md), else float32."""
    chosen = os.environ.get("UNET_PRECISION", "auto")
    if chosen != "auto":
        return chosen
    from .devices import detect_hardware
    from .model import cpu_has_bf16

    on_cpu = not any(d["kind"] == "GPU" for d in detect_hardware())
    return "bfloat16" if on_cpu and cpu_has_bf16() else "float32"


def predictor(model, flips: bool = False, scale: float | None = None) -> Predictor:
    """A cached :class:`Predictor` with default settings for ``model`` (one per model object),
    in careful mode when ``flips``, seeing photos at ``scale`` when given (else the model's)."""
    key = id(model)
    with _PREDICTORS_LOCK:
        hit = _PREDICTORS.get(key)
        if hit is None or hit[0] is not model:
            hit = (model, Predictor(model, precision=default_precision()))
            _PREDICTORS[key] = hit
        chosen = hit[1].at_scale(scale)
        return chosen.careful() if flips else chosen


def segment(model, image: np.ndarray, threshold: float | None = None, flips: bool = False,
            scale: float | None = None) -> Segmentation:
    """Find the damaged pixels of one photo.

    Args:
        model: a loaded U-Net.
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
    return predictor(model, flips, scale).segment(image, threshold)


# ---------------------------------------------------------------------------------
# Pictures for people
# ---------------------------------------------------------------------------------


def overlay(image: np.ndarray, mask: np.ndarray, color=OVERLAY_COLOR, alpha: float = 0.55) -> np.ndarray:
    """The photo with damaged pixels tinted (uint8 RGB)."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


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


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the images inside named folders (sorted)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            found.append(p)
    return found


def predict_files(
    model,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    threshold: float | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    flips: bool = False,
    scale: float | None = None,
) -> list[dict]:
    """Segment files and folders; write ``<stem>_mask.png``, ``<stem>_overlay.png`` and ``results.csv``.

    A file that cannot be read gets its error in the CSV; the others still run.

    Returns:
        One row per input file: ``file, damaged_pct, error``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred = predictor(model, flips, scale)
    files = collect_images(inputs)
    rows, used = [], set()
    for path in progress(files) if progress else files:
        stem = path.stem
        n = 2
        while stem in used:
            stem, n = f"{path.stem}_{n}", n + 1
        used.add(stem)
        try:
            image = read_image(path)
            seg = pred.segment(image, threshold)
            save_png(seg.mask, out / f"{stem}_mask.png")
            save_png(overlay(image, seg.mask), out / f"{stem}_overlay.png")
            rows.append({"file": str(path), "damaged_pct": round(seg.damaged_pct, 4), "error": ""})
        except ImageError as exc:
            rows.append({"file": str(path), "damaged_pct": "", "error": exc.problem})
    from .runs import write_csv_atomic

    write_csv_atomic(out / "results.csv", rows, ["file", "damaged_pct", "error"])
    return rows

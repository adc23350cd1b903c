"""Pixel metrics for binary damage masks: IoU, Dice (= F1), precision, recall.

The same definitions are available as numpy functions (evaluation: pixel totals over a
split, or per image) and as Keras metrics (validation during training, accumulated over
the whole epoch rather than averaged per batch).

Empty cases, so that every number is defined:

* precision = 1 when nothing is predicted damaged (no false alarm was raised);
* recall = 1 when the truth has no damage (nothing could be missed);
* IoU = Dice = 1 when both truth and prediction are empty (an intact wall correctly
  left unmarked), and 0 when exactly one of them is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("iou", "dice", "precision", "recall")


@dataclass(frozen=True)
class Counts:
    """Pixel confusion counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def scores(self) -> dict[str, float]:
        return scores(self.tp, self.fp, self.fn)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """IoU, Dice, precision and recall from pixel counts (empty cases as documented above)."""
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def confusion(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> Counts:
    """Counts for a prediction (bool mask, or probabilities compared with ``>= threshold``)."""
    p = pred if pred.dtype == bool else pred >= threshold
    t = truth.astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return Counts(tp, fp, fn, int(p.size) - tp - fp - fn)


def pixel_scores(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of one image (or of one stacked array of images)."""
    return confusion(pred, truth, threshold).scores()


# ---------------------------------------------------------------------------------
# How far a split's F1 can be trusted: resampling its independent groups of photos
# ---------------------------------------------------------------------------------

LEVEL = 0.9  # the interval's coverage
RESAMPLES = 2000
MIN_GROUPS = 3  # fewer independent groups give no interval worth showing


def _f1(totals: np.ndarray) -> np.ndarray:
    """F1 (= Dice) of (..., 3) pixel totals (tp, fp, fn); 1 where there is nothing to find or mark."""
    tp, fp, fn = totals[..., 0], totals[..., 1], totals[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def _resampled(groups: int, seed: int) -> np.ndarray:
    """(RESAMPLES, groups): how often each group is drawn in each resample (with replacement)."""
    return np.random.default_rng(seed).multinomial(groups, np.full(groups, 1 / groups), size=RESAMPLES)


def _bounds(values: np.ndarray) -> tuple[float, float]:
    """The central ``LEVEL`` share of resampled values: its lower and upper ends."""
    tail = 100 * (1 - LEVEL) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def f1_interval(counts: np.ndarray, seed: int = 0) -> tuple[float, float] | None:
    """The ``LEVEL`` percentile-bootstrap interval of a split's pixel F1; None with fewer than
    ``MIN_GROUPS`` groups.

    ``counts`` is one (tp, fp, fn) row per *independent* group of photos: a photo, or all the
    patches cut from one wall (they share its cracks, light and brickwork, so they are drawn
    together). A split of few groups, or one where a group holds most of the cracks, gets a
    wide interval however many photos it has.
    """
    c = np.asarray(counts, np.float64).reshape(-1, 3)
    return _bounds(_f1(_resampled(len(c), seed) @ c)) if len(c) >= MIN_GROUPS else None


def f1_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Model a's pixel F1 minus model b's on the same groups of photos (row i of ``a`` and ``b``
    is the same group), with the ``LEVEL`` interval of the difference when the groups are
    resampled together (a paired bootstrap), and ``ahead``: the share of resamples where a scores
    higher, and ``verdict``: "ahead" or "behind" when the interval is clear of 0, else "cannot tell
    apart" (the photos cannot tell the two models apart).
    """
    a = np.asarray(a, np.float64).reshape(-1, 3)
    b = np.asarray(b, np.float64).reshape(-1, 3)
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} and {len(b)} groups: a paired difference needs the same groups")
    w = _resampled(len(a), seed)
    d = _f1(w @ a) - _f1(w @ b)
    low, high = _bounds(d)
    return {"difference": float(_f1(a.sum(0)) - _f1(b.sum(0))), "low": low, "high": high,
            "ahead": float(np.mean(d > 0)),
            "verdict": "ahead" if low > 0 else "behind" if high < 0 else "cannot tell apart"}


# ---------------------------------------------------------------------------------
# Keras metrics
# ---------------------------------------------------------------------------------

import keras  # noqa: E402  (kept below the numpy API, which does not need it)
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="unet")
class PixelMetric(keras.metrics.Metric):
    """IoU, Dice, precision or recall at a threshold, from pixel totals over an epoch.

    Args:
        kind: one of ``iou``, ``dice``, ``precision``, ``recall``.
        threshold: probability at or above which a pixel counts as damaged.
    """

    def __init__(self, kind: str = "iou", threshold: float = 0.5, name: str | None = None, **kwargs):
        if kind not in METRIC_NAMES:
            raise ValueError(f"unknown metric {kind!r}; choose one of {', '.join(METRIC_NAMES)}")
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.threshold = kind, threshold
        self.tp = self.add_variable((), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable((), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable((), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = y_pred[..., :1]  # a deeply supervised network's main map (unet.model.deeply_supervised)
        t = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        p = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), self.threshold), "float32")
        tp = ops.sum(t * p)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(p) - tp)
        self.fn.assign_add(ops.sum(t) - tp)

    def result(self):
        tp, fp, fn = self.tp, self.fp, self.fn
        num, den = {
            "iou": (tp, tp + fp + fn),
            "dice": (2 * tp, 2 * tp + fp + fn),
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
        }[self.kind]
        return ops.where(ops.equal(den, 0.0), 1.0, num / ops.maximum(den, 1.0))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "threshold": self.threshold}


def keras_metrics(threshold: float = 0.5) -> list[PixelMetric]:
    """One :class:`PixelMetric` per name in :data:`METRIC_NAMES`."""
    return [PixelMetric(k, threshold) for k in METRIC_NAMES]

"""Training losses for thin, rare damage (about 3% of pixels are damaged).

Binary cross-entropy alone (the seed's loss) is dominated by the 97% intact pixels and
favours predicting "intact"; Dice measures overlap of the damaged class directly;
their sum trains stably and segments thin cracks better.
"""

from __future__ import annotations

import keras
from keras import ops

from .config import LOSSES
from .errors import ConfigError

_EPS = 1e-7


def pixel_bce(y_true, y_pred):
    """Binary cross-entropy of each pixel (``y_true`` already in ``y_pred``'s dtype)."""
    p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
    return -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))


@keras.saving.register_keras_serializable(package="unet")
class DiceLoss(keras.losses.Loss):
    """1 - soft Dice over the whole batch (stable on crops with no damage).

    Args:
        smooth: added to numerator and denominator; an empty truth with an empty
            prediction gives a loss of 0.
    """

    def __init__(self, smooth: float = 1.0, name: str = "dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        inter = ops.sum(y_true * y_pred)
        total = ops.sum(y_true) + ops.sum(y_pred)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        # Loss API expects per-sample values; the batch-wide Dice is broadcast.
        return ops.ones_like(y_pred[:, 0, 0, 0]) * (1.0 - dice)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="unet")
class BceDiceLoss(keras.losses.Loss):
    """Binary cross-entropy + batch Dice loss, each with its weight."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 name: str = "bce_dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce_weight, self.dice_weight, self.smooth = bce_weight, dice_weight, smooth
        self._dice = DiceLoss(smooth)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        bce = ops.mean(pixel_bce(y_true, y_pred), axis=(1, 2, 3))
        return self.bce_weight * bce + self.dice_weight * self._dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight,
                "dice_weight": self.dice_weight, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="unet")
class TverskyLoss(keras.losses.Loss):
    """1 - batch Tversky index, ``TP / (TP + alpha FP + beta FN)``, raised to ``gamma``.

    With ``beta > alpha`` a missed damaged pixel costs more than a false alarm: the network
    is pushed to draw a crack's whole width, where Dice (alpha = beta = 0.5) settles for
    its core. ``gamma < 1`` is the focal Tversky loss (Abraham and Khan, 2019): photos whose
    cracks are still badly found keep a larger gradient.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0, smooth: float = 1.0,
                 name: str = "tversky_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        tp = ops.sum(y_true * y_pred)
        fp = ops.sum((1.0 - y_true) * y_pred)
        fn = ops.sum(y_true * (1.0 - y_pred))
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        loss = ops.power(ops.maximum(1.0 - index, 0.0), self.gamma)
        return ops.ones_like(y_pred[:, 0, 0, 0]) * loss

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "smooth": self.smooth}


def edge_band(y_true, px: int):
    """1 on the pixels within ``px`` pixels of a mask's edge, on either side, else 0: the mask
    grown by ``px`` minus the mask shrunk by ``px`` (square neighbourhoods, ``(N, H, W, 1)``)."""
    k = 2 * px + 1
    grown = ops.max_pool(y_true, pool_size=k, strides=1, padding="same")
    shrunk = -ops.max_pool(-y_true, pool_size=k, strides=1, padding="same")
    return grown - shrunk


@keras.saving.register_keras_serializable(package="unet")
class BceTverskyLoss(keras.losses.Loss):
    """Binary cross-entropy + :class:`TverskyLoss` (alpha 0.3, beta 0.7).

    The cross-entropy's pixels can be weighted, the weights normalised per crop so the term
    keeps plain BCE's scale:

    - ``edge_weight > 0``: boundary-aware. Pixels within ``edge_px`` pixels of a crack's edge
      (both sides) weigh ``1 + edge_weight``. The edges are where a crack's width is won or
      lost: the uncertain pixels of a found crack are its edge pixels.
    - ``balance > 0``: class-balanced (HED's cross-entropy, Xie and Tu 2015). Damaged pixels
      weigh the batch's ratio of intact to damaged pixels raised to ``balance`` (1: the two
      classes weigh the same in total; about 30x at 3% damage), at most ``max_ratio``.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, edge_weight: float = 0.0, edge_px: int = 2,
                 balance: float = 0.0, max_ratio: float = 50.0, name: str = "bce_tversky_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta, self.edge_weight, self.edge_px = alpha, beta, edge_weight, int(edge_px)
        self.balance, self.max_ratio = balance, max_ratio
        self._tversky = TverskyLoss(alpha, beta)

    def pixel_weights(self, y_true):
        """Each pixel's cross-entropy weight before normalisation (``None``: all 1)."""
        w = None
        if self.edge_weight:
            w = 1.0 + self.edge_weight * edge_band(y_true, self.edge_px)
        if self.balance:
            damaged = ops.sum(y_true)
            ratio = (ops.cast(ops.size(y_true), y_true.dtype) - damaged) / ops.maximum(damaged, 1.0)
            ratio = ops.clip(ops.power(ratio, self.balance), 1.0, self.max_ratio)
            by_class = 1.0 + (ratio - 1.0) * y_true  # from the mask only: no gradient flows through it
            w = by_class if w is None else w * by_class
        return w

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        bce = pixel_bce(y_true, y_pred)
        w = self.pixel_weights(y_true)
        if w is None:
            bce = ops.mean(bce, axis=(1, 2, 3))
        else:
            bce = ops.sum(w * bce, axis=(1, 2, 3)) / ops.sum(w, axis=(1, 2, 3))
        return bce + self._tversky.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta,
                "edge_weight": self.edge_weight, "edge_px": self.edge_px,
                "balance": self.balance, "max_ratio": self.max_ratio}


@keras.saving.register_keras_serializable(package="unet")
class DeepSupervisionLoss(keras.losses.Loss):
    """A loss over a deeply supervised network's stacked maps (:func:`unet.model.deeply_supervised`):
    ``loss(main) + side_weight x mean(loss(side) for each side map)``, every map scored against
    the same mask. Channel 0 is the main map; a one-channel prediction is scored as ``loss`` alone.

    Args:
        loss: the loss of each map (a name in :data:`unet.config.LOSSES`).
        side_weight: the side maps' share against the main map's (0.5: the main map's loss
            counts twice as much as the side maps' together).
    """

    def __init__(self, loss: str = "bce_dice", side_weight: float = 0.5, name: str = "deep_supervision_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.loss, self.side_weight = loss, side_weight
        self._loss = get_loss(loss)

    def call(self, y_true, y_pred):
        maps = y_pred.shape[-1]
        main = self._loss.call(y_true, y_pred[..., :1])
        if maps == 1:
            return main
        sides = sum(self._loss.call(y_true, y_pred[..., i:i + 1]) for i in range(1, maps))
        return main + (self.side_weight / (maps - 1)) * sides

    def get_config(self):
        return {**super().get_config(), "loss": self.loss, "side_weight": self.side_weight}


def get_loss(name: str, deep_supervision: bool = False) -> keras.losses.Loss:
    """The loss for a name in :data:`unet.config.LOSSES`; with ``deep_supervision``, that loss
    over every map of a deeply supervised network (:class:`DeepSupervisionLoss`)."""
    if deep_supervision:
        return DeepSupervisionLoss(name)  # builds get_loss(name): an unknown name is refused there
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice":
        return DiceLoss()
    if name == "bce_dice":
        return BceDiceLoss()
    if name == "bce_tversky":
        return BceTverskyLoss()
    if name == "edge_tversky":
        return BceTverskyLoss(edge_weight=2.0, edge_px=2, name="edge_tversky_loss")
    if name == "balanced_tversky":
        return BceTverskyLoss(balance=1.0, name="balanced_tversky_loss")
    if name == "focal_tversky":
        return TverskyLoss(gamma=0.75, name="focal_tversky_loss")
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")

"""A training run's definition (``TrainConfig``) and the vocabularies it draws from.

Each choice a user can make (preset, loss, optimizer, schedule, device) is listed once,
here or, for presets, in :mod:`unet.model`; the command line, the Train page and the
trainer all read these lists. This module never imports Keras.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError

LOSSES = {
    "bce_dice": "BCE + Dice: suits thin, rare damage (the default)",
    "dice": "Dice alone",
    "bce": "binary cross-entropy alone (the original recipe's loss)",
    "bce_tversky": "BCE + Tversky (misses cost 7/3 of false alarms): favours a crack's whole width",
    "edge_tversky": "BCE weighted 3x within 2 px of a crack's edge + Tversky: the edges, where width is lost",
    "balanced_tversky": "class-balanced BCE (damaged pixels weigh as much as intact ones in total) + Tversky",
    "focal_tversky": "focal Tversky: Tversky's recall weighting, hard photos weighted up",
}
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "gpu")

# Keys older run folders wrote into config.json that are not part of the definition (the
# environment now has its own file, environment.json; run id and creation time live in
# status.json). Read and dropped, so every run ever made still opens.
_LEGACY_KEYS = {"backend", "devices", "created_at", "run_id"}
# Renamed keys: ``scale`` was the crop range, a word the inference resize also uses.
_RENAMED = {"scale": "crop_scale"}


def _one_of(name: str, value, allowed) -> str | None:
    return None if value in allowed else f"{name} must be one of {', '.join(allowed)} (got {value!r})"



def count_setting(name: str, default: int, unit: str = "", minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` from the environment variable ``name`` (``default``
    when it is unset or blank); any other value is a :class:`ConfigError` naming the variable."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name} must be a whole number{' of ' + unit if unit else ''}, {minimum} or more "
                          f"(got {text!r})")
    return value

@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run's ``config.json``).

    Defaults finish in a few minutes on a 2-core CPU with the generated sample data.
    """

    data: str | list[str] = "data/sample"  # one dataset folder, or several pooled
    preset: str = "lite"
    size: int = 128
    loss: str = "bce_dice"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    epochs: int = 10
    batch: int = 8
    steps_per_epoch: int | None = None  # None: one pass over the training photos
    augment: bool = True
    # Random crops are this many times the input side (log-uniform), then resized to it.
    crop_scale: tuple[float, float] = (0.75, 1.33)
    # Photometric changes per crop (uniform): brightness moves by up to +-brightness x 255,
    # contrast is scaled by 1 +- contrast. Wider ranges show the network darker and brighter
    # photos than the datasets hold (the predictor's exposure rule covers the rest).
    brightness: float = 0.15
    contrast: float = 0.15
    # Colour per crop (uniform; 0 = off): each channel's gain is scaled by 1 +- color (white
    # balance), the saturation by 1 +- 2 x color: walls of other colours than the datasets'.
    color: float = 0.0
    # Sensor noise per crop (0 = off): Gaussian, of a standard deviation drawn uniformly in
    # 0-noise x 255 (0.08: up to 20/255, a phone photo in poor light).
    noise: float = 0.0
    val_fraction: float = 0.15  # used only when the dataset has no val/ folder
    threshold: float = 0.5  # for validation metrics, and the saved model's first threshold
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = False
    # Weight averaging (Polyak/EMA): after each step the averaged weights move (1 - ema) of the
    # way to the trained ones; validation, the best checkpoint's choice and the exported model
    # use the average. 0 = off; 0.99-0.999 typical (averaging over about 1/(1 - ema) steps).
    ema: float = 0.0
    # Deep supervision: while training, decoder levels 2-4 each give a map of their own, scored
    # against the mask with the same loss (unet.model.deeply_supervised); the saved model is the
    # plain U-Net of the preset.
    deep_supervision: bool = False
    time_budget_min: float | None = None  # end training (as completed) after this many minutes
    init_from: str | None = None  # a .keras model of the same preset whose weights start the run
    # "k/K": validate on fold k of K of the training photos (whole source photos per fold)
    # instead of the val split, which is then not read: choices made on folds.
    fold: str | None = None
    # False: no photos are held out for validation (the val split is not read either): the
    # model of the last epoch is the run's. For a recipe's final training on every training
    # photo, its threshold coming from the folds it was cross-validated on (crossval --final).
    validation: bool = True
    name: str = ""

    def validate(self) -> "TrainConfig":
        """This config, or a :class:`ConfigError` listing every problem."""
        from .model import PRESETS  # model.py imports Keras only when a model is built

        def number(name, value, integer=False):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok and integer and value != int(value):
                ok = False
            if not ok:
                problems.append(f"{name} must be {'a whole number' if integer else 'a number'} (got {value!r})")
            return ok

        problems = [p for p in (
            _one_of("preset", self.preset, list(PRESETS)), _one_of("loss", self.loss, list(LOSSES)),
            _one_of("optimizer", self.optimizer, OPTIMIZERS), _one_of("schedule", self.schedule, SCHEDULES),
            _one_of("device", self.device, DEVICES)) if p]
        if number("size", self.size, True) and (self.size < 16 or self.size > 4096 or self.size % 16):
            problems.append("size must be a multiple of 16 between 16 and 4096")
        if number("epochs", self.epochs, True) and number("batch", self.batch, True) and \
                (self.epochs < 1 or self.batch < 1):
            problems.append("epochs and batch must be at least 1")
        if number("learning rate", self.learning_rate) and not 0 < self.learning_rate < 1:
            problems.append("learning rate must be between 0 and 1")
        if number("threshold", self.threshold) and not 0 < self.threshold < 1:
            problems.append("threshold must be between 0 and 1")
        if number("val_fraction", self.val_fraction) and not 0 < self.val_fraction < 1:
            problems.append("val_fraction must be between 0 and 1")
        for key in ("brightness", "contrast", "color", "noise"):
            if number(key, getattr(self, key)) and not 0 <= getattr(self, key) < 1:
                problems.append(f"{key} must be at least 0 and below 1 (a fraction: 0.15 is +-15%)")
        if number("ema", self.ema) and not 0 <= self.ema < 1:
            problems.append("ema must be 0 (off) or a momentum below 1, such as 0.99")
        if self.steps_per_epoch is not None and number("steps_per_epoch", self.steps_per_epoch, True) \
                and self.steps_per_epoch < 1:
            problems.append("steps_per_epoch must be at least 1 (or left out: one pass over the photos)")
        if self.time_budget_min is not None and number("time budget", self.time_budget_min) \
                and self.time_budget_min <= 0:
            problems.append("time budget must be positive")
        crop = self.crop_scale
        if not (isinstance(crop, (tuple, list)) and len(crop) == 2 and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in crop) and 0.1 <= crop[0] <= crop[1] <= 10):
            problems.append(f"crop_scale must be two numbers, low <= high, within 0.1-10 (got {crop!r})")
        if self.fold is not None:
            from .data import DatasetError, parse_fold

            try:
                parse_fold(self.fold)
            except DatasetError as exc:
                problems.append(str(exc))
        if not isinstance(self.deep_supervision, bool):
            problems.append(f"deep_supervision must be true or false (got {self.deep_supervision!r})")
        if not isinstance(self.validation, bool):
            problems.append(f"validation must be true or false (got {self.validation!r})")
        elif not self.validation and self.fold is not None:
            problems.append("a run without validation holds out no fold: leave out fold or validation")
        if not isinstance(self.data, str) and not (
                isinstance(self.data, list) and self.data and all(isinstance(d, str) for d in self.data)):
            problems.append("data must be a folder or a list of folders")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from its JSON form; unknown keys are refused, legacy ones read."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config is a JSON object, not {type(d).__name__}")
        d = {_RENAMED.get(k, k): v for k, v in d.items() if k not in _LEGACY_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        if isinstance(d.get("crop_scale"), list):
            d["crop_scale"] = tuple(d["crop_scale"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def dataset_folders(self) -> list[str]:
        """The dataset folders named by ``data`` (one path or a list of paths)."""
        return [self.data] if isinstance(self.data, str) else list(self.data)

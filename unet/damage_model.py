"""One object owns a trained model: :class:`DamageModel`.

A ``DamageModel`` is loaded from a ``.keras`` file and owns everything that travels with
it: the Keras network (float32, any input size), its card (``<name>.json``: threshold,
training size, scale, calibration; read, validated and written here and nowhere else),
the copy of the network in the inference precision and the :class:`~unet.predict.Predictor`
that runs it. Options that change per call (threshold, careful mode, scale) are
arguments of :meth:`DamageModel.segment`, not copies of the object.

Example:
    >>> model = DamageModel.load()                     # the bundled default model
    >>> seg = model.segment(read_image("wall.jpg"), flips=True)
    >>> model.update_card(threshold=0.42)              # atomically, beside the file
"""

from __future__ import annotations

import json
import math
import threading
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import write_json_atomic
from .model import BUNDLED_MODELS, DEFAULT_MODEL, ModelError, check_scale, flexible, input_side, main_network, model_path, rebuilt

# =================================================================================
# The card
# =================================================================================


@dataclass(frozen=True)
class ModelCard:
    """What travels beside a model file in ``<name>.json``.

    Attributes:
        threshold: probability at which a pixel counts as damaged (0-1, exclusive).
        input_size: the side it was trained at; photos are tiled at least this large.
        preset: the architecture's preset name.
        source: where it came from (a run id, a file).
        scale: photos are resized by this before the model sees them (1/16-4), or ``"auto"``:
            each photo's own, from the width of its cracks (:func:`unet.predict.choose_scale`).
        calibration: what ``calibrate`` measured when it chose the threshold and scale.
        extra: keys this version does not know, kept when the card is rewritten.
    """

    threshold: float = 0.5
    input_size: int = 256
    preset: str = ""
    source: str = ""
    scale: float | str = 1.0
    calibration: dict | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @staticmethod
    def path_for(model_path: str | Path) -> Path:
        return Path(model_path).with_suffix(".json")

    @classmethod
    def from_dict(cls, data, name: str = "model card") -> "ModelCard":
        """A validated card; anything out of range raises :class:`ModelError` naming ``name``."""
        if not isinstance(data, dict):
            raise ModelError(f"{name}: a model card is a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        card = cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})
        return card.checked(name)

    def checked(self, name: str = "model card") -> "ModelCard":
        t, size = self.threshold, self.input_size
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0 < t < 1):
            raise ModelError(f"{name}: threshold must be a number between 0 and 1 (got {t!r})")
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096 or size % 16:
            raise ModelError(f"{name}: input_size must be a multiple of 16 between 16 and 4096 (got {size!r})")
        try:
            scale = check_scale(self.scale)
        except ValueError as exc:
            raise ModelError(f"{name}: {exc}") from None
        if not isinstance(self.preset, str) or not isinstance(self.source, str):
            raise ModelError(f"{name}: preset and source must be text")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ModelError(f"{name}: calibration must be a JSON object")
        return replace(self, threshold=float(t), scale=scale)

    def threshold_origin(self) -> str | None:
        """Where the threshold came from, in one sentence (the Home page); None when the card
        does not say (a threshold set by hand, or an older card)."""
        c = self.calibration or {}
        if not c:
            return None
        if isinstance(c.get("how"), str):  # crossval --final
            return f"Threshold: {c['how']}."
        if isinstance(c.get("auto"), str):  # a run's own, when it finished
            return f"Threshold: the best F1 on the run's validation photos, {c['auto']}."
        where = f"fold {c['fold']} of the training photos" if c.get("fold") else \
            f"{len(c.get('splits') or {})} validation split(s)"
        f1 = f", mean F1 {c['mean_f1']:.3f} there" if isinstance(c.get("mean_f1"), (int, float)) else ""
        rule = f" ({c['rule']})" if isinstance(c.get("rule"), str) else ""
        return f"Threshold chosen by calibration on {where}{rule}{f1}."

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra" and v not in ("", None)}
        return {**self.extra, **out}

    @classmethod
    def read(cls, model_path: str | Path) -> "ModelCard | None":
        """The card beside ``model_path``; None when there is none.

        Raises:
            ModelError: the card is unreadable, not JSON, or holds a value out of range.
        """
        side = cls.path_for(model_path)
        if not side.is_file():
            return None
        try:
            with open(side, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ModelError(f"{side.name}: cannot be read ({exc.strerror})") from None
        except ValueError as exc:  # also bad UTF-8
            raise ModelError(f"{side.name}: the model card is not valid JSON ({exc})") from None
        return cls.from_dict(data, side.name)

    def write(self, model_path: str | Path) -> Path:
        """Write the card beside ``model_path``, atomically."""
        side = self.path_for(model_path)
        write_json_atomic(side, self.to_dict())
        return side


def file_stamp(model_path: str | Path) -> tuple[float, float]:
    """Modification times of a model file and its card: a cache key that changes when either does."""
    side = ModelCard.path_for(model_path)
    return Path(model_path).stat().st_mtime, side.stat().st_mtime if side.is_file() else 0.0


# =================================================================================
# The model
# =================================================================================


def _check_shapes(network, name: str) -> None:
    """Refuse a network that does not map one image to one single-channel map."""
    shape_in, shape_out = network.input_shape, network.output_shape
    if not (isinstance(shape_in, tuple) and isinstance(shape_out, tuple) and len(shape_in) == 4
            and len(shape_out) == 4):
        raise ModelError(f"{name}: not an image segmentation model (one image in, one map out)")
    if shape_in[-1] != 3:
        raise ModelError(f"{name}: the model takes {shape_in[-1]}-channel images; photos are RGB (3 channels)")
    if shape_out[-1] != 1:
        raise ModelError(f"{name}: the model gives {shape_out[-1]} channels per pixel; a damage map has 1")


def _check_contract(network, name: str) -> None:
    """Refuse a network that is not a segmentation model of this package's shape.

    It must take RGB (3 channels), give one channel of probabilities the size of its
    input, and hold finite weights: anything else would give masks that look plausible
    and mean nothing (shifted, 100% damaged, or 0% everywhere).
    """
    for w in network.weights:
        if not np.isfinite(np.asarray(w)).all():
            raise ModelError(f"{name}: the model's weights hold NaN or infinite values (a diverged training run?)")
    probe = np.asarray(network.predict_on_batch(np.zeros((1, 64, 64, 3), np.uint8)))
    if probe.shape != (1, 64, 64, 1):
        raise ModelError(f"{name}: its output ({probe.shape[1]}x{probe.shape[2]}) is not the size of its input "
                         "(64x64): masks would not line up with the photo")
    if probe.min() < 0 or probe.max() > 1:
        raise ModelError(f"{name}: its output is not a probability (0-1): the last layer needs a sigmoid")


class DamageModel:
    """A U-Net with its card, its inference-precision copy and its predictor.

    Args:
        network: a Keras U-Net (as built by :func:`unet.build_unet` or loaded).
        card: its card; defaults to one read off the network (training size, threshold 0.5).
        path: the ``.keras`` file it came from (where :meth:`update_card` writes).
        precision: ``float32`` or ``bfloat16`` for inference; None picks
            :func:`unet.predict.default_precision` when the predictor is first needed.
        any_size: use a copy of the network that accepts any input size (a network built
            for one size is rebuilt once, here).

    A DamageModel also answers the Keras model's own attributes (``predict_on_batch``,
    ``count_params``...), so code written for the Keras object returned by earlier
    versions of :func:`unet.load_model` keeps working.
    """

    def __init__(self, network, card: ModelCard | None = None, path: str | Path | None = None,
                 precision: str | None = None, any_size: bool = True):
        # A rebuilt copy takes any input size; a bare network wrapped for one call (`of`) is
        # used as it is, as the predictor's tiles are never smaller than its own size.
        self.network = flexible(network) if any_size else network
        self.card = card if card is not None else ModelCard(input_size=input_side(network))
        self.path = Path(path) if path is not None else None
        self.precision = precision
        self._predictor = None
        self._build_lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | Path | None = None, precision: str | None = None) -> "DamageModel":
        """Load a ``.keras`` file with ``safe_mode=True`` (no code in the file is ever run).

        Raises:
            ModelError: the file is missing, is not a Keras model, carries code (a
                ``Lambda`` layer), is not a one-channel segmentation model, or its card
                is corrupt or out of range. The message names the file.
        """
        path = model_path(path)
        if not path.is_file():
            if path == DEFAULT_MODEL:
                raise ModelError(f"{path.name}: no bundled default model yet; train one or name a .keras file")
            raise ModelError(f"{path}: model file does not exist (a .keras file, or a bundled model: "
                             f"{', '.join(p.stem for p in BUNDLED_MODELS.values())})")
        try:
            is_zip = path.suffix == ".keras" and zipfile.is_zipfile(path)
            names = []
            if is_zip:
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
        except zipfile.BadZipFile:
            is_zip = False
        except OSError as exc:
            raise ModelError(f"{path.name}: cannot be read ({exc.strerror})") from None
        if not is_zip:
            raise ModelError(f"{path.name}: not a Keras model file (.keras)")
        if "config.json" not in names:
            raise ModelError(f"{path.name}: not a Keras model file (no config.json inside)")
        card = ModelCard.read(path)  # a bad card is refused before the slow part
        import keras

        from . import losses, metrics  # noqa: F401  registers the training objects

        try:
            network = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types; every one means "unusable file"
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "safe_mode" in text or "lambda" in text.lower():
                text = "it contains code (a Lambda layer), which is refused for safety"
            else:
                text = _plain(text)
            raise ModelError(f"{path.name}: cannot be loaded: {text}") from None
        if not isinstance(network, keras.Model):
            raise ModelError(f"{path.name}: not a Keras model")
        network = main_network(network)  # a deeply supervised run's checkpoint: its main map
        _check_shapes(network, path.name)
        try:
            flex = flexible(network)
        except Exception as exc:  # a network that cannot take another input size
            raise ModelError(f"{path.name}: cannot be used on photos of any size: {_plain(str(exc))}") from None
        _check_contract(flex, path.name)
        if card is None:
            card = ModelCard(input_size=input_side(network))
        return cls(flex, card, path, precision)

    @classmethod
    def of(cls, model) -> "DamageModel":
        """``model`` itself if it is a DamageModel; a bare Keras network is wrapped as it is
        (float32, no copy: wrap it yourself, once, for the bfloat16 copy)."""
        if isinstance(model, DamageModel):
            return model
        # Tiles are at least 256 px and never smaller than the network's own size: only a
        # network built for a smaller size needs the (slower) any-size copy.
        side = model.input_shape[1] if len(model.input_shape) > 1 else None
        return cls(model, precision="float32", any_size=side is not None and side < 256)

    # ------------------------------------------------------------------ the card

    threshold = property(lambda self: self.card.threshold)
    scale = property(lambda self: self.card.scale)
    input_size = property(lambda self: self.card.input_size)

    def update_card(self, **changes) -> ModelCard:
        """Change the card (validated) and write it beside the model file, atomically."""
        card = replace(self.card, **changes).checked(ModelCard.path_for(self.path or "model").name)
        if self.path is not None:
            card.write(self.path)
        self.card = card
        if self._predictor is not None:
            self._predictor.default_threshold = card.threshold
            self._predictor.scale = card.scale
        return card

    def save(self, path: str | Path, **card_changes) -> Path:
        """Save an inference copy (float32, any input size, no optimizer state) and its card, atomically."""
        from .files import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        card = replace(self.card, **card_changes).checked(ModelCard.path_for(path).name)
        with atomic_path(path, suffix=".keras") as tmp:
            rebuilt(self.network).save(tmp)
        card.write(path)
        return path

    # ------------------------------------------------------------------ inference

    @property
    def predictor(self):
        """The :class:`~unet.predict.Predictor` of this model (built once, on first use)."""
        with self._build_lock:
            if self._predictor is None:
                from .predict import Predictor, default_precision

                self._predictor = Predictor(self, precision=self.precision or default_precision())
            return self._predictor

    def probability(self, image: np.ndarray, flips: bool = False, scale: float | None = None,
                    progress=None) -> np.ndarray:
        """Damage probability (H, W) of an RGB uint8 photo of any size; ``progress(fraction)``
        is called as rows of tiles are done."""
        return self.predictor.probability(image, flips=flips, scale=scale, progress=progress)

    def scaled_probability(self, image: np.ndarray, flips: bool = False, scale: float | str | None = None,
                           progress=None) -> tuple[np.ndarray, float]:
        """:meth:`probability`, and the scale the model saw the photo at (chosen per photo with
        ``"auto"``)."""
        return self.predictor.scaled_probability(image, flips=flips, scale=scale, progress=progress)

    def segment(self, image: np.ndarray, threshold: float | None = None, flips: bool = False,
                scale: float | None = None):
        """Find the damaged pixels of one photo (see :func:`unet.segment`)."""
        return self.predictor.segment(image, threshold, flips=flips, scale=scale)

    def segment_many(self, images: Sequence[np.ndarray], threshold: float | None = None, flips: bool = False,
                     scale: float | None = None) -> list:
        """Segment many photos; those that fit one tile share batches."""
        return self.predictor.segment_many(images, threshold, flips=flips, scale=scale)

    def __getattr__(self, name: str):
        # Only reached for names a DamageModel lacks: the Keras network's own API.
        if name.startswith("_") or name == "network":
            raise AttributeError(name)
        return getattr(self.network, name)

    def __repr__(self) -> str:
        where = self.path.name if self.path else "in memory"
        return f"DamageModel({where}, preset={self.card.preset or '?'}, threshold={self.threshold:g}, " \
               f"scale={self.scale if isinstance(self.scale, str) else format(self.scale, 'g')})"


def _plain(text: str) -> str:
    """Keras messages without terminal colour codes, on one line."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()

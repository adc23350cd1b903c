"""The U-Net and its presets (Keras 3, backend-agnostic: keras.layers only).

The model takes uint8-range RGB (scaling to 0..1 happens inside, in a ``Rescaling``
layer) and returns a one-channel damage probability. It is fully convolutional: any
input whose sides are multiples of ``2 ** depth`` (16 for every preset) works at
prediction. It saves as ``.keras`` with built-in layers only, so it loads with
``safe_mode=True`` under any backend and without this package's code.
"""

from __future__ import annotations

import json
import os
import weakref
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras is imported when a model is built, not when presets are listed.
    import keras


# =================================================================================
# Presets
# =================================================================================


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of one U-Net.

    Attributes:
        encoder: filters of each encoder level (each followed by 2x2 max pooling).
        bottleneck: filters of the conv blocks at the lowest resolution, in order.
        encoder_dropout: dropout inside each encoder block (mirrored in the decoder).
        bottleneck_dropout: dropout inside each bottleneck block.
        batch_norm: batch normalisation after each convolution (before ReLU).
    """

    encoder: tuple[int, ...] = (16, 32, 64, 128)
    bottleneck: tuple[int, ...] = (256, 512, 256)
    encoder_dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    bottleneck_dropout: float = 0.3
    batch_norm: bool = False
    # 0.9, not Keras' 0.99: with a few hundred steps per run the moving statistics must
    # track the weights quickly, or inference-mode predictions drift far from training
    # ones (measured: val Dice 0.10 at 0.99 vs 0.84 with batch statistics, same weights).
    bn_momentum: float = 0.9
    description: str = field(default="", compare=False)

    @property
    def depth(self) -> int:
        return len(self.encoder)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** self.depth

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, UNetConfig] = {
    # The original scripts' architecture, unchanged (7,251,057 parameters).
    "seed": UNetConfig(
        description="The original earthquake-damage U-Net: 16-32-64-128, bottleneck 256-512-256, "
        "dropout 0.1-0.3, no batch norm (7.25 M parameters).",
    ),
    # Same widths, one bottleneck block, batch norm and light dropout: trains much
    # faster and more stably than the seed on a few hundred photos.
    "standard": UNetConfig(
        encoder=(16, 32, 64, 128),
        bottleneck=(256,),
        encoder_dropout=(0.0, 0.0, 0.1, 0.1),
        bottleneck_dropout=0.2,
        batch_norm=True,
        description="Seed widths with batch norm and one 256-filter bottleneck (1.9 M parameters).",
    ),
    # Half the widths: a run finishes in minutes on a 2-core CPU.
    "lite": UNetConfig(
        encoder=(8, 16, 32, 64),
        bottleneck=(128,),
        encoder_dropout=(0.0, 0.0, 0.0, 0.1),
        bottleneck_dropout=0.1,
        batch_norm=True,
        description="Half-width U-Net with batch norm (0.5 M parameters); trains in minutes on a CPU.",
    ),
    # For tests and smoke runs only.
    "tiny": UNetConfig(
        encoder=(4, 8, 8, 16),
        bottleneck=(16,),
        encoder_dropout=(0.0, 0.0, 0.0, 0.0),
        bottleneck_dropout=0.0,
        batch_norm=False,
        description="A few thousand parameters, for tests and smoke runs.",
    ),
}


def get_preset(name: str) -> UNetConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# =================================================================================
# Layers
# =================================================================================


def _conv_block(x, filters: int, dropout: float, batch_norm: bool, name: str, bn_momentum: float = 0.9):
    """Two 3x3 ReLU convolutions (he_normal), dropout between them as in the seed."""
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", kernel_initializer="he_normal",
            use_bias=not batch_norm, name=f"{name}_conv{i}",
            activation=None if batch_norm else "relu",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if i == 1 and dropout > 0:
            x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


# =================================================================================
# Model
# =================================================================================


def build_unet(
    preset: str | UNetConfig = "seed",
    input_size: int | None = 256,
    **overrides,
) -> "keras.Model":
    """Build a U-Net.

    Args:
        preset: a name from :data:`PRESETS` or a :class:`UNetConfig`.
        input_size: the square training input side, or None for any size (the
            model is fully convolutional either way; the size only fixes shapes
            in the summary). Must be a multiple of ``2 ** depth``.
        **overrides: fields of :class:`UNetConfig` to change, e.g. ``encoder=(8, 16, 32, 64)``.

    Returns:
        An uncompiled ``keras.Model`` mapping (N, H, W, 3) uint8-range RGB to (N, H, W, 1)
        damage probabilities in float32.

    Example:
        >>> model = build_unet("seed", 256)
        >>> model.count_params()
        7251057
    """
    import keras
    from keras import layers

    cfg = get_preset(preset) if isinstance(preset, str) else preset
    if overrides:
        cfg = replace(cfg, **overrides)
    if len(cfg.encoder_dropout) != cfg.depth:
        raise ValueError("encoder_dropout needs one value per encoder level")
    if input_size is not None and input_size % cfg.multiple:
        raise ValueError(f"input size {input_size} is not a multiple of {cfg.multiple}")
    name = preset if isinstance(preset, str) else "custom"

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    skips = []
    for level, (filters, drop) in enumerate(zip(cfg.encoder, cfg.encoder_dropout), start=1):
        x = _conv_block(x, filters, drop, cfg.batch_norm, f"enc{level}", cfg.bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    for i, filters in enumerate(cfg.bottleneck, start=1):
        x = _conv_block(x, filters, cfg.bottleneck_dropout, cfg.batch_norm, f"mid{i}", cfg.bn_momentum)
    for level in range(cfg.depth, 0, -1):
        filters, drop = cfg.encoder[level - 1], cfg.encoder_dropout[level - 1]
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level - 1]])
        x = _conv_block(x, filters, drop, cfg.batch_norm, f"dec{level}", cfg.bn_momentum)
    # float32 output keeps probabilities exact under mixed precision.
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="damage")(x)
    return keras.Model(inputs, outputs, name=f"unet_{name}")


# =================================================================================
# Saving and loading
# =================================================================================

# The bundled default model (issue: default model) lives here; a run's model.keras
# or any other .keras file can be named instead.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.keras"


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file."""


def check_scale(scale) -> float:
    """A model's resize factor, validated: a number in [0.25, 4]."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a number, got {scale!r}") from None
    if not 0.25 <= value <= 4.0:
        raise ValueError(f"scale {value} is outside 0.25-4 (1 = the photo's own size)")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """What travels beside a model file in ``<name>.json``."""

    path: str = ""
    threshold: float = 0.5
    input_size: int = 256
    preset: str = ""
    source: str = ""
    scale: float = 1.0  # photos are resized by this before the model sees them (see Predictor)

    @classmethod
    def read(cls, model_path: Path) -> "ModelInfo":
        side = model_path.with_suffix(".json")
        data = {}
        if side.is_file():
            try:
                data = json.loads(side.read_text())
            except ValueError:
                data = {}
        known = {k: data[k] for k in ("threshold", "input_size", "preset", "source", "scale") if k in data}
        return cls(path=str(model_path), **known)


def model_info(model) -> ModelInfo:
    """The :class:`ModelInfo` of a model loaded by :func:`load_model` (defaults otherwise)."""
    return _INFO.get(model) or ModelInfo(input_size=_input_side(model))


_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _input_side(model) -> int:
    shape = model.input_shape
    return int(shape[1]) if shape and shape[1] else 256


def _policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def _rebuild(model):
    """A fresh copy of the network with the same weights, accepting any input size."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, None, None, model.input_shape[-1]]
        else:
            # A model trained under mixed precision is saved computing in float32: the
            # precision is chosen where it runs (see `with_precision`), not baked in.
            layer["config"]["dtype"] = _policy("float32")
    clean = keras.Model.from_config(config)
    clean.set_weights(model.get_weights())
    return clean


def with_precision(model, policy: str = "mixed_bfloat16"):
    """A copy of the model computing in another precision (weights shared by value).

    ``mixed_bfloat16`` halves the memory traffic and uses the bfloat16 units of recent
    CPUs (AVX512-BF16, AMX) and GPUs; the sigmoid output stays float32.
    """
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer" and layer["name"] != "damage":
            layer["config"]["dtype"] = _policy(policy)
    fast = keras.Model.from_config(config)
    fast.set_weights(model.get_weights())
    return fast


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def flexible(model):
    """The model itself if it accepts any input size, else a copy that does."""
    shape = model.input_shape
    return model if shape[1] is None and shape[2] is None else _rebuild(model)


def save_model(model, path: str | Path, **info) -> Path:
    """Save an inference copy (no optimizer state, any input size) and its ``.json`` sidecar, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = _rebuild(model)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    clean.save(tmp)
    os.replace(tmp, path)
    # A model from `load_model` keeps what its sidecar said (training size, threshold, ...):
    # its rebuilt network accepts any size, so the size cannot be read off it again.
    known = _INFO.get(model)
    meta = {"input_size": _input_side(model)} if known is None else {
        k: v for k, v in asdict(known).items() if k != "path" and v != ""}
    meta.update(info)
    side = path.with_suffix(".json")
    tmp_side = side.with_name(f".{side.name}.tmp")
    tmp_side.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_side, side)
    return path


def load_model(path: str | Path | None = None):
    """Load a saved U-Net with ``safe_mode=True`` (no code in the file is ever run).

    Args:
        path: a ``.keras`` file; None loads the bundled default model.

    Returns:
        The uncompiled ``keras.Model``; :func:`model_info` gives its threshold and size.

    Raises:
        ModelError: the file is missing, is not a Keras model, or carries code
            (a ``Lambda`` layer), which safe mode refuses.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        if path == DEFAULT_MODEL:
            raise ModelError(f"{path.name}: no bundled default model yet; train one or name a .keras file")
        raise ModelError(f"{path}: model file does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(f"{path.name}: not a Keras model file (.keras)")
    with zipfile.ZipFile(path) as zf:
        if "config.json" not in zf.namelist():
            raise ModelError(f"{path.name}: not a Keras model file (no config.json inside)")
    import keras

    from . import losses, metrics  # noqa: F401  registers the training objects

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; every one means "unusable file"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safe_mode" in text or "lambda" in text.lower():
            text = "it contains code (a Lambda layer), which is refused for safety"
        raise ModelError(f"{path.name}: cannot be loaded: {text}") from None
    info = ModelInfo.read(path)
    try:
        info = replace(info, scale=check_scale(info.scale))
    except ValueError as exc:
        raise ModelError(f"{path.with_suffix('.json').name}: {exc}") from None
    if not path.with_suffix(".json").is_file():
        info = replace(info, input_size=_input_side(model))
    model = flexible(model)
    _INFO[model] = info
    return model

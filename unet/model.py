"""The U-Net and its presets (Keras 3, backend-agnostic: keras.layers only).

The model takes uint8-range RGB (scaling to 0..1 happens inside, in a ``Rescaling``
layer) and returns a one-channel damage probability. It is fully convolutional: any
input whose sides are multiples of ``2 ** depth`` (16 for every preset) works at
prediction. It saves as ``.keras`` with built-in layers only, so it loads with
``safe_mode=True`` under any backend and without this package's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, UnetError

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
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


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


# The layer that stacks a deeply supervised training network's maps (the main one first).
DEEP_SUPERVISION = "deep_supervision"


def deeply_supervised(model):
    """The U-Net for training with deep supervision: one more probability map from each
    decoder level below the last (1/8, 1/4 and 1/2 of the input's side for depth 4), each
    from a 1x1 convolution of that level's features, upsampled bilinearly to the input's side.

    The maps are stacked as channels after the main one ((N, H, W, 1 + depth - 1), in the
    ``deep_supervision`` layer) for :class:`unet.losses.DeepSupervisionLoss`, which scores
    every map against the one mask; the pixel metrics read the first channel only. Each
    coarse map has to find the crack with the features of its level alone, which sends a
    direct gradient into the lower decoder (and, through the skips, the encoder) instead of
    one that passed through every level above it.

    The network shares ``model``'s layers, so training it trains ``model``; what is saved
    for prediction is :func:`main_network` of it: exactly ``model``'s architecture.
    """
    import keras
    from keras import layers

    depth = sum(1 for layer in model.layers if layer.name.startswith("up"))
    if depth < 2 or _deeply_supervised(model):
        raise ConfigError("deep supervision needs a U-Net of this package with two or more levels, "
                          "not yet deeply supervised")
    maps = [model.output]
    for level in range(depth, 1, -1):
        features = model.get_layer(f"up{level - 1}").input  # decoder level `level`'s output
        x = layers.Conv2D(1, 1, name=f"side{level}")(features)
        x = layers.UpSampling2D(2 ** (level - 1), interpolation="bilinear", name=f"side{level}_up")(x)
        maps.append(layers.Activation("sigmoid", dtype="float32", name=f"side{level}_prob")(x))
    stacked = layers.Concatenate(dtype="float32", name=DEEP_SUPERVISION)(maps)
    return keras.Model(model.input, stacked, name=model.name)


def main_network(model):
    """The prediction network inside a :func:`deeply_supervised` one (its main map only, the
    side heads left out), sharing its weights; any other network is returned as it is."""
    import keras

    if not _deeply_supervised(model):
        return model
    return keras.Model(model.input, model.get_layer("damage").output, name=model.name)


def _deeply_supervised(model) -> bool:
    return any(layer.name == DEEP_SUPERVISION for layer in model.layers)


# =================================================================================
# Saving and loading
# =================================================================================

# The bundled default model (issue: default model) lives here; a run's model.keras
# or any other .keras file can be named instead (model_path).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.keras"
# Bundled beside it: the recipe trained with sensor noise (models/MODEL_CARD.md, "Sensor noise in
# training"), for grainy, dim or JPEG-noisy photos and surveys that put recall first.
NOISE_ROBUST_MODEL = DEFAULT_MODEL.with_name("noise-robust.keras")
# The bundled models as the pickers offer them, the default first.
BUNDLED_MODELS = {"Bundled default model": DEFAULT_MODEL,
                  "Bundled noise-robust model (grainy, dim or JPEG-noisy photos)": NOISE_ROBUST_MODEL}


def model_path(name: str | Path | None) -> Path:
    """The file a model is named by: None is the bundled default model, a bundled model's bare
    name (``default``, ``noise-robust``) is that model from any folder, anything else a path."""
    if name is None:
        return DEFAULT_MODEL
    bundled = {path.stem: path for path in BUNDLED_MODELS.values()}
    return bundled[str(name)] if str(name) in bundled and not Path(name).exists() else Path(name)


class ModelError(UnetError, ValueError):
    """A model file (or its card) that cannot be used; the message names the file."""


AUTO = "auto"  # the scale chosen per photo from the width of its cracks (unet.predict.choose_scale)


def check_scale(scale) -> float | str:
    """A model's inference resize factor, validated: a number in [1/16, 4], or ``"auto"``."""
    if isinstance(scale, str) and scale.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be a number or 'auto', got {scale!r}") from None
    if not 0.0625 <= value <= 4.0:  # also refuses NaN
        raise ConfigError(f"scale {value} is outside 1/16-4 (1 = the photo's own size)")
    return value


def input_side(model) -> int:
    """The square input side a network was built for (256 when it takes any size)."""
    shape = model.input_shape
    return int(shape[1]) if shape and len(shape) > 1 and shape[1] else 256


def _policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def rebuilt(model):
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
    return inference_copy(model, policy, fold=False)


def inference_copy(model, policy: str = "float32", fold: bool = True):
    """A copy of the network for prediction only, computing in ``policy`` (the sigmoid output
    stays float32), with each batch normalization folded into the convolution before it.

    In inference a batch normalization is a fixed per-channel scale and shift, so a
    convolution followed by one and by a ReLU is one convolution with a bias and a ReLU:
    kernel x gamma / sqrt(variance + epsilon), bias beta - mean x that factor. The copy has
    half the layers of the `standard` preset (38 of 74) and gives the same probabilities
    (within 1e-8 in float32); a pass is 1.15x faster in float32 and 1.5x in bfloat16 on a
    2-core AVX512-BF16 CPU (docs/benchmarks.md). The model itself is not changed, so it can
    go on training; only a folded pattern (a Conv2D with no bias and no activation whose one
    consumer is the batch normalization, whose one consumer is a ReLU) is rewritten. When
    nothing would change (no such pattern, every layer already in ``policy``), the model itself.
    """
    import keras
    import numpy as np

    config = model.get_config()
    layers = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for source in _sources(layer):
            consumers.setdefault(source, []).append(layer["name"])
    renamed, dropped, folded = {}, set(), {}
    for layer in config["layers"] if fold else []:
        sources = _sources(layer)
        if layer["class_name"] != "BatchNormalization" or len(sources) != 1:
            continue
        conv, after = layers[sources[0]], consumers.get(layer["name"], [])
        if (conv["class_name"] != "Conv2D" or conv["config"]["use_bias"] or conv["config"]["activation"] != "linear"
                or consumers[conv["name"]] != [layer["name"]] or len(after) != 1
                or layers[after[0]]["class_name"] != "Activation" or layers[after[0]]["config"]["activation"] != "relu"):
            continue
        conv["config"].update(use_bias=True, activation="relu")
        folded[conv["name"]] = layer["name"]
        dropped |= {layer["name"], after[0]}
        renamed[after[0]] = conv["name"]
    computing = [layer for layer in config["layers"] if layer["class_name"] != "InputLayer"
                 and layer["name"] != "damage" and layer["name"] not in dropped]
    if not folded and all(_policy_name(layer["config"].get("dtype")) == policy for layer in computing):
        return model  # nothing would change (no batch norm, already in that precision): no copy to build
    for layer in computing:
        layer["config"]["dtype"] = _policy(policy)
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in dropped]
    _rename_inputs(config, renamed)
    copy = keras.Model.from_config(config)
    for layer in copy.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name in folded:
            norm = model.get_layer(folded[layer.name])
            gamma, beta, mean, variance = (w.astype(np.float64) for w in norm.get_weights())
            factor = gamma / np.sqrt(variance + norm.epsilon)
            weights = [(weights[0] * factor).astype(np.float32), (beta - mean * factor).astype(np.float32)]
        if weights:
            layer.set_weights(weights)
    return copy


def _policy_name(dtype) -> str | None:
    """The policy name a layer config's ``dtype`` entry gives (a serialized policy or a name)."""
    if isinstance(dtype, dict):
        return (dtype.get("config") or {}).get("name")
    return dtype if isinstance(dtype, str) else None


def _tensor_refs(obj):
    """Each serialized tensor reference (a dict with a ``keras_history``) in a layer's config."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            yield obj
        for value in obj.values():
            yield from _tensor_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensor_refs(value)


def _sources(layer: dict) -> list[str]:
    """The names of the layers whose outputs a layer's config takes."""
    return [ref["keras_history"][0] for ref in _tensor_refs(layer.get("inbound_nodes", []))]


def _rename_inputs(config: dict, renamed: dict) -> None:
    """Point every reference to a removed layer's output at the layer that replaces it."""
    for layer in config["layers"]:
        for ref in _tensor_refs(layer.get("inbound_nodes", [])):
            name, *rest = ref["keras_history"]
            ref["keras_history"] = [renamed.get(name, name), *rest]
    for key in ("output_layers", "input_layers"):
        refs = config.get(key)
        if refs and isinstance(refs[0], (list, tuple)):
            config[key] = [[renamed.get(r[0], r[0]), *r[1:]] for r in refs]
        elif refs:
            config[key] = [renamed.get(refs[0], refs[0]), *refs[1:]]


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
    return model if shape[1] is None and shape[2] is None else rebuilt(model)


def save_model(model, path: str | Path, **card) -> Path:
    """Save an inference copy (no optimizer state, any input size) and its card, atomically.

    ``model`` is a Keras network or a :class:`~unet.DamageModel` (whose card is kept);
    ``card`` changes card fields (threshold, preset, source, scale...).
    """
    from .damage_model import DamageModel

    return DamageModel.of(model).save(path, **card)


def load_model(path: str | Path | None = None):
    """Load a saved U-Net with ``safe_mode=True`` (no code in the file is ever run).

    Args:
        path: a ``.keras`` file, or a bundled model's name (``default``, ``noise-robust``);
            None loads the bundled default model.

    Returns:
        A :class:`~unet.DamageModel`: the network with its card (threshold, training
        size, scale) and predictor.

    Raises:
        ModelError: the file is missing, is not a Keras model, carries code (a
            ``Lambda`` layer), or its card is corrupt or out of range.
    """
    from .damage_model import DamageModel

    return DamageModel.load(path)


def model_info(model):
    """The :class:`~unet.damage_model.ModelCard` of a model (one read off the network for a bare one)."""
    from .damage_model import DamageModel

    return DamageModel.of(model).card

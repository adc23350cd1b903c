"""DamageModel: one owner for a network, its card, its inference copy and its predictor."""

import json
import math

import numpy as np
import pytest

from conftest import rgb
from unet.damage_model import DamageModel, ModelCard
from unet.model import ModelError, build_unet, save_model


@pytest.fixture()
def saved(tmp_path):
    return save_model(build_unet("tiny", 64), tmp_path / "m.keras", threshold=0.4, preset="tiny", source="test")


def test_load_gives_the_network_its_card_and_one_predictor(saved):
    model = DamageModel.load(saved, precision="float32")
    assert (model.threshold, model.input_size, model.scale, model.card.preset) == (0.4, 64, 1.0, "tiny")
    assert model.path == saved
    image = rgb(70, 90)
    seg = model.segment(image)
    assert seg.threshold == 0.4 and seg.mask.shape == (70, 90)
    # options are per call; the predictor (and its compiled graph) is built once
    first = model.predictor
    careful = model.segment(image, threshold=0.3, flips=True, scale=0.5)
    assert model.predictor is first and careful.threshold == 0.3
    assert not np.allclose(careful.probability, seg.probability)
    # the Keras network's own API still answers (code written for earlier load_model)
    assert model.count_params() == model.network.count_params()


def test_update_card_writes_atomically_and_keeps_unknown_keys(saved):
    side = saved.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "notes": "wall survey 12"}))
    model = DamageModel.load(saved, precision="float32")
    model.update_card(threshold=0.25, scale=0.75, calibration={"mean_f1": 0.5})
    card = json.loads(side.read_text())
    assert (card["threshold"], card["scale"], card["calibration"], card["notes"]) == (0.25, 0.75, {"mean_f1": 0.5},
                                                                                      "wall survey 12")
    assert not list(saved.parent.glob(".*tmp*"))
    assert model.segment(rgb(32, 32)).threshold == 0.25 and model.predictor.scale == 0.75
    with pytest.raises(ModelError, match="threshold"):
        model.update_card(threshold=2)
    assert json.loads(side.read_text())["threshold"] == 0.25  # a refused change writes nothing


@pytest.mark.parametrize("field, value, message", [
    ("threshold", 2, "threshold must be a number between 0 and 1"),
    ("threshold", -5, "threshold"),
    ("threshold", "abc", "threshold"),
    ("threshold", math.nan, "threshold"),
    ("input_size", 1e9, "input_size"),
    ("input_size", 100, "input_size"),
    ("scale", 0.01, "scale"),
])
def test_an_out_of_range_card_is_refused_naming_the_file(saved, field, value, message):
    side = saved.with_suffix(".json")
    card = json.loads(side.read_text())
    card[field] = value
    side.write_text(json.dumps(card))  # NaN is written as the bare NaN JSON readers accept
    with pytest.raises(ModelError, match=rf"m\.json: .*{message}"):
        DamageModel.load(saved)


def test_a_corrupt_card_is_refused_naming_it(saved):
    saved.with_suffix(".json").write_text('{"threshold": 0.4, "inpu')
    with pytest.raises(ModelError, match=r"m\.json: the model card is not valid JSON"):
        DamageModel.load(saved)
    saved.with_suffix(".json").write_text("[1]")
    with pytest.raises(ModelError, match=r"m\.json: a model card is a JSON object"):
        DamageModel.load(saved)


def test_a_model_without_a_card_uses_its_own_size(tmp_path):
    path = tmp_path / "m.keras"
    build_unet("tiny", 96).save(path)  # plain Keras: a fixed input size and no card
    model = DamageModel.load(path)
    assert model.card == ModelCard(input_size=96)


def _save_plain(model, path):
    model.save(path)
    return path


def test_models_that_are_not_damage_segmenters_are_refused_in_one_line(tmp_path):
    import keras
    from keras import layers

    dense = keras.Sequential([keras.Input((32,)), layers.Dense(2, activation="softmax")])
    gray = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(1, 3, padding="same",
                                                                          activation="sigmoid")])
    three = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(3, 3, padding="same",
                                                                           activation="sigmoid")])
    valid = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(1, 3, padding="valid",
                                                                           activation="sigmoid")])
    linear = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(1, 1, padding="same",
                                                                            bias_initializer=keras.initializers.Constant(3.0))])
    cases = {"dense": (dense, "not an image segmentation model"), "gray": (gray, "1-channel images"),
             "three": (three, "3 channels per pixel"), "valid": (valid, "not the size of its input"),
             "linear": (linear, "not a probability")}
    for name, (net, message) in cases.items():
        path = _save_plain(net, tmp_path / f"{name}.keras")
        with pytest.raises(ModelError, match=message) as err:
            DamageModel.load(path)
        text = str(err.value)
        assert text.startswith(f"{name}.keras: ") and "\n" not in text and "\x1b" not in text


def test_nan_weights_are_refused(tmp_path):
    net = build_unet("tiny", 64)
    weights = net.get_weights()
    weights[0][...] = np.nan
    net.set_weights(weights)
    path = save_model(net, tmp_path / "nan.keras")
    with pytest.raises(ModelError, match="NaN or infinite"):
        DamageModel.load(path)


def test_saving_keeps_the_card_and_changes_win(saved, tmp_path):
    model = DamageModel.load(saved)
    again = DamageModel.load(model.save(tmp_path / "copy.keras", scale=0.5))
    assert (again.threshold, again.input_size, again.scale, again.card.source) == (0.4, 64, 0.5, "test")


def test_a_bare_network_is_used_as_it_is_unless_it_is_built_smaller_than_a_tile():
    """segment(network, photo) wraps a bare network per call: copying it each time would
    rebuild and recompile it on every photo (measured 0.36 s -> 1.15 s for the seed at 256)."""
    seed = build_unet("tiny", 256)
    assert DamageModel.of(seed).network is seed
    free = build_unet("tiny", None)
    assert DamageModel.of(free).network is free
    small = build_unet("tiny", 64)  # its 256 px tiles need the any-size copy
    wrapped = DamageModel.of(small)
    assert wrapped.network is not small and wrapped.network.input_shape[1] is None
    assert wrapped.segment(rgb(100, 120)).mask.shape == (100, 120)

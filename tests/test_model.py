import numpy as np
import pytest

from conftest import rgb
from unet.model import PRESETS, ModelError, build_unet, load_model, model_info, save_model


def test_seed_preset_reproduces_the_original_architecture():
    model = build_unet("seed", 256)
    assert model.count_params() == 7_251_057
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    assert [c.filters for c in convs[:8:2]] == [16, 32, 64, 128]
    assert [c.filters for c in convs[8:14:2]] == [256, 512, 256]
    assert all(c.kernel_size == (3, 3) for c in convs[:-1])
    assert all(c.kernel_initializer.__class__.__name__ == "HeNormal" for c in convs[:-1])
    drops = [l.rate for l in model.layers if type(l).__name__ == "Dropout"]
    assert drops == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1]
    ups = [l for l in model.layers if type(l).__name__ == "Conv2DTranspose"]
    assert [(u.filters, u.strides) for u in ups] == [(128, (2, 2)), (64, (2, 2)), (32, (2, 2)), (16, (2, 2))]
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert not any(type(l).__name__ == "Lambda" for l in model.layers)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_maps_uint8_rgb_to_probabilities(preset):
    model = build_unet(preset, 64)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    y = np.asarray(model.predict_on_batch(x))
    assert y.shape == (2, 64, 64, 1)
    assert y.dtype == np.float32 and 0.0 <= y.min() and y.max() <= 1.0


def test_fully_convolutional_on_any_multiple_of_16(tiny_model):
    y = np.asarray(tiny_model.predict_on_batch(np.zeros((1, 96, 160, 3), "uint8")))
    assert y.shape == (1, 96, 160, 1)


def test_input_size_must_be_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        build_unet("tiny", 100)


def test_one_training_step_changes_weights_and_gives_finite_loss():
    from unet.losses import get_loss

    model = build_unet("tiny", 64)
    model.compile(optimizer="adam", loss=get_loss("bce_dice"))
    x = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype("uint8")
    y = (np.random.default_rng(2).random((4, 64, 64, 1)) > 0.9).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_save_load_round_trip_under_safe_mode(tmp_path):
    model = build_unet("tiny", 64)
    path = save_model(model, tmp_path / "m.keras", threshold=0.6, preset="tiny")
    loaded = load_model(path)
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3)).astype("uint8")
    np.testing.assert_allclose(model.predict_on_batch(x), loaded.predict_on_batch(x), atol=1e-6)
    info = model_info(loaded)
    assert (info.threshold, info.preset, info.input_size) == (0.6, "tiny", 64)
    # saved for any size: a 96x128 photo runs through the 64-trained model
    assert loaded.predict_on_batch(np.zeros((1, 96, 128, 3), "uint8")).shape == (1, 96, 128, 1)


def test_resaving_a_loaded_model_keeps_its_training_size_and_threshold(tmp_path):
    # A loaded model accepts any size, so its training size (the tile it predicts in)
    # lives only in the sidecar; saving it again must carry it, or it would predict in
    # the wrong tiles at the wrong threshold.
    first = save_model(build_unet("tiny", 64), tmp_path / "a.keras", threshold=0.6, preset="tiny")
    again = model_info(load_model(save_model(load_model(first), tmp_path / "b.keras")))
    assert (again.input_size, again.threshold, again.preset) == (64, 0.6, "tiny")
    # a value given when saving still wins
    third = model_info(load_model(save_model(load_model(first), tmp_path / "c.keras", threshold=0.4)))
    assert (third.input_size, third.threshold) == (64, 0.4)


def test_a_model_trained_in_mixed_precision_is_saved_computing_in_float32(tmp_path):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_unet("tiny", 64)
        assert model.layers[2].dtype_policy.name == "mixed_bfloat16"
        path = save_model(model, tmp_path / "m.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = load_model(path)
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    x = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3)).astype("uint8")
    # same weights; float32 compute differs from the bfloat16 original only by rounding
    np.testing.assert_allclose(model.predict_on_batch(x), loaded.predict_on_batch(x), atol=0.05)


def test_model_with_lambda_layer_is_refused(tmp_path):
    import keras

    inp = keras.Input((16, 16, 3))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    keras.Model(inp, out).save(tmp_path / "evil.keras")
    with pytest.raises(ModelError, match="evil.keras"):
        load_model(tmp_path / "evil.keras")


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_non_model_files_are_refused_with_the_file_name(tmp_path, content):
    bad = tmp_path / "weights.keras"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="weights.keras"):
        load_model(bad)


def test_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.keras")


def _with_learnt_statistics(model, seed: int = 1):
    """Batch norms as training leaves them (not the identity a fresh model starts as), so a
    folding that got the scale, shift or epsilon wrong changes the output."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.7, 1.4, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.3, 2.0, n)])
    return model


@pytest.mark.parametrize("preset", ["standard", "lite"])
def test_the_inference_copy_folds_batch_norms_and_gives_the_same_map(preset):
    from unet.model import inference_copy

    model = _with_learnt_statistics(build_unet(preset, None))
    before = [w.copy() for w in model.get_weights()]
    copy = inference_copy(model)
    kinds = [type(l).__name__ for l in copy.layers]
    assert "BatchNormalization" not in kinds and "Activation" not in kinds
    assert len(copy.layers) < len(model.layers) * 0.6
    x = np.random.default_rng(0).integers(0, 256, (2, 96, 160, 3)).astype("uint8")
    want, got = np.asarray(model.predict_on_batch(x)), np.asarray(copy.predict_on_batch(x))
    assert got.shape == want.shape == (2, 96, 160, 1)
    assert np.abs(got - want).max() < 1e-4 and want.std() > 1e-3  # a map that varies, reproduced
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the model itself untouched


def test_the_inference_copy_in_bfloat16_keeps_a_float32_output_and_leaves_unfoldable_layers():
    from unet.model import inference_copy

    seed = build_unet("seed", None)  # no batch norm: nothing to fold, the same layers
    assert inference_copy(seed) is seed  # nothing to change in float32: no copy built
    copy = inference_copy(seed, "mixed_bfloat16")
    assert [l.name for l in copy.layers] == [l.name for l in seed.layers]
    assert copy.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3)).astype("uint8")
    out = copy.predict_on_batch(x)
    assert out.dtype == np.float32
    assert np.abs(out - seed.predict_on_batch(x)).max() < 0.02


def test_the_predictor_runs_the_folded_copy():
    from unet.damage_model import DamageModel

    model = _with_learnt_statistics(build_unet("standard", None))
    dm = DamageModel(model, precision="float32")
    assert not any(type(l).__name__ == "BatchNormalization" for l in dm.predictor.model.layers)
    photo = rgb(192, 320, 2)  # runs whole, unpadded; a photo's grain, seen as it is
    direct = np.asarray(model.predict_on_batch(photo[None]))[0, ..., 0]
    assert direct.std() > 1e-3 and np.abs(dm.probability(photo, scale=1.0) - direct).max() < 1e-4


def test_a_deeply_supervised_network_trains_the_plain_one_and_gives_it_back(tmp_path):
    """Deep supervision adds side maps for training only: the main map is the plain network's,
    a training step moves the plain network's weights, and what is saved is that network."""
    from unet.losses import get_loss
    from unet.model import DEEP_SUPERVISION, deeply_supervised, main_network

    plain = build_unet("tiny", 64)
    deep = deeply_supervised(plain)
    assert deep.output_shape == (None, 64, 64, 4)  # the main map and levels 4, 3 and 2's
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    maps = np.asarray(deep.predict_on_batch(x))
    np.testing.assert_array_equal(maps[..., :1], plain.predict_on_batch(x))
    assert maps.min() >= 0 and maps.max() <= 1
    assert not np.allclose(maps[..., 1], maps[..., 0])
    deep.compile("adam", get_loss("bce_dice", deep_supervision=True))
    before = [w.copy() for w in plain.get_weights()]
    deep.train_on_batch(x, (np.random.default_rng(1).random((2, 64, 64, 1)) > 0.9).astype("float32"))
    assert any(not np.allclose(a, b) for a, b in zip(before, plain.get_weights()))
    back = main_network(deep)
    assert [layer.name for layer in back.layers] == [layer.name for layer in plain.layers]
    assert main_network(plain) is plain
    # a checkpoint of the training network loads as the plain model, for any size
    deep.save(tmp_path / "checkpoint.keras")
    loaded = load_model(tmp_path / "checkpoint.keras")
    assert DEEP_SUPERVISION not in {layer.name for layer in loaded.network.layers}
    np.testing.assert_allclose(loaded.predict_on_batch(x), plain.predict_on_batch(x), atol=1e-6)
    from unet.errors import ConfigError

    with pytest.raises(ConfigError, match="already|two or more"):
        deeply_supervised(deep)

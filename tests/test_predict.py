"""Overlap-tile prediction: exact where one tile suffices, seamless where it does not."""

import numpy as np
import pytest

from conftest import rgb
from unet.predict import Predictor, heatmap, overlay, predict_files, predictor, segment


def _smooth_photo(h, w, seed=0):
    """A photo with structure at all scales (not white noise), so seams would show."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    return np.clip(base + np.random.default_rng(seed + 1).integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def test_one_tile_equals_whole_image_prediction(tiny_model):
    image = rgb(256, 256)
    whole = np.asarray(tiny_model.predict_on_batch(image[None]))[0, ..., 0]
    seg = Predictor(tiny_model, precision="float32").segment(image, threshold=0.5)
    np.testing.assert_allclose(seg.probability, whole, atol=1e-5)
    assert seg.mask.dtype == bool and seg.mask.shape == (256, 256)
    assert seg.damaged_pct == pytest.approx(100 * (whole >= 0.5).mean())


def test_small_and_odd_sizes_come_back_at_their_own_resolution(tiny_model):
    for h, w in [(1, 1), (37, 53), (300, 17)]:
        seg = segment(tiny_model, rgb(h, w))
        assert seg.probability.shape == seg.mask.shape == (h, w)


def test_large_photo_has_no_seams(tiny_model):
    h, w = 704, 928  # several tiles each way, sides not multiples of the stride
    image = _smooth_photo(h, w)
    pred = Predictor(tiny_model, tile=256, precision="float32")
    tiled = pred.probability(image)
    whole = np.asarray(tiny_model.predict_on_batch(np.pad(image, ((0, 0), (0, 0), (0, 0)))[None]))[0, ..., 0]
    assert tiled.shape == (h, w)
    # Close to the whole-photo prediction of this fully convolutional model...
    assert np.mean(np.abs(tiled - whole)) < 0.02
    # ...and no jump where tiles meet: the step across every tile border is no larger
    # than the steps elsewhere in the photo.
    steps_x = np.abs(np.diff(tiled, axis=1))
    stride = pred.tile - 2 * pred.margin
    borders = [x for x in range(stride, w, stride)]
    border_steps = steps_x[:, [b - 1 for b in borders if b - 1 < steps_x.shape[1]]]
    assert border_steps.mean() <= 1.5 * steps_x.mean() + 1e-6
    assert border_steps.max() <= steps_x.max() + 1e-6


def test_threshold_changes_mask_without_recomputing(tiny_model):
    seg = segment(tiny_model, rgb(64, 64, 1), threshold=0.5)
    low, high = seg.at(0.01), seg.at(0.99)
    assert low.damaged_pct >= seg.damaged_pct >= high.damaged_pct
    assert low.probability is seg.probability


def test_overlay_and_heatmap():
    image = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    out = overlay(image, mask)
    assert out[0, 0, 0] > 150 and (out[1:, 1:] == 100).all()
    heat = heatmap(np.array([[0.0, 1.0]], np.float32))
    assert heat.shape == (1, 2, 3) and heat[0, 1].sum() > heat[0, 0].sum()


def test_predict_files_writes_outputs_and_keeps_going_after_a_bad_file(tiny_model, tmp_path):
    from PIL import Image

    Image.fromarray(rgb(40, 60)).save(tmp_path / "a.png")
    Image.fromarray(rgb(30, 20)).save(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_text("<html>")
    out = tmp_path / "out"
    rows = predict_files(tiny_model, [tmp_path], out)
    by = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert by["c.png"]["error"] and not by["a.png"]["error"]
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    assert (out / "b_overlay.png").exists() and (out / "results.csv").read_text().startswith("file,damaged_pct,error")


def test_batch_path_equals_one_by_one(tiny_model):
    pred = Predictor(tiny_model, tile=256, batch_size=4)
    images = [rgb(256, 256, i) for i in range(5)] + [rgb(100, 60, 9), rgb(300, 280, 10)]
    many = pred.segment_many(images, threshold=0.5)
    for image, seg in zip(images, many):
        one = pred.segment(image, threshold=0.5)
        np.testing.assert_allclose(seg.probability, one.probability, atol=1e-5)
        assert seg.mask.shape == image.shape[:2]


def test_default_pass_size_shrinks_with_the_tile_and_changes_nothing_but_speed(tiny_model):
    image = _smooth_photo(420, 500, seed=3)
    big = Predictor(tiny_model, tile=384, precision="float32")
    assert big.batch_size == 1 and Predictor(tiny_model, tile=256).batch_size == 4
    forced = Predictor(tiny_model, tile=384, batch_size=4, precision="float32")
    np.testing.assert_allclose(big.probability(image), forced.probability(image), atol=1e-5)


def test_careful_mode_averages_mirror_images(tiny_model):
    # Averaged over all four mirror images, the answer no longer depends on which way round
    # the photo is: the mirrored photo's map is the mirror of the photo's map. Tiled too.
    image = _smooth_photo(300, 416, seed=5)
    careful = Predictor(tiny_model, tile=256, precision="float32", flips=True)
    plain = Predictor(tiny_model, tile=256, precision="float32")
    prob = careful.probability(image)
    np.testing.assert_allclose(careful.probability(image[:, ::-1])[:, ::-1], prob, atol=1e-5)
    np.testing.assert_allclose(careful.probability(image[::-1])[::-1], prob, atol=1e-5)
    assert not np.allclose(plain.probability(image[:, ::-1])[:, ::-1], plain.probability(image), atol=1e-3)
    # the shared careful predictor reuses the plain one's model copy (no second build)
    assert predictor(tiny_model, flips=True).model is predictor(tiny_model).model
    assert predictor(tiny_model, flips=True).flips and not predictor(tiny_model).flips
    small = [rgb(100, 60, 9), rgb(256, 256, 1)]  # the batch path too
    for image, seg in zip(small, careful.segment_many(small, threshold=0.5)):
        np.testing.assert_allclose(seg.probability, careful.probability(image), atol=1e-5)


def test_bfloat16_copy_agrees_with_float32(tiny_model):
    image = rgb(128, 128, 3)
    full = Predictor(tiny_model, tile=128).probability(image)
    half = Predictor(tiny_model, tile=128, precision="bfloat16").probability(image)
    assert half.dtype == np.float32
    assert np.mean(np.abs(full - half)) < 0.01


def test_precision_follows_the_environment(monkeypatch):
    from unet.model import cpu_has_bf16
    from unet.predict import default_precision

    monkeypatch.setenv("UNET_PRECISION", "float32")
    assert default_precision() == "float32"
    monkeypatch.setenv("UNET_PRECISION", "bfloat16")
    assert default_precision() == "bfloat16"
    monkeypatch.delenv("UNET_PRECISION")
    assert default_precision() in ("float32", "bfloat16")
    if not cpu_has_bf16():
        assert default_precision() == "float32"


def test_scale_resizes_the_photo_for_the_model_and_the_map_back(tiny_model):
    from PIL import Image

    image = _smooth_photo(300, 420, seed=7)
    half = Predictor(tiny_model, tile=256, precision="float32", scale=0.5)
    same = Predictor(tiny_model, tile=256, precision="float32")
    prob = half.probability(image)
    assert prob.shape == image.shape[:2] and prob.dtype == np.float32
    # exactly: the model's map of the half-size photo, resized back to the photo's size
    small = np.asarray(Image.fromarray(image).resize((210, 150), Image.BILINEAR))
    expected = np.asarray(Image.fromarray(same.probability(small), "F").resize((420, 300), Image.BILINEAR))
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    assert not np.allclose(prob, same.probability(image), atol=1e-3)
    # the batch path and careful mode follow the scale too
    photos = [rgb(100, 60, 9), image]
    for photo, seg in zip(photos, half.segment_many(photos, threshold=0.5)):
        np.testing.assert_allclose(seg.probability, half.probability(photo), atol=1e-5)
        assert seg.mask.shape == photo.shape[:2]
    careful = half.careful()
    assert careful.scale == 0.5
    # another scale on the shared predictor reuses its model copy and leaves it unchanged
    assert predictor(tiny_model, scale=0.5).model is predictor(tiny_model).model
    assert predictor(tiny_model, scale=0.5).scale == 0.5 and predictor(tiny_model).scale == 1.0
    assert predictor(tiny_model, flips=True, scale=0.5).flips
    np.testing.assert_allclose(careful.probability(image[:, ::-1])[:, ::-1], careful.probability(image), atol=1e-5)


def test_a_model_card_scale_is_used_and_a_bad_one_is_refused_naming_the_file(tiny_model, tmp_path):
    from unet.model import ModelError, load_model, model_info, save_model

    path = save_model(tiny_model, tmp_path / "m.keras", threshold=0.4, scale=0.75)
    model = load_model(path)
    assert model_info(model).scale == 0.75
    assert Predictor(model).scale == 0.75 and Predictor(model, scale=1).scale == 1.0
    again = save_model(model, tmp_path / "copy.keras")  # re-saving keeps the scale
    assert model_info(load_model(again)).scale == 0.75
    for bad in ("0.1", '"big"'):
        side = path.with_suffix(".json")
        side.write_text(side.read_text().replace('"scale": 0.75', f'"scale": {bad}'))
        with pytest.raises(ModelError, match=r"m\.json: scale"):
            load_model(path)
        side.write_text(side.read_text().replace(f'"scale": {bad}', '"scale": 0.75'))

"""Overlap-tile prediction: exact where one tile suffices, seamless where it does not."""

from pathlib import Path

import numpy as np
import pytest

from conftest import rgb, sharp_scene
from unet.damage_model import DamageModel
from unet.predict import Predictor, heatmap, mirror_pad, overlay, predict_files, segment


def _smooth_photo(h, w, seed=0):
    """A photo with structure at all scales (not white noise), so seams would show, smooth and at
    sharp edges (a smooth field alone reads as out of focus); its grain (+-8) is within the
    training photos' noise: the model sees it as it is."""
    from PIL import Image

    small = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8))
    base = (np.asarray(small.resize((w, h), Image.BICUBIC)).astype(np.int16)
            + np.asarray(small.resize((w, h), Image.NEAREST)).astype(np.int16)) // 2
    return np.clip(base + np.random.default_rng(seed + 1).integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)


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
    # sides are multiples of 16: the fully convolutional model also takes the photo whole
    whole = np.asarray(tiny_model.predict_on_batch(image[None]))[0, ..., 0]
    assert tiled.shape == (h, w)
    # Close to the whole-photo prediction of this fully convolutional model...
    dev = np.abs(tiled - whole)
    assert dev.mean() < 0.02
    # ...and no jump where tiles meet: across the columns where one tile's centre hands
    # over to the next, the step is no larger than elsewhere, and the map is no further
    # from the whole-photo one there than it is on average.
    steps_x = np.abs(np.diff(tiled, axis=1))
    stride = pred.tile - 2 * pred.margin
    seams = [x - 1 for x in range(stride, w - 1, stride)]
    others = np.setdiff1d(np.arange(steps_x.shape[1]), seams)
    assert len(seams) >= 3
    assert steps_x[:, seams].mean() <= 1.5 * steps_x[:, others].mean() + 1e-6
    assert dev[:, seams].mean() <= 2 * dev.mean() + 1e-3


def test_tiles_blend_to_the_weighted_mean_of_their_maps(tiny_model):
    """The moving band and the separable weights give exactly the plain weighted mean of every
    tile's map, each weighted by its window, over the photo mirrored at its edges."""
    from unet.predict import _ramp, _starts, model_view

    h, w = 300, 520
    image = _smooth_photo(h, w, seed=3)
    assert model_view(image) is image  # the model sees the photo as it is
    pred = Predictor(tiny_model, tile=128, precision="float32")
    t, m = pred.tile, pred.margin
    ph, pw = h + 2 * m, w + 2 * m
    virtual = np.pad(image, ((m, m), (m, m), (0, 0)), mode="symmetric")
    window = np.outer(_ramp(t, m), _ramp(t, m)).astype(np.float64)
    acc, weight = np.zeros((ph, pw)), np.zeros((ph, pw))
    ys, xs = _starts(ph, t, t - 2 * m), _starts(pw, t, t - 2 * m)
    assert len(ys) >= 3 and len(xs) >= 5
    for y in ys:
        for x in xs:
            acc[y : y + t, x : x + t] += pred.forward(virtual[y : y + t, x : x + t][None])[0] * window
            weight[y : y + t, x : x + t] += window
    expected = (acc / weight)[m : m + h, m : m + w]
    np.testing.assert_allclose(pred.probability(image), expected, atol=2e-5)
    # A pass that holds several rows of tiles (a GPU's) gets them together: full passes, same map.
    wide = Predictor(tiny_model, tile=128, batch_size=2 * len(xs), precision="float32")
    shapes = _recording(wide)
    try:
        np.testing.assert_allclose(wide.probability(image), expected, atol=2e-5)
    finally:
        del wide.model.predict_on_batch
    assert len(shapes) == -(-len(ys) // 2) and shapes[0][0] == 2 * len(xs)  # two rows a pass (one pass each before)


def test_border_tiles_are_the_photo_mirrored_at_its_edges():
    from unet.predict import _mirror_index, _mirror_tile

    rng = np.random.default_rng(0)
    for h, w, t in [(300, 520, 128), (40, 90, 64), (5, 7, 32)]:  # the last mirrored several times over
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for y in (-t // 2, -3, 0, h // 3, h - t + 5, h - 1):
            for x in (-t // 2, -1, 0, w // 2, w - t + 9):
                expected = image[np.ix_(_mirror_index(y, t, h), _mirror_index(x, t, w))]
                np.testing.assert_array_equal(_mirror_tile(image, y, x, t), expected, err_msg=f"{h}x{w} at {y},{x}")
    far = np.pad(image, ((0, 64), (0, 64), (0, 0)), mode="symmetric")  # numpy's own mirror agrees
    np.testing.assert_array_equal(_mirror_tile(image, 0, 0, 64), far[:64, :64])


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
    # every pixel value and a damaged share of a photo: the tint formula, exactly, and nothing else touched
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    photo[0, :, :] = np.arange(40)[:, None] * 6 + np.arange(3)  # values across the range
    damaged = rng.random((30, 40)) < 0.3
    damaged[0] = True
    expected = photo.astype(np.float32)
    expected[damaged] = 0.45 * expected[damaged] + 0.55 * np.array([255, 32, 32], np.float32)
    np.testing.assert_array_equal(overlay(photo, damaged), expected.astype(np.uint8))
    assert overlay(photo, damaged).flags.c_contiguous and photo[0, 1, 0] == 6  # the photo itself unchanged
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
    # careful mode is an option of each call: one DamageModel, one predictor, either mode
    owner = DamageModel(tiny_model, precision="float32")  # its predictor chooses the tile itself
    np.testing.assert_allclose(owner.probability(image, flips=True),
                               Predictor(tiny_model, precision="float32", flips=True).probability(image), atol=1e-5)
    np.testing.assert_allclose(owner.probability(image), Predictor(tiny_model, precision="float32").probability(image),
                               atol=1e-5)
    assert owner.predictor is owner.predictor and not owner.predictor.flips
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
    from unet.devices import detect_hardware

    has_gpu = any(d["kind"] == "GPU" for d in detect_hardware())
    assert default_precision() == ("bfloat16" if cpu_has_bf16() and not has_gpu else "float32")


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
    # the scale is also an option of each call, which leaves the predictor's own unchanged
    np.testing.assert_allclose(same.probability(image, scale=0.5), prob, atol=1e-5)
    assert same.scale == 1.0
    careful = half.probability(image, flips=True)
    np.testing.assert_allclose(half.probability(image[:, ::-1], flips=True)[:, ::-1], careful, atol=1e-5)


def test_a_model_card_scale_is_used_and_a_bad_one_is_refused_naming_the_file(tiny_model, tmp_path):
    from unet.model import ModelError, load_model, model_info, save_model

    path = save_model(tiny_model, tmp_path / "m.keras", threshold=0.4, scale=0.75)
    model = load_model(path)
    assert model_info(model).scale == 0.75
    assert Predictor(model).scale == 0.75 and Predictor(model, scale=1).scale == 1.0
    again = save_model(model, tmp_path / "copy.keras")  # re-saving keeps the scale
    assert model_info(load_model(again)).scale == 0.75
    for bad in ("0.01", '"big"'):
        side = path.with_suffix(".json")
        side.write_text(side.read_text().replace('"scale": 0.75', f'"scale": {bad}'))
        with pytest.raises(ModelError, match=r"m\.json: scale"):
            load_model(path)
        side.write_text(side.read_text().replace(f'"scale": {bad}', '"scale": 0.75'))


def _photo(path, h, w, seed=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb(h, w, seed)).save(path)
    return path


def test_output_names_are_unambiguous_and_each_row_names_its_files(tiny_model, tmp_path):
    import csv

    from PIL import Image

    d = tmp_path / "d"
    sizes = {"x.png": (20, 30), "x_2.png": (24, 36), "d2/x.png": (28, 40), "x.jpg": (32, 44)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        _photo(d / name, h, w, i)
    out = tmp_path / "out"
    predict_files(tiny_model, [d], out)
    rows = {Path(r["file"]).relative_to(d).as_posix(): r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == set(sizes)
    # x.jpg sorts first and keeps the plain name; x.png beside it gets its extension added
    assert {k: r["mask"] for k, r in rows.items()} == {"x.jpg": "x_mask.png", "x.png": "x_png_mask.png",
                                                        "x_2.png": "x_2_mask.png", "d2/x.png": "d2__x_mask.png"}
    for name, (h, w) in sizes.items():  # each output really belongs to its row's photo
        with Image.open(out / rows[name]["mask"]) as m, Image.open(out / rows[name]["overlay"]) as o:
            assert m.size == o.size == (w, h)


def test_outputs_never_replace_an_input_and_reruns_do_not_feed_on_outputs(tiny_model, tmp_path):
    import csv

    f = tmp_path / "f"
    _photo(f / "wall.png", 40, 40)
    _photo(f / "beam.png", 40, 40, 1)
    truth = _photo(f / "wall_mask.png", 40, 40, 2)  # a dataset's own mask, named as our output would be
    kept = truth.read_bytes()
    for _ in range(2):  # the second run finds the first run's outputs in the folder
        rows = predict_files(tiny_model, [f], f)
        assert truth.read_bytes() == kept
        assert [Path(r["file"]).name for r in rows] == ["beam.png", "wall.png"]
        by = {Path(r["file"]).name: r for r in rows}
        assert by["beam.png"]["error"] == "" and "would replace a file this tool did not write" in by["wall.png"]["error"]
    assert len(list(csv.DictReader(open(f / "results.csv")))) == 2
    assert sorted(p.name for p in f.iterdir()) == ["beam.png", "beam_mask.png", "beam_overlay.png", "results.csv",
                                                   "wall.png", "wall_mask.png"]


def test_a_photo_named_twice_or_vanished_gets_its_own_row(tiny_model, tmp_path):
    a = _photo(tmp_path / "a" / "p.png", 20, 20)
    b = _photo(tmp_path / "b" / "p.png", 30, 30)
    rows = predict_files(tiny_model, [a, b, tmp_path / "gone.png"], tmp_path / "out")
    assert [r["mask"] for r in rows] == ["p_mask.png", "p_png_mask.png", ""]
    assert rows[2]["error"] == "the file does not exist"


def test_an_interrupted_run_still_leaves_a_row_per_input(tiny_model, tmp_path):
    import csv

    from PIL import Image

    for i in range(16):
        _photo(tmp_path / "in" / f"{i:02d}.png", 20, 20, i)

    def interrupt_after_two(items):
        for n, item in enumerate(items):
            if n == 2:
                raise KeyboardInterrupt  # Ctrl-C, as the progress bar would see it
            yield item

    with pytest.raises(KeyboardInterrupt):
        predict_files(tiny_model, [tmp_path / "in"], tmp_path / "out", progress=interrupt_after_two)
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == 16 and [r["error"] for r in rows[:2]] == ["", ""]
    assert rows[-1]["error"] == "not processed (interrupted)"  # photos decode and segment a few ahead, no more
    assert {r["error"] for r in rows} == {"", "not processed (interrupted)"}
    # the photos being written when Ctrl-C came were finished and listed: every file on disk is in
    # results.csv (a rerun into this folder may replace it), every listed file is whole
    listed = {r[k] for r in rows for k in ("mask", "overlay") if r[k]}
    assert listed == {p.name for p in (tmp_path / "out").glob("*.png")}
    assert all(np.asarray(Image.open(tmp_path / "out" / name)).size for name in listed)
    assert rows[0]["mask"] == "00_mask.png"


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tiny_model, tmp_path):
    from unet.errors import UnetError

    _photo(tmp_path / "p.png", 20, 20)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(UnetError, match="taken: the output folder is a file"):
        predict_files(tiny_model, [tmp_path / "p.png"], tmp_path / "taken")


def test_progress_is_reported_row_by_row_and_can_stop_the_work(tiny_model):
    pred = Predictor(tiny_model, tile=64, precision="float32")
    image = rgb(150, 200)
    seen = []
    whole = pred.probability(image, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 2  # a row of tiles at a time
    seen.clear()
    pred.probability(image, flips=True, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0.25 in seen  # four views, each a quarter

    class Stop(Exception):
        pass

    def stop_halfway(fraction):
        if fraction >= 0.5:
            raise Stop  # what a page's Cancel (a rerun) does
    with pytest.raises(Stop):
        pred.probability(image, progress=stop_halfway)
    np.testing.assert_array_equal(pred.probability(image), whole)  # and the next call is unharmed


def test_a_photo_much_larger_than_the_training_photos_gets_a_hint_with_the_scale_to_try(tiny_model, tmp_path):
    from unet.predict import scale_hint

    hint = scale_hint((3000, 4000), 1.0)
    assert "4,000 px across" in hint and "try scale 0.25" in hint
    assert scale_hint((3000, 4000), 0.25) == ""  # seen at 1000 px: within 3x the training photos
    assert scale_hint((384, 544), 1.0) == ""
    from PIL import Image

    Image.fromarray(rgb(64, 1700)).save(tmp_path / "wide.png")
    Image.fromarray(rgb(64, 64)).save(tmp_path / "small.png")
    rows = {Path(r["file"]).name: r for r in predict_files(tiny_model, [tmp_path], tmp_path / "out")}
    assert "try scale 0.5" in rows["wide.png"]["note"] and rows["small.png"]["note"] == ""
    again = predict_files(tiny_model, [tmp_path / "wide.png"], tmp_path / "out2", scale=0.5)
    assert again[0]["note"] == ""


def _recording(pred):
    """Record the batch shapes the predictor's network is run on (the real network runs)."""
    shapes = []
    real = pred.model.predict_on_batch

    def run(batch):
        shapes.append(batch.shape)
        return real(batch)

    pred.model.predict_on_batch = run
    return shapes


def test_a_single_photo_costs_one_tile_not_a_padded_pass(tiny_model):
    pred = Predictor(tiny_model, tile=256, batch_size=4, precision="float32")
    shapes = _recording(pred)
    try:
        image = rgb(256, 256, 2)
        prob = pred.probability(image)
        assert shapes == [(1, 256, 256, 3)]  # was a pass of 4 tiles, 3 of them zeros
        np.testing.assert_allclose(prob, np.asarray(tiny_model.predict_on_batch(image[None]))[0, ..., 0], atol=1e-5)
        shapes.clear()
        pred.segment_many([rgb(256, 256, i) for i in range(7)])
        assert [s[0] for s in shapes] == [4, 4]  # 4 + 3 tiles: the last pass padded to 4, not to 8
        shapes.clear()
        pred.segment_many([rgb(256, 256, i) for i in range(5)])
        assert [s[0] for s in shapes] == [4, 1]
    finally:
        del pred.model.predict_on_batch
    # Left to choose, a predictor runs a photo no larger than a pass whole: no overlap at all
    auto = Predictor(tiny_model, precision="float32")
    shapes = _recording(auto)
    try:
        photo = _smooth_photo(380, 540, seed=4)
        prob = auto.probability(photo)
    finally:
        del auto.model.predict_on_batch
    assert shapes == [(1, 384, 544, 3)]
    padded = np.pad(photo, ((0, 4), (0, 4), (0, 0)), mode="symmetric")
    np.testing.assert_allclose(prob, np.asarray(tiny_model.predict_on_batch(padded[None]))[0, :380, :540, 0],
                               atol=1e-5)


def test_a_large_photo_is_cut_into_larger_tiles_that_overlap_less(tiny_model):
    auto = Predictor(tiny_model, precision="float32", batch_size=None)
    named = Predictor(tiny_model, tile=256, precision="float32")
    assert auto.tile == 256 and auto.large_tile > 256 and named.large_tile == 256
    h, w = 704, 928
    assert 256 < auto.tile_for(h, w) <= auto.large_tile and auto.tile_for(200, 250) == 256
    assert auto.tile_for(3000, 4000) == 512 and named.tile_for(3000, 4000) == 256
    image = _smooth_photo(h, w, seed=7)
    shapes = _recording(auto)
    try:
        tiled = auto.probability(image)
    finally:
        del auto.model.predict_on_batch
    pixels = sum(s[0] * s[1] * s[2] for s in shapes)
    stride = 256 - 2 * named.margin
    small_tiles = len(range(0, h + 2 * named.margin - 256, stride)) + 1
    small_tiles *= len(range(0, w + 2 * named.margin - 256, stride)) + 1
    assert pixels < 0.8 * small_tiles * 256 * 256  # fewer pixels through the network
    whole = np.asarray(tiny_model.predict_on_batch(image[None]))[0, ..., 0]
    assert np.abs(tiled - whole).mean() < 0.02  # and still the photo's map, without seams
    np.testing.assert_allclose(tiled, named.probability(image), atol=0.05)


def test_photos_share_passes_and_each_map_equals_its_own(tiny_model):
    pred = Predictor(tiny_model, tile=256, batch_size=4, precision="float32")
    photos = [rgb(300, 280, 1), rgb(120, 90, 2), _smooth_photo(256, 600, 3), rgb(256, 256, 4), rgb(64, 64, 5)]
    alone = []
    shapes = _recording(pred)
    try:
        for p in photos:
            alone.append(pred.probability(p))
        one_by_one = len(shapes)
        shapes.clear()
        together = list(pred.maps(iter(photos)))
    finally:
        del pred.model.predict_on_batch
    assert len(shapes) < one_by_one
    for a, b in zip(alone, together):  # equal up to float rounding (a pass's size may change the kernels)
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("writers", ["1", "3"])
def test_predict_files_writes_what_segment_finds(tiny_model, tmp_path, monkeypatch, writers):
    """On one writing thread (this CPU) or several (a GPU machine), every photo's outputs and row."""
    from PIL import Image

    from unet.predict import writer_threads

    monkeypatch.setenv("UNET_WRITE_THREADS", writers)
    assert writer_threads() == int(writers)
    dm = DamageModel(tiny_model, precision="float32")
    photos = {f"p{i}": _photo(tmp_path / "in" / f"p{i}.png", 150 + 60 * i, 200, i) for i in range(6)}
    (tmp_path / "in" / "p9.png").write_bytes(b"not a png")
    rows = predict_files(dm, [tmp_path / "in"], tmp_path / "out", threshold=0.5)
    assert [Path(r["file"]).name for r in rows] == [f"p{i}.png" for i in range(6)] + ["p9.png"]
    assert rows[-1]["error"] and not any(r["error"] for r in rows[:-1])
    for name, path in photos.items():
        seg = dm.segment(np.asarray(Image.open(path).convert("RGB")), 0.5)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png")) > 0, seg.mask)


def test_a_photo_darker_than_the_training_photos_is_brightened_for_the_model(tiny_model, tmp_path):
    """Only a photo darker or brighter than every training photo changes: the model sees it at
    about the training photos' median brightness, on every path, and results.csv says so."""
    import csv

    from PIL import Image

    from unet.predict import BRIGHT_LUMA, DARK_LUMA, EXPOSURE_TARGET, MAX_GAIN, exposed, exposure_gain, exposure_note

    rng = np.random.default_rng(1)
    normal = rng.integers(60, 200, (96, 120, 3), dtype=np.uint8)  # mean brightness about 130
    dark = (normal * 0.25).astype(np.uint8)
    night = (normal * 0.05).astype(np.uint8)
    white = np.full((96, 120, 3), 255, np.uint8)
    white[:10] = normal[:10]  # mean brightness about 243
    assert exposure_gain(normal) == 1.0 and exposure_note(normal) == ("", False)
    gain = exposure_gain(dark)
    luma = (exposed(dark, gain).astype(np.float32) @ np.array([0.299, 0.587, 0.114])).mean()
    assert gain > 3 and abs(luma - EXPOSURE_TARGET) < 3 and exposure_gain(exposed(dark, gain)) == 1.0
    assert exposure_gain(night) == MAX_GAIN
    pred = Predictor(tiny_model)
    np.testing.assert_array_equal(pred.probability(dark), pred.probability(exposed(dark, gain)))
    assert not np.array_equal(pred.probability(dark), pred.forward(mirror_pad(dark, 96, 128)[None])[0, :96, :120])
    # with the automatic scale too, the photo is brightened once, coarse passes and final alike
    got, want = pred.scaled_probability(dark, scale="auto"), pred.scaled_probability(exposed(dark, gain), scale="auto")
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    # (at the cap, brightened once is still dark: the map is the once-brightened photo's, seen
    # at the scale chosen; here the ladder ends at 1, so it is the forced scale 1's)
    got = pred.scaled_probability(night, scale="auto")
    assert got[1] == 1.0
    np.testing.assert_array_equal(got[0], pred.scaled_probability(night, scale=1.0)[0])
    # the stream path and the single photo give the same map
    streamed = list(pred.maps([dark, normal]))
    np.testing.assert_allclose(streamed[0], pred.probability(dark), atol=1e-6)
    for name, image in (("normal", normal), ("dark", dark), ("night", night), ("white", white)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    predict_files(tiny_model, [tmp_path / f"{n}.png" for n in ("normal", "dark", "night", "white")], tmp_path / "o")
    rows = {Path(r["file"]).stem: r for r in csv.DictReader(open(tmp_path / "o" / "results.csv"))}
    assert "brightened" not in rows["normal"]["note"] and "overexposed" not in rows["normal"]["note"]
    assert f"the training photos' {DARK_LUMA:.0f}-{BRIGHT_LUMA:.0f}): brightened x{gain:.2g}" in rows["dark"]["note"]
    assert "too dark to trust" not in rows["dark"]["note"]
    assert "too dark to trust" in rows["night"]["note"] and rows["night"]["confidence"] == "low"
    # mostly white: darkened towards the training photos' brightness, and flagged all the same
    note = rows["white"]["note"]
    assert f"darkened x{exposure_gain(white):.2g}" in note and "overexposed: 90% of the photo is pure white" in note
    assert rows["white"]["confidence"] == "low"


def test_the_noise_reading_and_the_blur_table_match_what_pillow_does():
    """noise_sigma reads added Gaussian noise on a wall with edges (cracks and joints are few of
    its blocks), and BLUR_LEFT is what Pillow's GaussianBlur leaves of white noise at each radius."""
    from PIL import Image, ImageFilter

    from unet.predict import BLUR_LEFT, BLUR_RADII, NOISE_GATE, NOISE_TARGET, noise_sigma, smoothed, smoothing_radius

    rng = np.random.default_rng(4)
    wall = np.full((240, 320, 3), (150, 120, 100), np.uint8)
    wall[60:63], wall[:, 100:104], wall[150:152, 40:300] = 45, 60, 30
    for sd in (0, 6, 20, 40):
        noisy = np.clip(wall + rng.normal(0, sd, wall.shape) + 0.5, 0, 255).astype(np.uint8)
        assert abs(noise_sigma(noisy) - sd) < 0.05 * sd + 0.8, (sd, noise_sigma(noisy))
    assert noise_sigma(wall[:1]) == 0.0  # no 2x2 block: nothing to read
    flat = np.full((256, 256, 3), 128.0)
    noise = np.clip(flat + rng.normal(0, 20, flat.shape), 0, 255).astype(np.uint8)
    for radius, left in zip(BLUR_RADII, BLUR_LEFT):
        blurred = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(radius)), np.float32)
        assert abs(blurred.std() / 20 - left) < 0.03, (radius, blurred.std() / 20, left)
    assert smoothing_radius(NOISE_GATE) == 0.0 and smoothing_radius(NOISE_GATE + 0.5) > 0.0
    for sd in (12, 20, 35):  # the blur leaves NOISE_TARGET of the noise, whatever it was
        noisy = np.clip(flat + rng.normal(0, sd, flat.shape), 0, 255).astype(np.uint8)
        left = smoothed(noisy, smoothing_radius(noise_sigma(noisy))).astype(np.float32).std()
        assert abs(left - NOISE_TARGET) < 0.8, (sd, left)


def test_a_noisy_photo_is_smoothed_for_the_model_on_every_path(tiny_model, tmp_path):
    """A photo noisier than the training photos (NOISE_GATE) is blurred before the network sees
    it, once, on every path (one photo, the automatic scale, streams, predict's files), and
    results.csv says so; a photo as noisy as the training photos is never touched."""
    import csv

    from PIL import Image

    from unet.predict import NOISE_GATE, model_view, noise_sigma, smoothed, smoothing_radius, view_note

    rng = np.random.default_rng(5)
    wall = np.full((96, 120, 3), (150, 120, 100), np.uint8)
    wall[40:42] = 50
    quiet = np.clip(wall + rng.normal(0, 5, wall.shape) + 0.5, 0, 255).astype(np.uint8)
    loud = np.clip(wall + rng.normal(0, 25, wall.shape) + 0.5, 0, 255).astype(np.uint8)
    assert noise_sigma(quiet) < NOISE_GATE < noise_sigma(loud)
    assert model_view(quiet) is quiet and view_note(quiet) == ("", False)
    seen = smoothed(loud, smoothing_radius(noise_sigma(loud)))
    np.testing.assert_array_equal(model_view(loud), seen)
    assert noise_sigma(seen) < NOISE_GATE  # smoothed once: the view is not smoothed again
    pred = Predictor(tiny_model)
    np.testing.assert_array_equal(pred.probability(loud), pred.probability(seen))
    assert not np.array_equal(pred.probability(loud), pred.forward(mirror_pad(loud, 96, 128)[None])[0, :96, :120])
    got, want = pred.scaled_probability(loud, scale="auto"), pred.scaled_probability(seen, scale="auto")
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    np.testing.assert_allclose(list(pred.maps([quiet, loud]))[1], pred.probability(loud), atol=1e-6)
    for name, image in (("quiet", quiet), ("loud", loud)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    predict_files(tiny_model, [tmp_path / "quiet.png", tmp_path / "loud.png"], tmp_path / "o")
    rows = {Path(r["file"]).stem: r for r in csv.DictReader(open(tmp_path / "o" / "results.csv"))}
    assert "noisy" not in rows["quiet"]["note"]
    assert f"a noisy photo (noise {noise_sigma(loud):.0f}/255" in rows["loud"]["note"]
    assert "for the model" in view_note(loud)[0] and not view_note(loud)[1]
    # the overlay written is of the photo as taken, noise and all, where nothing was marked
    written = np.asarray(Image.open(tmp_path / "o" / rows["loud"]["overlay"]).convert("RGB"))
    intact = np.asarray(Image.open(tmp_path / "o" / rows["loud"]["mask"])) == 0
    assert intact.any()
    np.testing.assert_array_equal(written[intact], loud[intact])


def test_the_blur_of_a_photo_is_read_through_its_sensor_noise_and_undone():
    from unet.predict import BLUR_GATE, BLUR_LEFT_SHARP, blur_sigma, deblur_radius, focus_blur, sharpened, smoothed

    rng = np.random.default_rng(3)
    scene = sharp_scene(rng)
    assert blur_sigma(scene) < 1.0 and focus_blur(blur_sigma(scene)) == 0.0
    for r in (2, 3, 5, 8):
        for sd in (0, 6):  # a sensor's noise comes after the lens's blur
            photo = np.clip(smoothed(scene, r) + rng.normal(0, sd, scene.shape) + 0.5, 0, 255).astype(np.uint8)
            assert abs(blur_sigma(photo) - r) < 0.25 * r, (r, sd, blur_sigma(photo))
    assert blur_sigma(np.full((64, 64, 3), 128, np.uint8)) == 0.0  # nothing to read
    assert focus_blur(BLUR_GATE) == 0.0 and focus_blur(BLUR_GATE + 0.1) == BLUR_GATE + 0.1
    assert deblur_radius(BLUR_LEFT_SHARP) == 0.0 and deblur_radius(5.0) == pytest.approx(np.sqrt(25 - BLUR_LEFT_SHARP**2))
    # Undone: the sharpened photo is nearer the scene than the blurred one, edges included.
    blurred = smoothed(scene, 5)
    back = sharpened(blurred, deblur_radius(blur_sigma(blurred)))
    assert back.shape == scene.shape and back.dtype == np.uint8
    err = lambda a: float(np.abs(a.astype(np.float32) - scene).mean())  # noqa: E731
    assert err(back) < 0.8 * err(blurred)
    assert blur_sigma(back) < 0.7 * blur_sigma(blurred)  # Wiener restores part of it, by design
    assert sharpened(scene, 0.0) is scene


def test_an_out_of_focus_photo_is_sharpened_at_the_scale_the_model_sees_it(tiny_model, tmp_path):
    """The focus rule: a photo whose own blur exceeds BLUR_GATE is out of focus, and every view
    the network gets of it (each scale, the coarse passes' included, every path, once) is
    sharpened by what that blur leaves at that scale beyond the training photos' own; a view
    shrunk until little is left is only resized; a sharp photo, or a noisy one the noise rule
    smoothed, is never sharpened; results.csv says what was done; the overlay written is the
    photo as taken."""
    import csv

    from PIL import Image

    from unet.predict import (BLUR_GATE, BLUR_LEFT_SHARP, BLUR_RETAKE, _viewed, blur_sigma, deblur_radius, model_view,
                              sharpened, smoothed, view_note, view_settings)

    rng = np.random.default_rng(4)
    scene = sharp_scene(rng, 160, 208)
    soft = smoothed(scene, 6)
    blur = blur_sigma(soft)
    assert view_settings(soft)[3] == blur > BLUR_RETAKE > BLUR_GATE and view_settings(scene)[3] == 0.0
    seen = sharpened(soft, deblur_radius(blur))
    np.testing.assert_array_equal(model_view(soft), seen)
    assert model_view(scene) is scene and view_note(scene) == ("", False)
    # Half its size: half its blur, sharpened by what is left of it there.
    half = np.asarray(Image.fromarray(soft).resize((104, 80), Image.BILINEAR))
    np.testing.assert_array_equal(_viewed(soft).at(0.5), sharpened(half, deblur_radius(blur / 2)))
    # An eighth: less blur than the training photos' own, so only resized.
    assert blur / 8 <= BLUR_LEFT_SHARP
    np.testing.assert_array_equal(_viewed(soft).at(0.125), np.asarray(Image.fromarray(soft).resize((26, 20), Image.BILINEAR)))
    assert view_note(soft, [0.125]) == ("", False)
    assert "retake it in focus" not in view_note(soft, [0.25])[0] and "sharpened" in view_note(soft, [0.25])[0]
    assert "retake it in focus" in view_note(soft, [0.5, 1.0])[0] and view_note(soft, [0.5, 1.0])[1]
    pred = Predictor(tiny_model)
    want = pred.forward(mirror_pad(seen, 160, 208)[None])[0]
    np.testing.assert_allclose(pred.probability(soft, scale=1.0), want, atol=1e-6)
    assert not np.allclose(pred.probability(soft, scale=1.0), pred.forward(soft[None])[0], atol=1e-3)
    np.testing.assert_allclose(list(pred.maps([scene, soft], scale=1.0))[1], want, atol=1e-6)
    # Noisy and soft: the noise rule smooths it, and nothing sharpens that smoothing away.
    grainy = np.clip(soft + rng.normal(0, 25, soft.shape) + 0.5, 0, 255).astype(np.uint8)
    assert view_settings(grainy)[2] > 0 and view_settings(grainy)[3] == 0.0
    for name, image in (("sharp", scene), ("soft", soft)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    predict_files(tiny_model, [tmp_path / "sharp.png", tmp_path / "soft.png"], tmp_path / "o", scale=1.0)
    rows = {Path(r["file"]).stem: r for r in csv.DictReader(open(tmp_path / "o" / "results.csv"))}
    assert "out of focus" not in rows["sharp"]["note"] and rows["sharp"]["confidence"] == "high"
    assert f"out of focus (blur {blur:.1f} px, the training photos' at most {BLUR_GATE:g}" in rows["soft"]["note"]
    assert rows["soft"]["confidence"] == "low"  # seen at more than twice the gate: retake it
    written = np.asarray(Image.open(tmp_path / "o" / rows["soft"]["overlay"]).convert("RGB"))
    intact = np.asarray(Image.open(tmp_path / "o" / rows["soft"]["mask"])) == 0
    np.testing.assert_array_equal(written[intact], soft[intact])


def test_the_writing_threads_default_to_half_the_cores_and_a_bad_setting_is_named(monkeypatch):
    import os

    from unet.errors import ConfigError
    from unet.predict import writer_threads

    monkeypatch.delenv("UNET_WRITE_THREADS", raising=False)
    assert writer_threads() == max(1, min(8, (os.cpu_count() or 1) // 2))
    for bad in ("0", "many"):
        monkeypatch.setenv("UNET_WRITE_THREADS", bad)
        with pytest.raises(ConfigError, match=f"UNET_WRITE_THREADS must be a whole number, 1 or more \\(got '{bad}'\\)"):
            writer_threads()

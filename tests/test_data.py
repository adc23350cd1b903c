"""Both dataset layouts, the multi-mask union, splits, bad samples and augmentation."""

import numpy as np
import pytest
from PIL import Image

from unet.data import (
    Augment, DatasetError, PairBatcher, load_pair, load_pairs, random_pair, sample_stats, scan_dataset,
    split_samples, tiles, training_splits,
)


def _img(path, h=16, w=16, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _mask(path, box, h=16, w=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path)
    return path


def test_per_sample_layout_unions_all_masks(tmp_path):
    s = tmp_path / "a1"
    _img(s / "images" / "a1.jpg")
    _mask(s / "masks" / "m1.png", (0, 4, 0, 4))
    _mask(s / "masks" / "m2.png", (10, 12, 10, 16))
    scan = scan_dataset(tmp_path)
    assert scan.layout == "per-sample" and scan.problems == []
    (sample,) = scan.split("all")
    image, mask = load_pair(sample)
    assert image.shape == (16, 16, 3) and mask.sum() == 16 + 12


def test_paired_layout_and_img_lab_names(tmp_path):
    _img(tmp_path / "images" / "w1.png")
    _mask(tmp_path / "masks" / "w1.png", (0, 2, 0, 2))
    _img(tmp_path / "images" / "w2_img.jpg")
    _mask(tmp_path / "masks" / "w2_lab.png", (0, 3, 0, 3))
    scan = scan_dataset(tmp_path)
    assert scan.layout == "paired"
    assert sorted(s.id for s in scan.split("all")) == ["w1", "w2"]


def test_flat_folder_with_mask_suffixes(tmp_path):
    _img(tmp_path / "c1.jpg")
    _mask(tmp_path / "c1_mask.png", (0, 2, 0, 2))
    scan = scan_dataset(tmp_path)
    assert [s.id for s in scan.split("all")] == ["c1"]


def test_split_folders(tmp_path):
    for split in ("train", "val", "test"):
        _img(tmp_path / split / f"{split}1" / "images" / "x.png")
        _mask(tmp_path / split / f"{split}1" / "masks" / "x.png", (0, 1, 0, 1))
    scan = scan_dataset(tmp_path)
    assert {k: len(v) for k, v in scan.splits.items()} == {"train": 1, "val": 1, "test": 1}


def test_bad_samples_are_skipped_and_named(tmp_path):
    ok = tmp_path / "ok"
    _img(ok / "images" / "ok.png")
    _mask(ok / "masks" / "ok.png", (0, 2, 0, 2))
    _img(tmp_path / "nomask" / "images" / "lonely.png")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    corrupt = tmp_path / "corrupt"
    (corrupt / "images").mkdir(parents=True)
    (corrupt / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    _mask(corrupt / "masks" / "broken.png", (0, 2, 0, 2))
    size = tmp_path / "size"
    _img(size / "images" / "s.png", 16, 16)
    _mask(size / "masks" / "s.png", (0, 2, 0, 2), 8, 8)
    scan = scan_dataset(tmp_path)
    assert [s.id for s in scan.split("all")] == ["ok"]
    text = "\n".join(map(str, scan.problems))
    assert "lonely.png: image without mask" in text
    assert "empty: sample folder has no image" in text
    assert "broken.png: not a photo" in text
    assert "mask is 8x8 but its image s.png is 16x16" in text


def test_truncated_image_found_at_load_is_reported_not_raised(tmp_path):
    good = tmp_path / "g"
    _img(good / "images" / "g.png")
    _mask(good / "masks" / "g.png", (0, 2, 0, 2))
    bad = tmp_path / "b"
    # noise does not compress: cutting the file in half cuts into the pixel data
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (bad / "images").mkdir(parents=True)
    noise.save(bad / "images" / "b.png")
    data = (bad / "images" / "b.png").read_bytes()
    (bad / "images" / "b.png").write_bytes(data[: len(data) // 2])
    _mask(bad / "masks" / "b.png", (0, 2, 0, 2), 64, 64)
    samples = scan_dataset(tmp_path).split("all")
    pairs, kept, problems = load_pairs(samples)
    assert [s.id for s in kept] == ["g"] and len(pairs) == 1
    assert "b.png" in problems[0].path and "truncated" in problems[0].message


def test_missing_and_empty_dataset_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    scan = scan_dataset(tmp_path)
    assert scan.samples == [] and "holds no images" in str(scan.problems[0])
    with pytest.raises(DatasetError, match="no usable training samples"):
        training_splits(tmp_path)


def test_seeded_split_is_deterministic_and_disjoint(sample_dir):
    samples = scan_dataset(sample_dir).samples
    a = split_samples(samples, 0.25, 0.25, seed=7)
    b = split_samples(list(reversed(samples)), 0.25, 0.25, seed=7)
    assert {k: [s.id for s in v] for k, v in a.items()} == {k: [s.id for s in v] for k, v in b.items()}
    ids = [s.id for v in a.values() for s in v]
    assert len(ids) == len(set(ids)) == len(samples)


def test_seeded_split_keeps_the_patches_of_one_wall_together(tmp_path):
    from unet.data import source_of

    for p in range(20):  # a flat folder (no split folders) of 20 walls, 1-4 patches each: 50 patches
        for k in range(1 + p % 4):
            sid = f"b_{p}_{k}"
            _img(tmp_path / sid / "images" / f"{sid}.png")
            _mask(tmp_path / sid / "masks" / f"{sid}.png", (4, 8, 0, 16))
    samples = scan_dataset(tmp_path).split("all")
    parts = split_samples(samples, 0.2, 0.1, seed=3)
    walls = {k: {source_of(s.id) for s in v} for k, v in parts.items()}
    assert not walls["val"] & walls["train"] and not walls["test"] & walls["train"] and not walls["val"] & walls["test"]
    assert sum(map(len, parts.values())) == 50
    assert 10 <= len(parts["val"]) <= 13 and 5 <= len(parts["test"]) <= 8  # its share, up to one wall over
    train, val, _ = training_splits(tmp_path)  # what a run on a flat folder of patches validates on
    assert not {source_of(s.id) for s in train} & {source_of(s.id) for s in val} and val
    # One wall alone: held out patch by patch, since nothing else can be
    one = [s for s in samples if source_of(s.id) == "b_3"]
    single = split_samples(one, 0.25, seed=0)
    assert len(single["val"]) == 1 and len(single["train"]) == 3


def test_stats(sample_dir):
    scan = scan_dataset(sample_dir)
    stats, problems = sample_stats(scan.samples)
    assert problems == [] and len(stats) == 12
    assert all(s.width == 128 and s.height == 96 for s in stats)
    assert all(0 < s.damaged_pct < 50 for s in stats)


def test_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    mask = np.zeros((80, 100), bool)
    for _ in range(6):
        y, x = rng.integers(0, 70), rng.integers(0, 90)
        mask[y : y + 10, x : x + 4] = True
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    exact = Augment(crop_scale=(1.0, 1.0), brightness=0, contrast=0)
    scaled = Augment(crop_scale=(0.6, 1.5), brightness=0, contrast=0)
    for i in range(20):
        img, msk = random_pair(image, mask, 64, np.random.default_rng(i), exact)
        np.testing.assert_array_equal(img[..., 0] > 127, msk)
        img, msk = random_pair(image, mask, 64, np.random.default_rng(i), scaled)
        assert img.shape == (64, 64, 3) and msk.shape == (64, 64)
        assert np.mean((img[..., 0] > 127) == msk) > 0.97  # resampling differs only at edges


def test_brightness_and_contrast_change_every_pixel_by_the_same_rule():
    """The photo's brightness and contrast change as (v - mean) * c + mean + b, clipped, for every
    pixel value v (applied through a table); the mask is untouched."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = rng.random((64, 64)) < 0.1
    only_light = Augment(flip=False, rotate90=False, crop_scale=(1.0, 1.0), brightness=0.4, contrast=0.4)
    for seed in range(5):
        img, msk = random_pair(image, mask, 64, np.random.default_rng(seed), only_light)
        r = np.random.default_rng(seed)
        r.integers(0, 1), r.integers(0, 1)  # the crop's position (the crop is the whole photo)
        b, c = r.uniform(-0.4, 0.4) * 255, 1.0 + r.uniform(-0.4, 0.4)
        mean = image.mean()
        want = np.clip((image.astype(np.float32) - mean) * c + mean + b, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(img, want)
        np.testing.assert_array_equal(msk, mask)
        assert img.flags.c_contiguous and not np.array_equal(img, image)


def test_colour_changes_each_channel_and_the_saturation_and_leaves_the_mask():
    from unet.data import recolor

    px = np.array([[[100, 50, 200]]], np.uint8)
    # gains 1.1 / 1 / 0.9 give 110, 50, 180 (their mean 113.3); half the saturation halves each distance to it
    np.testing.assert_array_equal(recolor(px, np.array([1.1, 1.0, 0.9]), 0.5), [[[112, 82, 147]]])
    assert len(set(recolor(px, np.ones(3), 0.0)[0, 0])) == 1  # no saturation: grey
    np.testing.assert_array_equal(recolor(np.full((1, 1, 3), 250, np.uint8), np.full(3, 1.2), 1.0), [[[255] * 3]])

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = rng.random((48, 48)) < 0.1
    plain = Augment(crop_scale=(1.0, 1.0), brightness=0.1, contrast=0.1)
    coloured = Augment(crop_scale=(1.0, 1.0), brightness=0.1, contrast=0.1, color=0.3)
    for seed in range(5):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        img, msk = random_pair(image, mask, 48, a, plain)
        cimg, cmsk = random_pair(image, mask, 48, b, coloured)
        np.testing.assert_array_equal(msk, cmsk)  # the same crop, flips and rotation: colour comes last
        gains = cimg.reshape(-1, 3).mean(0) / img.reshape(-1, 3).mean(0)
        assert np.ptp(gains) > 0.02, gains  # the channels moved apart, not together
    # off (the default), it draws no random number: runs made before it keep their crops
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    random_pair(image, mask, 48, a, Augment())
    random_pair(image, mask, 48, b, Augment(color=0.0))
    assert a.random() == b.random()


def test_sensor_noise_is_added_last_within_its_range_and_leaves_the_mask():
    rng = np.random.default_rng(6)
    image = np.full((64, 64, 3), 120, np.uint8)
    mask = rng.random((64, 64)) < 0.1
    plain = Augment(crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    grainy = Augment(crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0, noise=0.1)
    spreads = []
    for seed in range(8):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        img, msk = random_pair(image, mask, 64, a, plain)
        nimg, nmsk = random_pair(image, mask, 64, b, grainy)
        np.testing.assert_array_equal(msk, nmsk)  # the same crop, flips and rotation: noise comes last
        np.testing.assert_array_equal(img, image)
        spreads.append(float(nimg.astype(np.float32).std()))
        assert abs(float(nimg.mean()) - 120) < 1.5  # noise around the photo, not a shift of its light
    # a standard deviation drawn per crop, uniform in 0-25.5
    assert max(spreads) <= 0.1 * 255 * 1.05 and np.ptp(spreads) > 5, spreads
    # the same seed, the same grain; another seed, other grain
    once, again, other = (random_pair(image, mask, 64, np.random.default_rng(k), grainy)[0] for k in (3, 3, 4))
    np.testing.assert_array_equal(once, again)
    assert np.mean(once != other) > 0.5
    # a crop too large for the bank of values gets fresh ones, of the same spread
    wide = np.full((1200, 1200, 3), 120, np.uint8), np.zeros((1200, 1200), bool)
    big = [random_pair(*wide, 1200, np.random.default_rng(k), grainy)[0].astype(np.float32).std() for k in range(3)]
    assert max(big) > 5 and max(big) <= 0.1 * 255 * 1.05, big
    # off (the default), it draws no random number: runs made before it keep their crops
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    random_pair(image, mask, 48, a, Augment())
    random_pair(image, mask, 48, b, Augment(noise=0.0))
    assert a.random() == b.random()


def test_batches_and_tiles(sample_dir):
    train, val, _ = training_splits(sample_dir)
    pairs, _, _ = load_pairs(train)
    b = PairBatcher(pairs, 64, 4, Augment(), steps=3, seed=1)
    x, y = b.batch(0)
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.uint8
    assert y.shape == (4, 64, 64, 1) and set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(b.batch(2)[0], b.batch(2)[0])  # deterministic per (epoch, index)
    image, mask = pairs[0]
    t = tiles(image, mask, 64)
    assert len(t) == 2 * 2 and all(a.shape == (64, 64, 3) for a, _ in t)
    np.testing.assert_array_equal(t[0][0], image[:64, :64])


def _patches(root, photos: dict[str, int]):
    """A train split of patches named <photo>_<n> (the masonry layout), a crack in each."""
    for photo, n in photos.items():
        for k in range(n):
            sid = f"{photo}_{k}"
            _img(root / "train" / sid / "images" / f"{sid}.png")
            _mask(root / "train" / sid / "masks" / f"{sid}.png", (4, 8, 0, 16))
    for sid in ("v_0_0", "v_0_1"):  # a val split the folds must never touch
        _img(root / "val" / sid / "images" / f"{sid}.png")
        _mask(root / "val" / sid / "masks" / f"{sid}.png", (4, 8, 0, 16))


def test_folds_hold_whole_source_photos_and_never_the_val_split(tmp_path):
    from unet.data import fold_split, parse_fold, source_of

    assert [source_of(i) for i in ("a_0_10", "a_0_9", "wall_0003", "11111")] == ["a_0", "a_0", "wall_0003", "11111"]
    # DeepCrack's crops of one photo (and the photo's own crop, named without a number) are one source
    assert [source_of(i) for i in ("IMG33-12", "IMG33", "11116-3", "11116", "7Q3A9060-1")] == \
        ["IMG33", "IMG33", "11116", "11116", "7Q3A9060"]
    photos = {f"b_{p}": 1 + p % 4 for p in range(11)}  # 11 walls, 1-4 patches each
    _patches(tmp_path, photos)
    samples = scan_dataset(tmp_path).split("train")
    held_out = []
    for k in (1, 2, 3):
        rest, held = fold_split(samples, k, 3)
        assert {s.id for s in rest} | {s.id for s in held} == {s.id for s in samples}
        assert not {source_of(s.id) for s in rest} & {source_of(s.id) for s in held}  # no wall on both sides
        held_out.append(len(held))
        assert [s.id for s in fold_split(samples, k, 3)[1]] == [s.id for s in held]  # the same every time
    assert sum(held_out) == len(samples) and max(held_out) - min(held_out) <= 4  # balanced, whole walls
    train, val, _ = training_splits(tmp_path, fold=parse_fold("2/3"))
    assert {s.id for s in val} == {s.id for s in fold_split(samples, 2, 3)[1]}
    assert not any(s.id.startswith("v_") for s in train + val)  # the val split is left for the end
    for bad in ("0/3", "4/3", "1/1", "x"):
        with pytest.raises(DatasetError, match="fold"):
            parse_fold(bad)
    with pytest.raises(DatasetError, match="cannot make 12 folds"):
        fold_split(samples, 1, 12)

import hashlib


from unet.data import load_pair, scan_dataset
from unet.synthetic import damaged_wall, write_sample_dataset


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_writes_identical_files(tmp_path):
    write_sample_dataset(tmp_path / "a", count=5, seed=4, size=(64, 80))
    write_sample_dataset(tmp_path / "b", count=5, seed=4, size=(64, 80))
    write_sample_dataset(tmp_path / "c", count=5, seed=5, size=(64, 80))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_layout_splits_and_exact_masks(sample_dir):
    scan = scan_dataset(sample_dir)
    assert scan.layout == "per-sample" and scan.problems == []
    assert {k: len(v) for k, v in scan.splits.items()} == {"train": 8, "val": 2, "test": 2}
    assert any(len(s.masks) == 2 for s in scan.samples)  # crack + spall masks, unioned on load
    for s in scan.samples:
        image, mask = load_pair(s)
        assert image.shape == (96, 128, 3) and mask.any()


def test_damage_is_darker_than_the_wall_around_it():
    for seed in range(6):
        image, crack, spall = damaged_wall(seed, 128, 128)
        gray = image.mean(axis=2)
        assert crack.any()
        assert gray[crack].mean() < gray[~(crack | spall)].mean()

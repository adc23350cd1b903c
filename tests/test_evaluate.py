"""Evaluation numbers on a known case, with a real (hand-weighted) Keras model."""

import json

import numpy as np
import pytest
from PIL import Image

from unet.data import scan_dataset
from unet.evaluate import evaluate, read_results, sweep


def _red_detector():
    """A real 1x1-conv Keras model: probability = sigmoid(20 * (red/255 - 0.5))."""
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([np.array([20.0, 0, 0], "float32").reshape(1, 1, 3, 1), np.array([-10.0], "float32")])
    return model


def _write(root, name, red, truth):
    """One sample: a photo whose red channel is ``red`` (0-255) and its mask."""
    d = root / name
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    img = np.zeros(truth.shape + (3,), np.uint8)
    img[..., 0] = np.clip(red, 0, 255)
    img[..., 1] = 180  # unseen by the detector; keeps the photo as bright as a training photo (no exposure gain)
    Image.fromarray(img).save(d / "images" / f"{name}.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(d / "masks" / f"{name}.png")


def test_known_case(tmp_path):
    a_pred = np.zeros((20, 20), bool); a_pred[:10] = True   # 200 predicted
    a_true = np.zeros((20, 20), bool); a_true[5:15] = True  # 200 true, 100 overlap
    b_pred = np.zeros((20, 20), bool)                        # intact wall, left unmarked
    b_true = np.zeros((20, 20), bool)
    _write(tmp_path / "split", "a", a_pred * 255, a_true)
    _write(tmp_path / "split", "b", b_pred * 255, b_true)
    samples = scan_dataset(tmp_path / "split").split("all")
    out = tmp_path / "eval"
    result = evaluate(_red_detector(), samples, threshold=0.5, out_dir=out)
    assert result["n_images"] == 2
    assert result["iou"] == pytest.approx(100 / 300)
    assert result["dice"] == pytest.approx(200 / 400)
    assert result["precision"] == pytest.approx(0.5) and result["recall"] == pytest.approx(0.5)
    stored = read_results(out)
    assert json.loads((out / "metrics.json").read_text())["iou"] == pytest.approx(result["iou"])
    per = {r["id"]: r for r in stored["per_image"]}
    assert float(per["b"]["iou"]) == 1.0  # empty truth, empty prediction
    assert float(per["a"]["dice"]) == pytest.approx(0.5)
    assert len(stored["pr_curve"]) > 10
    assert np.asarray(Image.open(out / "pred" / "a.png")).astype(bool).sum() == 200


def test_sweep_finds_the_f1_best_threshold():
    bins = 10
    pos = np.zeros(bins, int); neg = np.zeros(bins, int)
    pos[7] = 90; pos[2] = 10   # most damage scores 0.7
    neg[1] = 1000; neg[5] = 50  # intact mostly 0.1, 50 false alarms at 0.5
    s = sweep(pos, neg)
    assert s["best_threshold"] == pytest.approx(0.6)  # above the 0.5 false alarms, below 0.7
    assert s["best_f1"] == pytest.approx(2 * 90 / (2 * 90 + 0 + 10))


def test_calibrate_picks_the_threshold_that_is_best_on_average(tmp_path):
    from unet.evaluate import calibrate

    # The red detector's probability is sigmoid(20 * (red/255 - 0.5)); a photo whose damaged
    # pixels have red 140 (p ~ 0.6) and intact pixels red 110 (p ~ 0.4) is best split near 0.5.
    truth = np.zeros((16, 16), bool)
    truth[4:8] = True
    for split in ("a", "b"):
        _write(tmp_path / split, "s1", np.where(truth, 140, 110), truth)
    result = calibrate(_red_detector(), [tmp_path / "a", tmp_path / "b"])
    assert 0.4 < result["threshold"] < 0.6
    assert result["mean_f1"] == pytest.approx(1.0)
    assert all(v["f1_at_threshold"] == pytest.approx(1.0) for v in result["splits"].values())


def test_calibrate_chooses_the_scale_that_scores_best(tmp_path):
    from unet.evaluate import calibrate

    # Damaged 8x8 blocks are redder than intact ones only on average: pixel noise makes a
    # per-pixel detector err at the photo's own size, while halving the photo (antialiased)
    # averages the noise away. So calibration must prefer scale 0.5 here...
    rng = np.random.default_rng(0)
    truth = np.kron(rng.random((8, 8)) < 0.3, np.ones((8, 8), bool))
    _write(tmp_path / "noisy", "s1", np.where(truth, 150, 105) + rng.integers(-60, 61, truth.shape), truth)
    result = calibrate(_red_detector(), [tmp_path / "noisy"], scales=[1.0, 0.5])
    assert result["scale"] == 0.5
    assert result["scales"]["0.5"]["mean_f1"] > result["scales"]["1.0"]["mean_f1"] + 0.05
    # ...and the reported F1 is what evaluating at that scale and threshold gives.
    from unet.predict import Predictor

    samples = scan_dataset(tmp_path / "noisy").split("all")
    again = evaluate(_red_detector(), samples, threshold=result["threshold"],
                     runner=Predictor(_red_detector(), scale=0.5))
    assert again["dice"] == pytest.approx(result["mean_f1"], abs=2e-3)
    assert again["scale"] == 0.5
    # Thin 1-pixel lines are the opposite case: halving blurs them away, so 1 wins.
    thin = np.zeros((64, 64), bool)
    thin[::8] = True
    _write(tmp_path / "thin", "s1", np.where(thin, 200, 60), thin)
    assert calibrate(_red_detector(), [tmp_path / "thin"], scales=[0.5, 1.0])["scale"] == 1.0


def test_stored_results_are_used_until_the_model_file_changes(tmp_path):
    import os

    from unet.damage_model import DamageModel
    from unet.evaluate import evaluate_and_store, results_dir, stored_results

    truth = np.zeros((16, 16), bool)
    truth[:8] = True
    _write(tmp_path / "split", "a", truth * 255, truth)
    path = DamageModel(_red_detector(), precision="float32").save(tmp_path / "red.keras")
    runs = tmp_path / "runs"
    assert stored_results(path, tmp_path / "split", runs) is None  # not evaluated yet
    model = DamageModel.load(path, precision="float32")
    result = evaluate_and_store(model, path, tmp_path / "split", runs)
    again = stored_results(path, tmp_path / "split", runs)
    assert again is not None and again["dice"] == result["dice"] == pytest.approx(1.0)
    assert results_dir(path, tmp_path / "split", runs).is_relative_to(runs / "_models")
    # Anything that changes the answer makes them stale: a calibration writing the card...
    model.update_card(threshold=0.3)
    assert stored_results(path, tmp_path / "split", runs) is None
    evaluate_and_store(model, path, tmp_path / "split", runs)
    assert stored_results(path, tmp_path / "split", runs) is not None
    # ...results stored at another threshold than the card's (evaluate --run --threshold)...
    evaluate_and_store(model, path, tmp_path / "split", runs, threshold=0.9)
    assert stored_results(path, tmp_path / "split", runs) is None
    evaluate_and_store(model, path, tmp_path / "split", runs)
    # ...a photo added to the split...
    _write(tmp_path / "split", "b", truth * 255, truth)
    assert stored_results(path, tmp_path / "split", runs) is None
    evaluate_and_store(model, path, tmp_path / "split", runs)
    assert stored_results(path, tmp_path / "split", runs)["n_images"] == 2
    stamp = path.stat().st_mtime
    os.utime(path, (stamp + 10, stamp + 10))  # ...or a retrained or replaced model file
    assert stored_results(path, tmp_path / "split", runs) is None
    (results_dir(path, tmp_path / "split", runs) / "metrics.json").write_text("[1]")  # damaged results
    assert stored_results(path, tmp_path / "split", runs) is None


def _walls(root, walls: dict[str, list[int]]):
    """A split of patches named like the masonry dataset's (``<wall>_<n>``): each patch's damaged
    band is marked red (found) or not (missed) as listed, so its counts are known."""
    truth = np.zeros((16, 16), bool)
    truth[4:8] = True
    for wall, found in walls.items():
        for i, hit in enumerate(found):
            _write(root, f"{wall}_{i}", np.where(truth & bool(hit), 255, 0), truth)


def test_results_carry_pixel_counts_and_an_interval_over_source_walls(tmp_path):
    from unet.evaluate import source_counts

    _walls(tmp_path / "split", {"a_1": [1, 1, 0], "a_2": [1], "a_3": [1, 1], "a_4": [0]})
    samples = scan_dataset(tmp_path / "split").split("all")
    result = evaluate(_red_detector(), samples, threshold=0.5, out_dir=tmp_path / "eval")
    rows = {r["id"]: r for r in result["per_image"]}
    assert (rows["a_1_0"]["tp"], rows["a_1_0"]["fn"], rows["a_1_2"]["tp"], rows["a_1_2"]["fn"]) == (64, 0, 0, 64)
    assert result["sources"] == 4  # 7 patches, 4 walls
    lo, hi = result["dice_interval"]
    assert lo < result["dice"] < hi
    names, counts = source_counts(read_results(tmp_path / "eval")["per_image"])  # as read back from CSV
    assert names == ["a_1", "a_2", "a_3", "a_4"] and counts[0].tolist() == [128, 0, 64]
    assert "per_image" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())


def test_compare_says_when_a_split_cannot_tell_two_models_apart(tmp_path, capsys):
    from conftest import cli_here
    from unet.model import save_model

    _walls(tmp_path / "split", {f"a_{w}": [1, 1, w % 2] for w in range(6)})
    save_model(_red_detector(), tmp_path / "a.keras", threshold=0.5)
    save_model(_red_detector(), tmp_path / "b.keras", threshold=0.5)
    r = cli_here(capsys, "compare", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "--data",
                 str(tmp_path / "split"))
    assert r.returncode == 0, r.stderr
    assert "18 photos from 6 source photos" in r.stdout and "cannot tell them apart" in r.stdout
    # A model that marks nothing misses every crack: behind on every resample.
    blind = _red_detector()
    blind.layers[-1].set_weights([np.zeros((1, 1, 3, 1), "float32"), np.array([-10.0], "float32")])
    save_model(blind, tmp_path / "blind.keras", threshold=0.5)
    r = cli_here(capsys, "compare", str(tmp_path / "a.keras"), str(tmp_path / "blind.keras"), "--data",
                 str(tmp_path / "split"), "--json")
    rows = json.loads(r.stdout)["models"]
    assert rows[1]["dice"] == 0 and rows[1]["vs_first"]["high"] < 0 and rows[1]["vs_first"]["ahead"] == 0

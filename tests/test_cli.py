"""Every subcommand from a shell, and bad input answered in one line with exit code 2."""

import csv
import json

from PIL import Image

from conftest import run_cli


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_help_for_every_subcommand():
    for sub in ["sample-data", "train", "predict", "evaluate", "calibrate", "runs", "devices"]:
        proc = run_cli(sub, "--help", timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_sample_data(tmp_path):
    proc = run_cli("sample-data", str(tmp_path / "d"), "--count", "6", "--seed", "2", "--size", "64x96")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "dataset.json").is_file()
    assert len(list((tmp_path / "d").rglob("images/*.png"))) == 6


def test_train_predict_evaluate_and_runs(tmp_path, sample_dir):
    runs = tmp_path / "runs"
    proc = run_cli("train", "--data", str(sample_dir), "--preset", "tiny", "--size", "64", "--epochs", "1",
                   "--batch", "4", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.splitlines()[0].split()[1]
    model = runs / run_id / "model.keras"
    assert model.is_file()

    out = tmp_path / "pred"
    (tmp_path / "junk.png").write_text("not an image")
    proc = run_cli("predict", "--model", str(model), "--out", str(out), str(sample_dir / "test"),
                   str(tmp_path / "junk.png"), "--threshold", "0.4")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert any(r["error"] for r in rows) and any(r["damaged_pct"] for r in rows)

    # careful mode: a photo and its mirror image come out the same
    photo = sorted((sample_dir / "test").rglob("images/*.png"))[0]
    Image.open(photo).transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / "mirrored.png")
    proc = run_cli("predict", "--model", str(model), "--out", str(tmp_path / "careful"), str(photo),
                   str(tmp_path / "mirrored.png"), "--flips")
    assert proc.returncode == 0, proc.stderr
    pcts = [float(r["damaged_pct"]) for r in csv.DictReader(open(tmp_path / "careful" / "results.csv"))]
    assert len(pcts) == 2 and abs(pcts[0] - pcts[1]) < 0.01
    _one_line_error(run_cli("evaluate", "--run", run_id, "--runs-dir", str(runs), "--data",
                            str(sample_dir / "test"), "--flips"))  # Compare shows plain predictions only

    proc = run_cli("evaluate", "--run", run_id, "--runs-dir", str(runs), "--data", str(sample_dir / "test"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"iou", "dice", "precision", "recall", "threshold", "n_images"} <= set(result)
    assert result["n_images"] == 2
    assert list((runs / run_id / "eval").glob("*/metrics.json"))

    # calibrate chooses the threshold and, among --scales, the resize factor, and --write
    # stores both in the model's card, where predict and evaluate then find them
    proc = run_cli("calibrate", "--model", str(model), "--data", str(sample_dir / "val"), "--scales", "1", "0.5",
                   "--write", "--json")
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)
    assert set(chosen["scales"]) == {"1.0", "0.5"}
    assert chosen["mean_f1"] == max(s["mean_f1"] for s in chosen["scales"].values())
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["scale"] == chosen["scale"] and card["threshold"] == round(chosen["threshold"], 3)
    proc = run_cli("calibrate", "--model", str(model), "--data", str(sample_dir / "val"), "--scales", "9")
    assert proc.returncode == 2 and "scale 9.0 is outside 0.25-4" in proc.stderr
    proc = run_cli("predict", "--model", str(model), "--out", str(tmp_path / "half"), str(photo), "--scale", "0.5")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "half" / f"{photo.stem}_mask.png") as mask, Image.open(photo) as original:
        assert mask.size == original.size  # the mask keeps the photo's size at any scale
    _one_line_error(run_cli("evaluate", "--run", run_id, "--runs-dir", str(runs), "--data",
                            str(sample_dir / "test"), "--scale", "0.5"))

    proc = run_cli("runs", "list", "--runs-dir", str(runs), "--json")
    assert json.loads(proc.stdout)[0]["state"] == "completed"
    _one_line_error(run_cli("runs", "stop", run_id, "--runs-dir", str(runs)))  # not running
    _one_line_error(run_cli("runs", "resume", "nope", "--runs-dir", str(runs)))


def test_bad_input_is_one_line_with_exit_code_2(tmp_path):
    _one_line_error(run_cli("train", "--data", str(tmp_path / "missing"), "--runs-dir", str(tmp_path)))
    _one_line_error(run_cli("train", "--data", str(tmp_path), "--size", "100", "--runs-dir", str(tmp_path)))
    _one_line_error(run_cli("predict", "--out", str(tmp_path / "o"), str(tmp_path / "missing.jpg")))
    (tmp_path / "fake.keras").write_text("hello")
    (tmp_path / "x.png").write_bytes(b"")
    _one_line_error(run_cli("predict", "--model", str(tmp_path / "fake.keras"), "--out", str(tmp_path / "o"),
                            str(tmp_path / "x.png")))
    _one_line_error(run_cli("evaluate", "--data", str(tmp_path / "missing"), "--json"))
    _one_line_error(run_cli("runs", "resume", "../../etc", "--runs-dir", str(tmp_path)))

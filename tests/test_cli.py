"""Every subcommand from a shell, and bad input answered in one line with exit code 2."""

import csv
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import cli_here, run_cli


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_help_for_every_subcommand():
    for sub in ["sample-data", "train", "predict", "survey", "evaluate", "calibrate", "runs", "devices"]:
        proc = run_cli(sub, "--help", timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_sample_data(tmp_path):
    proc = run_cli("sample-data", str(tmp_path / "d"), "--count", "6", "--seed", "2", "--size", "64x96")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "dataset.json").is_file()
    assert len(list((tmp_path / "d").rglob("images/*.png"))) == 6


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, sample_dir):
    """A run trained from the command line, from a config file whose values flags override:
    (runs folder, run id, its model file)."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "c.json"
    config.write_text(json.dumps({"data": str(sample_dir), "preset": "tiny", "size": 64, "epochs": 5, "batch": 4,
                                  "crop_scale": [0.9, 1.1], "optimizer": "adamw"}))
    runs = tmp / "runs"
    # deep supervision on: the predict tests below then also show that such a run's model is a plain one;
    # and the boundary-aware loss, which needs the mask's neighbourhoods (a real run trains with it)
    proc = run_cli("train", "--config", str(config), "--epochs", "1", "--name", "flags", "--deep-supervision",
                   "--loss", "edge_tversky", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.splitlines()[0].split()[1]
    model = runs / run_id / "model.keras"
    assert model.is_file()
    return runs, run_id, model


def test_predict_writes_a_row_per_file_and_keeps_going_after_a_bad_one(cli_run, sample_dir, tmp_path):
    _, _, model = cli_run
    out = tmp_path / "pred"
    (tmp_path / "junk.png").write_text("not an image")
    proc = run_cli("predict", "--model", str(model), "--out", str(out), str(sample_dir / "test"),
                   str(tmp_path / "junk.png"), "--threshold", "0.4")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    photos = sorted((sample_dir / "test").rglob("images/*.png"))
    assert len(rows) == len(photos) + 1
    bad = [r for r in rows if r["error"]]
    assert [r["file"] for r in bad] == [str(tmp_path / "junk.png")] and "not a photo" in bad[0]["error"]
    for r in rows:
        if not r["error"]:  # each row names its own outputs, and they exist
            assert float(r["damaged_pct"]) >= 0 and (out / r["mask"]).is_file() and (out / r["overlay"]).is_file()
    assert "1 failed" in proc.stdout


def test_predict_measure_and_a_survey(cli_run, sample_dir, tmp_path, capsys):
    _, _, model = cli_run
    photos = str(sample_dir / "test")
    proc = cli_here(capsys, "predict", "--model", str(model), "--out", str(tmp_path / "p"), photos,
                    "--mm-per-px", "0.5")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "p" / "results.csv")))
    assert rows and all(r["grade"] != "" and (tmp_path / "p" / r["cracks_csv"]).is_file() for r in rows)
    proc = cli_here(capsys, "survey", "--model", str(model), "--out", str(tmp_path / "s"), photos, "--title", "t")
    assert proc.returncode == 0, proc.stderr
    assert "worst first" in proc.stdout and (tmp_path / "s" / "report.html").is_file()
    ranked = list(csv.DictReader(open(tmp_path / "s" / "survey.csv")))
    assert len(ranked) == len(rows) and "grade" not in ranked[0]  # no scale: no grade column
    for bad in ("abc", "0", "-2"):
        proc = cli_here(capsys, "survey", "--out", str(tmp_path / "x"), photos, "--mm-per-px", bad)
        assert proc.returncode == 2 and "millimetres per pixel" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_predict_with_every_photo_failing_exits_2_and_a_piped_job_says_how_far_it_is(cli_run, sample_dir, tmp_path):
    _, _, model = cli_run
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"not an image")
    proc = run_cli("predict", "--model", str(model), "--out", str(tmp_path / "o"), str(tmp_path / "a.png"),
                   str(tmp_path / "b.jpg"))
    _one_line_error(proc)
    assert "none of the 2 photo(s) could be segmented" in proc.stderr
    assert len(list(csv.DictReader(open(tmp_path / "o" / "results.csv")))) == 2  # and it says why for each
    # Output to a pipe (no terminal): plain progress lines instead of a bar that never shows.
    proc = run_cli("predict", "--model", str(model), "--out", str(tmp_path / "p"), str(sample_dir / "test"),
                   env={"UNET_PROGRESS_SECONDS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"segmenting: 1/\d+ \(\d+%\), about .* left", proc.stderr), proc.stderr


def test_evaluate_names_the_files_it_skipped(cli_run, sample_dir, tmp_path, capsys):
    import shutil

    _, _, model = cli_run
    split = tmp_path / "test"
    shutil.copytree(sample_dir / "test", split)
    broken = sorted(split.rglob("images/*.png"))[0]
    broken.write_bytes(b"garbage")
    proc = cli_here(capsys, "evaluate", "--model", str(model), "--data", str(split))
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {broken.relative_to(split)}: not a photo" in proc.stderr
    assert "1 file(s) skipped, listed above" in proc.stdout


def test_careful_mode_and_a_scale_in_one_call(cli_run, sample_dir, tmp_path, capsys):
    """Careful mode gives a photo and its mirror image the same answer; at another scale the
    mask keeps the photo's size."""
    _, _, model = cli_run
    photo = sorted((sample_dir / "test").rglob("images/*.png"))[0]
    Image.open(photo).transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / "mirrored.png")
    out = tmp_path / "careful"
    proc = cli_here(capsys, "predict", "--model", str(model), "--out", str(out), str(photo),
                    str(tmp_path / "mirrored.png"), "--flips", "--scale", "0.5")
    assert proc.returncode == 0, proc.stderr
    pcts = [float(r["damaged_pct"]) for r in csv.DictReader(open(out / "results.csv"))]
    assert len(pcts) == 2 and abs(pcts[0] - pcts[1]) < 0.01
    with Image.open(out / f"{photo.stem}_mask.png") as mask, Image.open(photo) as original:
        assert mask.size == original.size


def test_evaluate_a_run_stores_its_results_where_compare_finds_them(cli_run, sample_dir, capsys):
    runs, run_id, _ = cli_run
    proc = cli_here(capsys, "evaluate", "--run", run_id, "--runs-dir", str(runs), "--data", str(sample_dir / "test"),
                    "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"iou", "dice", "precision", "recall", "threshold", "n_images"} <= set(result)
    assert result["n_images"] == 2
    assert list((runs / run_id / "eval").glob("*/metrics.json"))
    # Compare shows the model's own predictions: careful mode or another scale needs --out
    for extra in (["--flips"], ["--scale", "0.5"]):
        _one_line_error(cli_here(capsys, "evaluate", "--run", run_id, "--runs-dir", str(runs), "--data",
                                 str(sample_dir / "test"), *extra))


def test_calibrate_writes_threshold_and_scale_to_the_card(cli_run, sample_dir, tmp_path, capsys):
    _, _, trained = cli_run
    model = tmp_path / "m.keras"  # a copy: the other tests use the run's own card
    model.write_bytes(trained.read_bytes())
    model.with_suffix(".json").write_bytes(trained.with_suffix(".json").read_bytes())
    proc = cli_here(capsys, "calibrate", "--model", str(model), "--data", str(sample_dir / "val"),
                    "--scales", "1", "0.5", "auto", "--write", "--json")
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)
    assert set(chosen["scales"]) == {"1.0", "0.5", "auto"}
    assert chosen["mean_f1"] == max(s["mean_f1"] for s in chosen["scales"].values())
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["scale"] == chosen["scale"] and card["threshold"] == round(chosen["threshold"], 3)
    assert card["calibration"]["mean_f1"] == chosen["mean_f1"] and card["preset"] == "tiny"
    proc = cli_here(capsys, "calibrate", "--model", str(model), "--data", str(sample_dir / "val"), "--scales", "9")
    assert proc.returncode == 2 and "scale 9.0 is outside 1/16-4" in proc.stderr
    # On a fold of the training photos instead (what a run trained with --fold 2/3 held out).
    proc = cli_here(capsys, "calibrate", "--model", str(model), "--data", str(sample_dir), "--fold", "2/3", "--json")
    assert proc.returncode == 0, proc.stderr
    from unet.data import fold_split, scan_dataset

    held = fold_split(scan_dataset(sample_dir).split("train"), 2, 3)[1]
    on_fold = json.loads(proc.stdout)
    assert on_fold["fold"] == "2/3" and on_fold["splits"][str(sample_dir)]["n_images"] == len(held)
    proc = cli_here(capsys, "calibrate", "--model", str(model), "--data", str(sample_dir), "--fold", "3/2")
    assert proc.returncode == 2 and "fold must be k/K" in proc.stderr


def test_runs_list_stop_resume_and_start(cli_run, capsys):
    runs, run_id, _ = cli_run
    proc = cli_here(capsys, "runs", "list", "--runs-dir", str(runs), "--json")
    assert json.loads(proc.stdout)[0]["state"] == "completed"
    proc = cli_here(capsys, "runs", "list", "--runs-dir", str(runs))
    assert run_id in proc.stdout and "completed" in proc.stdout
    _one_line_error(cli_here(capsys, "runs", "stop", run_id, "--runs-dir", str(runs)))  # not running
    _one_line_error(cli_here(capsys, "runs", "resume", "nope", "--runs-dir", str(runs)))
    # starting a run that has trained again would replace its history and model: asked for
    proc = run_cli("runs", "start", run_id, "--runs-dir", str(runs))
    _one_line_error(proc)
    assert "runs start --restart" in proc.stderr


def test_a_config_file_with_flags_that_override_it(cli_run, tmp_path, sample_dir):
    runs, run_id, _ = cli_run
    stored = json.loads((runs / run_id / "config.json").read_text())
    assert (stored["epochs"], stored["name"], stored["optimizer"], stored["crop_scale"]) == (1, "flags", "adamw",
                                                                                              [0.9, 1.1])
    assert stored["deep_supervision"] is True and stored["loss"] == "edge_tversky"
    assert "-flags-" in run_id
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": str(sample_dir), "threshold": 5, "crop_scale": [0, 0]}))
    proc = run_cli("train", "--config", str(bad), "--runs-dir", str(tmp_path / "runs"))
    _one_line_error(proc)
    assert "threshold must be between 0 and 1" in proc.stderr and "crop_scale" in proc.stderr
    bad.write_text("{not json")
    _one_line_error(run_cli("train", "--config", str(bad), "--runs-dir", str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made


def test_a_bug_shows_its_traceback_and_exit_code_1(monkeypatch, capsys):
    """Only the package's own errors are bad input; anything else is a bug and must not be
    dressed up as the user's mistake."""
    import unet.devices
    from unet.cli import main

    def broken():
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(unet.devices, "list_devices", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["devices"])  # not caught: Python prints the traceback and exits with 1
    from unet.errors import UnetError

    def refused():
        raise UnetError("x.png: a problem with the input")

    monkeypatch.setattr(unet.devices, "list_devices", refused)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: x.png: a problem with the input"


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


def test_a_bundled_model_by_its_name_from_any_folder(sample_dir, tmp_path, capsys, monkeypatch):
    """`default` and `noise-robust` name the bundled models wherever the command runs: both
    compared on one split, each at its own card's threshold; an unknown name says what exists."""
    from unet.damage_model import ModelCard
    from unet.model import DEFAULT_MODEL, NOISE_ROBUST_MODEL

    monkeypatch.chdir(tmp_path)
    proc = cli_here(capsys, "compare", "default", "noise-robust", "--data", str(sample_dir / "test"), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["models"]
    assert [r["threshold"] for r in rows] == [ModelCard.read(p).threshold for p in (DEFAULT_MODEL, NOISE_ROBUST_MODEL)]
    assert rows[0]["threshold"] != rows[1]["threshold"]
    proc = cli_here(capsys, "evaluate", "--model", "noise", "--data", str(sample_dir / "test"))
    assert proc.returncode == 2 and "noise: model file does not exist (a .keras file, or a bundled model: default, " \
                                      "noise-robust)" in proc.stderr, proc.stderr


def test_predict_with_the_default_names_the_dim_photos_for_the_noise_robust_model(tmp_path, capsys):
    """A dim photo (brightened for the model) is named with a pointer to --model noise-robust; a
    photo lit like the training photos is not, and with the noise-robust model nothing is said."""
    from unet.synthetic import damaged_wall

    image, _, _ = damaged_wall(1000, 96, 128)
    Image.fromarray((image * 0.3).astype("uint8")).save(tmp_path / "stairwell.png")
    Image.fromarray(image).save(tmp_path / "daylight.png")
    photos = [str(tmp_path / "stairwell.png"), str(tmp_path / "daylight.png")]
    proc = cli_here(capsys, "predict", "--out", str(tmp_path / "a"), *photos)
    assert proc.returncode == 0, proc.stderr
    assert "1 photo(s) dim or grainy (stairwell.png): --model noise-robust usually keeps more of their cracks" \
        in proc.stdout, proc.stdout
    notes = {r["file"]: r["note"] for r in csv.DictReader(open(tmp_path / "a" / "results.csv"))}
    assert notes[photos[0]].startswith("a dark photo") and not notes[photos[1]].startswith("a dark photo")
    proc = cli_here(capsys, "predict", "--model", "noise-robust", "--out", str(tmp_path / "b"), *photos)
    assert proc.returncode == 0 and "dim or grainy" not in proc.stdout, proc.stdout


def test_a_survey_names_the_photos_to_check_by_eye_on_the_console_and_in_its_report(tmp_path, capsys):
    """A photo far too dark to trust gets a low confidence: its console line says so with its
    note, a closing line names it (with the pointer to the noise-robust model, as predict's), and
    the report lists it at the top, linked to its card, which says why; a lit photo stays high."""
    from unet.synthetic import measured_cracks

    image = measured_cracks(3, 192, 256, per_side=2, widths=(6, 8))[0]
    Image.fromarray(image).save(tmp_path / "daylight.png")
    Image.fromarray((image * 0.05).astype("uint8")).save(tmp_path / "cellar.png")
    proc = cli_here(capsys, "survey", "--out", str(tmp_path / "s"), str(tmp_path / "daylight.png"),
                    str(tmp_path / "cellar.png"), "--mm-per-px", "1")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(": ", 1)[0].strip().rsplit("/", 1)[-1]: line for line in proc.stdout.splitlines()}
    assert "low confidence, check it by eye: a dark photo" in lines["cellar.png"] and "retake" in lines["cellar.png"]
    assert "low confidence" not in lines["daylight.png"], proc.stdout
    assert "1 photo(s) with low confidence, to check by eye before trusting their masks: cellar.png" in proc.stdout
    assert "(cellar.png): --model noise-robust usually keeps more of their cracks" in proc.stdout
    rows = {Path(r["file"]).name: r for r in csv.DictReader(open(tmp_path / "s" / "survey.csv"))}
    assert rows["cellar.png"]["confidence"] == "low" and rows["daylight.png"]["confidence"] == "high"
    page = (tmp_path / "s" / "report.html").read_text()
    top = page[page.index("photo(s) measured"):page.index("<h2>Map")]
    assert "1 photo(s) to check by eye</b>" in top and ">cellar.png</a>: a dark photo" in top
    assert "daylight.png" not in top
    cards = page.split("<section class='card'")[1:]
    cellar = next(c for c in cards if "cellar.png</h3>" in c)
    daylight = next(c for c in cards if "daylight.png</h3>" in c)
    assert "<b>low: check it by eye</b>; a dark photo" in cellar and "<td>high" in daylight

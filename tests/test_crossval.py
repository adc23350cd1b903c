"""K-fold cross-validation of a recipe: K real tiny trainings, each scored on the fold it never saw."""

import json
import statistics

import numpy as np
import pytest

from conftest import cli_here
from unet.config import TrainConfig
from unet.crossval import cross_validate, summary_path
from unet.errors import ConfigError
from unet.runs import get_run, list_runs


def test_a_recipe_is_trained_per_fold_scored_on_its_fold_and_continued_where_it_stopped(tmp_path, sample_dir, capsys):
    # "validation": false, as a final training's recipe says: each fold's run still validates on its fold
    recipe = {"data": str(sample_dir), "preset": "tiny", "size": 64, "epochs": 1, "batch": 4, "steps_per_epoch": 2,
              "name": "cv-tiny", "validation": False}
    cfg = TrainConfig.from_dict(recipe)
    runs = tmp_path / "runs"

    first = cross_validate(cfg, 2, runs, only=[2], scales=[1.0])  # one fold now, as a long job cut short
    assert set(first["runs"]) == {"2"} and first["mean"]["folds_scored"] == 1
    fold2 = first["runs"]["2"]["run"]

    done = cross_validate(cfg, 2, runs, scales=[1.0])  # the rest later: fold 2 is kept, fold 1 trained
    log = capsys.readouterr().out
    assert done["runs"]["2"]["run"] == fold2 and len(list_runs(runs)) == 2
    for k in ("1", "2"):
        r = done["runs"][k]
        run = get_run(r["run"], runs)
        assert run.config()["fold"] == f"{k}/2" and run.state == "completed"
        assert f"(fold {k}/2 of the training photos; the val split is not read)" in log
        assert 0.0 <= r["mean_f1"] <= 1.0 and r["scale"] == 1.0 and set(r["f1"]) == {sample_dir.name}
    m = done["mean"]
    assert m["folds_scored"] == 2
    assert m["mean_f1"]["mean"] == pytest.approx(statistics.fmean(done["runs"][k]["mean_f1"] for k in "12"))
    assert m["mean_f1"]["sd"] == pytest.approx(statistics.stdev(done["runs"][k]["mean_f1"] for k in "12"))
    assert json.loads(summary_path(cfg, 2, runs).read_text()) == done

    # Out of fold: each fold's photos with their counts at the fold's threshold; pooled, every
    # training photo once, scored by the model that never saw it.
    from unet.data import scan_dataset
    from unet.metrics import scores

    train_ids = sorted(s.id for s in scan_dataset(sample_dir).split("train"))
    assert sorted(i for k in "12" for i, *_ in done["runs"][k]["images"][sample_dir.name]) == train_ids
    for k in "12":  # the counts give back the F1 the fold's calibration chose its threshold by
        tp, fp, fn = np.array([c for _, *c in done["runs"][k]["images"][sample_dir.name]]).sum(0)
        assert scores(tp, fp, fn)["dice"] == pytest.approx(done["runs"][k]["f1"][sample_dir.name], abs=1e-9)
    oof = m["out_of_fold"][sample_dir.name]
    assert oof["photos"] == len(train_ids) == oof["sources"]  # generated photos: each its own source
    assert oof["interval"][0] <= oof["dice"] <= oof["interval"][1]

    # A fold recorded before the counts were: scored again, not trained again.
    path = summary_path(cfg, 2, runs)
    record = json.loads(path.read_text())
    del record["runs"]["1"]["images"]
    path.write_text(json.dumps(record))
    again = cross_validate(cfg, 2, runs, scales=[1.0])
    assert f"scoring run {done['runs']['1']['run']} again" in capsys.readouterr().out
    assert again["runs"]["1"]["images"] == done["runs"]["1"]["images"] and len(list_runs(runs)) == 2

    # Two recipes compared on the photos both scored (here the summary with itself).
    other = tmp_path / "other.json"
    other.write_text(path.read_text())
    proc = cli_here(capsys, "compare", str(path), str(other))
    assert proc.returncode == 0, proc.stderr
    assert f"out-of-fold F1 {oof['dice']:.4f}" in proc.stdout and "cannot tell them apart" in proc.stdout
    proc = cli_here(capsys, "compare", str(path), str(other), "--data", str(sample_dir))
    assert proc.returncode == 2 and "crossval summaries (.json) alone" in proc.stderr

    # The command line: nothing left to train, the table printed.
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    proc = cli_here(capsys, "crossval", "--config", str(tmp_path / "recipe.json"), "--folds", "2",
                    "--scales", "1", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "fold 1/2: done already" in out and "fold 2/2: done already" in out and len(list_runs(runs)) == 2
    assert f"{m['mean_f1']['mean']:.4f}" in next(line for line in out.splitlines() if line.startswith("mean "))
    assert f"out of fold, {sample_dir.name}: F1 {m['out_of_fold'][sample_dir.name]['dice']:.4f}" in out

    # Another recipe under the same name is refused, not mixed in.
    for other, scales in (({**recipe, "epochs": 2}, [1.0]), (recipe, ["auto"])):
        with pytest.raises(ConfigError, match=r"another recipe \(or scored at other scales\) under this name"):
            cross_validate(TrainConfig.from_dict(other), 2, runs, scales=scales)
    assert len(list_runs(runs)) == 2
    # The same recipe with its data copied elsewhere (another machine, a GPU): the folds count together.
    import shutil

    moved = tmp_path / "elsewhere" / sample_dir.name
    shutil.copytree(sample_dir, moved)
    there = cross_validate(TrainConfig.from_dict({**recipe, "data": str(moved)}), 2, runs, scales=[1.0])
    assert "fold 1/2: done already" in capsys.readouterr().out and len(list_runs(runs)) == 2
    assert there["runs"] == done["runs"]
    # A summary written before a config key existed (here: noise, with its default) continues.
    path = summary_path(cfg, 2, runs)
    record = json.loads(path.read_text())
    assert record["recipe"].pop("noise") == 0.0
    path.write_text(json.dumps(record))
    assert cross_validate(cfg, 2, runs, scales=[1.0])["runs"] == done["runs"]
    with pytest.raises(ConfigError, match="another recipe"):
        cross_validate(TrainConfig.from_dict({**recipe, "noise": 0.05}), 2, runs, scales=[1.0])
    # Folds drawn under an earlier rule for grouping photos by source hold other photos: not mixed in.
    path = summary_path(cfg, 2, runs)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "grouping"}))
    with pytest.raises(ConfigError, match="grouped by source another way"):
        cross_validate(cfg, 2, runs, scales=[1.0])
    path.write_text(json.dumps(record))
    proc = cli_here(capsys, "crossval", "--config", str(tmp_path / "recipe.json"), "--folds", "2",
                    "--only", "3", "--runs-dir", str(runs))
    assert proc.returncode == 2 and "fold must be k/K" in proc.stderr

    # Folds spread over processes (--only): a fold another process is still training is shown
    # as such, and is no failure of this command's fold.
    path = next(runs.glob("crossval-*-2.json"))
    record = json.loads(path.read_text())
    record["runs"]["2"] = {"run": record["runs"]["2"]["run"], "state": "training"}
    path.write_text(json.dumps(record))
    proc = cli_here(capsys, "crossval", "--config", str(tmp_path / "recipe.json"), "--folds", "2",
                    "--scales", "1", "--only", "1", "--runs-dir", str(runs))
    assert proc.returncode == 0 and "not scored" not in proc.stderr, proc.stderr
    assert "(training)" in proc.stdout


def test_a_fold_whose_run_was_stopped_is_resumed_from_its_checkpoint(tmp_path, sample_dir, capsys):
    """A fold's run stopped after its first epoch (the Train page's Stop, or a job's end) is
    recorded as stopped; the same command again resumes that run, not a new one."""
    import threading

    from conftest import epochs_of, wait_for
    from unet.runs import Run

    # Three epochs: the stop, written once the first is recorded, lands before the run ends even
    # on a loaded machine (with two, the second epoch's two tiny steps sometimes finished first).
    cfg = TrainConfig.from_dict({"data": str(sample_dir), "preset": "tiny", "size": 64, "epochs": 3, "batch": 4,
                                 "steps_per_epoch": 2, "name": "cv-stop"})
    runs = tmp_path / "runs"

    def stop_after_the_first_epoch():
        def first_epoch_done():
            found = [Run(p) for p in runs.glob("*-cv-stop-fold1of2-*")]
            return bool(found) and epochs_of(found[0]) == [1] and found[0]
        assert wait_for(first_epoch_done, timeout=120, poll=0.05)
        first_epoch_done().stop_path.write_text("stop")

    stopper = threading.Thread(target=stop_after_the_first_epoch)
    stopper.start()
    first = cross_validate(cfg, 2, runs, only=[1], scales=[1.0])
    stopper.join()
    entry = first["runs"]["1"]
    assert entry["state"] == "stopped" and "mean_f1" not in entry and not first.get("mean")
    assert "fold 1/2: run" in capsys.readouterr().out

    again = cross_validate(cfg, 2, runs, only=[1], scales=[1.0])
    assert f"fold 1/2: resuming run {entry['run']}" in capsys.readouterr().out
    assert again["runs"]["1"]["run"] == entry["run"] and len(list_runs(runs)) == 1
    run = get_run(entry["run"], runs)
    assert run.state == "completed" and epochs_of(run) == [1, 2, 3] and again["mean"]["folds_scored"] == 1

    # The final model: the recipe on every training photo, nothing held out (the val split not
    # read), its card from the fold scored so far, not from photos it trained on.
    from unet.crossval import final_model
    from unet.data import scan_dataset
    from unet.model import load_model

    scored = again["runs"]["1"]
    final = final_model(cfg, 2, runs)
    out = capsys.readouterr().out
    assert final["state"] == "completed" and final["card"] and final["from_folds"] == [1]
    assert final["threshold"] == round(scored["threshold"], 3) and final["scale"] == scored["scale"] == 1.0
    last = get_run(final["run"], runs)
    assert last.config()["fold"] is None and last.config()["validation"] is False
    n_train = len(scan_dataset(sample_dir).split("train"))
    assert f"data: {n_train} training and 0 validation photos (no validation: the val split is not read" in out
    assert epochs_of(last) == [1, 2, 3] and not any(k.startswith("val_") for k in last.history()[0])
    assert [int(r["best"]) for r in last.history()] == [1, 1, 1]  # every epoch the newest: the last one is the model
    card = load_model(last.model_path).card
    assert card.threshold == final["threshold"] and card.calibration["from_folds"] == [1]
    assert "never saw" in card.calibration["how"] and "cross-validation folds" in card.threshold_origin()
    assert json.loads(summary_path(cfg, 2, runs).read_text())["final"]["run"] == last.id
    # Again: no second training; the card is renewed from the folds recorded by then.
    assert final_model(cfg, 2, runs)["run"] == last.id and len(list_runs(runs)) == 2
    # The command line installs it where it is to be used (--out): weights and card.
    (tmp_path / "recipe.json").write_text(json.dumps(cfg.to_dict()))
    args = ["crossval", "--config", str(tmp_path / "recipe.json"), "--folds", "2", "--runs-dir", str(runs)]
    proc = cli_here(capsys, *args, "--final", "--out", str(tmp_path / "models" / "default.keras"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["out"] == str(tmp_path / "models" / "default.keras")
    installed = load_model(tmp_path / "models" / "default.keras")
    assert installed.card.threshold == final["threshold"] and installed.card.calibration["from_folds"] == [1]
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3)).astype("float32")
    assert np.allclose(installed.network.predict(x, verbose=0), load_model(last.model_path).network.predict(x, verbose=0),
                       atol=1e-5)
    assert len(list_runs(runs)) == 2
    proc = cli_here(capsys, *args, "--only", "1", "--out", str(tmp_path / "x.keras"))
    assert proc.returncode == 2 and "goes with --final" in proc.stderr

    # Started before any fold is scored (beside the folds' commands), it trains and says its card waits.
    early = final_model(TrainConfig.from_dict({**cfg.to_dict(), "name": "no-fold-yet", "epochs": 1}), 2, runs)
    assert early["state"] == "completed" and early["card"] is False and "no fold is scored yet" in capsys.readouterr().out
    assert load_model(get_run(early["run"], runs).model_path).card.calibration is None
    with pytest.raises(ConfigError, match="holds out no fold"):
        TrainConfig.from_dict({**cfg.to_dict(), "fold": "1/2", "validation": False}).validate()

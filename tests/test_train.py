"""Training runs: the run folder, configs, fine-tuning, memory, folds, weight averaging.

Runs started, stopped, killed, queued and spread over devices or processes are in
test_train_processes.py (a file of its own, so the two halves run on different test workers).
"""

import numpy as np
import pytest

from conftest import epochs_of
from unet.runs import TrainConfig, create_run, get_run, list_runs


def test_tiny_run_leaves_a_complete_run_folder(trained_tiny):
    run = trained_tiny
    st = run.status()
    assert st["state"] == "completed" and st["error"] is None and st["ended_at"]
    assert epochs_of(run) == [1, 2]
    row = run.history()[-1]
    assert {"loss", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall"} <= set(row)
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file() and run.model_path.is_file()
    cfg = run.config()
    # config.json is the definition alone, exactly as created (the trainer never rewrites it)...
    assert set(cfg) == set(TrainConfig().to_dict())
    assert TrainConfig.from_dict(cfg).validate().preset == "tiny"
    # ...and where it trained has its own file
    env = run.environment()
    assert env["backend"] == "tensorflow" and env["devices"] and env["keras"] and env["precision"] == "float32"
    assert run.progress()["epoch"] == 2 and run.progress()["batch_losses"]
    assert any((run.dir / "tensorboard").rglob("events.out.tfevents*"))
    assert [r.id for r in list_runs(run.dir.parent)] == [run.id]
    # The model's threshold was chosen on the run's validation photos (as the bundled model's was),
    # not left at the config's 0.5; the record says so and where it came from.
    from unet.damage_model import ModelCard

    card = ModelCard.read(run.model_path)
    assert card.calibration and "auto" in card.calibration and card.calibration["splits"]
    assert card.threshold == round(card.calibration["threshold"], 3) and 0 < card.threshold < 1
    # ...by the rule that a missed crack costs more than a false alarm (issue #14): the best F1
    # where recall is at least precision - 0.05 on every split, never above the F1 peak
    cal = card.calibration
    assert cal["mean_f1"] <= cal["peak_f1"] + 1e-12
    for split in cal["splits"].values():
        if cal["rule"].startswith("best mean F1 with recall"):
            assert split["recall_at_threshold"] >= split["precision_at_threshold"] - 0.05
        else:
            assert cal["rule"].startswith("F1 peak (no threshold")


def test_run_ids_cannot_escape_the_runs_folder(tmp_path):
    for bad in ["../x", "/etc", "a/b", "..", ""]:
        with pytest.raises((ValueError, FileNotFoundError)):
            get_run(bad, tmp_path)


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        TrainConfig(size=100).validate()
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge").validate()
    with pytest.raises(ValueError, match=r"brightness must be at least 0 and below 1.*contrast must be"):
        TrainConfig(brightness=1.5, contrast=-0.1).validate()
    with pytest.raises(ValueError, match="color must be at least 0 and below 1"):
        TrainConfig(color=-0.2).validate()
    with pytest.raises(ValueError, match="noise must be at least 0 and below 1"):
        TrainConfig(noise=1.0).validate()


def test_the_config_sets_how_far_brightness_and_contrast_vary(sample_dir, capsys):
    """From the command line to the crops: a wider range gives crops further from the photos'
    own light; a config without the keys (an older run's) keeps +-15%."""
    from conftest import cli_here
    from unet.data import load_pairs, random_pair, training_splits
    from unet.train import augment_of

    assert TrainConfig.from_dict({"data": "d"}).brightness == 0.15 and augment_of(TrainConfig()).contrast == 0.15
    assert augment_of(TrainConfig(augment=False)).brightness == 0
    assert TrainConfig.from_dict({"data": "d"}).color == 0 and augment_of(TrainConfig(color=0.2)).color == 0.2
    assert TrainConfig.from_dict({"data": "d"}).noise == 0 and augment_of(TrainConfig(noise=0.08)).noise == 0.08
    proc = cli_here(capsys, "train", "--data", str(sample_dir), "--brightness", "2", "--epochs", "1")
    assert proc.returncode == 2 and "brightness must be at least 0 and below 1" in proc.stderr
    proc = cli_here(capsys, "train", "--data", str(sample_dir), "--color", "1", "--epochs", "1")
    assert proc.returncode == 2 and "color must be at least 0 and below 1" in proc.stderr
    proc = cli_here(capsys, "train", "--data", str(sample_dir), "--noise", "-0.1", "--epochs", "1")
    assert proc.returncode == 2 and "noise must be at least 0 and below 1" in proc.stderr
    image, mask = load_pairs(training_splits(sample_dir)[0])[0][0]

    def spread(cfg):  # how far the crops' mean brightness strays from the photo's own
        aug = augment_of(cfg)
        return np.mean([abs(random_pair(image, mask, 64, np.random.default_rng(i), aug)[0].mean() - image.mean())
                        for i in range(40)])

    narrow, wide = spread(TrainConfig()), spread(TrainConfig(brightness=0.6, contrast=0.5))
    assert wide > 2.5 * narrow, (narrow, wide)


def test_fine_tune_from_a_saved_model(tmp_path, sample_dir, trained_tiny, capsys):
    from unet.train import execute

    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=4,
                                 init_from=str(trained_tiny.model_path)), tmp_path)
    assert execute(run) == "completed"
    assert "weights initialised from" in capsys.readouterr().out
    wrong = create_run(TrainConfig(data=str(sample_dir), preset="lite", size=64, epochs=1, batch=4,
                                   init_from=str(trained_tiny.model_path)), tmp_path)
    assert execute(wrong) == "failed"
    assert "is not preset 'lite'" in wrong.status()["error"]


def test_resuming_never_loses_a_calibrated_card(tmp_path, trained_tiny, capsys):
    import json
    import shutil

    from unet.damage_model import DamageModel
    from unet.train import execute

    copy = tmp_path / trained_tiny.id
    shutil.copytree(trained_tiny.dir, copy)
    run = get_run(copy.name, tmp_path)
    DamageModel.load(run.model_path).update_card(threshold=0.19, calibration={"mean_f1": 0.7})
    before = run.model_path.with_suffix(".json").read_text()
    assert execute(run, resume=True) == "completed"  # all epochs done: nothing to train
    assert "all 2 epochs already done; nothing to train" in capsys.readouterr().out
    assert run.model_path.with_suffix(".json").read_text() == before
    # trained on: the calibrated threshold stays, its record says it is stale
    cfg = json.loads(run.config_path.read_text())
    run.config_path.write_text(json.dumps({**cfg, "epochs": cfg["epochs"] + 1}))
    assert execute(run, resume=True) == "completed"
    card = json.loads(run.model_path.with_suffix(".json").read_text())
    assert card["threshold"] == 0.19 and card["calibration"]["mean_f1"] == 0.7 and "stale" in card["calibration"]


def test_damaged_run_folders_are_listed_as_unreadable_and_the_rest_carry_on(tmp_path, trained_tiny):
    import json
    import shutil

    from conftest import run_cli

    for name in ("good", "list-status", "int-status", "truncated", "int-created"):
        shutil.copytree(trained_tiny.dir, tmp_path / name)
    (tmp_path / "list-status" / "status.json").write_text("[1]")
    (tmp_path / "int-status" / "config.json").write_text("7")
    (tmp_path / "truncated" / "status.json").write_text('{"state": "runn')
    cfg = json.loads((tmp_path / "int-created" / "config.json").read_text())
    (tmp_path / "int-created" / "config.json").write_text(json.dumps({**cfg, "created_at": 5}))
    proc = run_cli("runs", "list", "--runs-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    states = {r["run"]: r["state"] for r in json.loads(proc.stdout)}
    assert states == {"good": "completed", "list-status": "unreadable", "int-status": "unreadable",
                      "truncated": "unreadable", "int-created": "completed"}
    proc = run_cli("runs", "resume", "truncated", "--runs-dir", str(tmp_path), "--detach")
    assert proc.returncode == 2 and "damaged" in proc.stderr


def test_a_run_too_large_for_memory_is_refused_before_it_is_killed(tmp_path, sample_dir):
    from unet.train import execute

    run = create_run(TrainConfig(data=str(sample_dir), preset="lite", size=4096, epochs=1, batch=64), tmp_path)
    assert execute(run) == "failed"
    error = run.status()["error"]
    assert "size 4096 at batch 64 needs about" in error and "lower the batch or the size" in error
    assert not run.last_checkpoint.exists()


def test_training_memory_estimate_grows_with_batch_and_size():
    from unet.model import build_unet
    from unet.train import training_memory

    small, big = build_unet("tiny", 64), build_unet("tiny", 128)
    one = training_memory(small, 1, False)
    assert training_memory(small, 2, False) > one and training_memory(big, 1, False) > 3 * one // 2
    assert training_memory(small, 8, True) < training_memory(small, 8, False)  # bfloat16 activations


def test_pooled_datasets_and_a_time_budget(tmp_path, sample_dir, capsys):
    from unet.data import training_splits
    from unet.synthetic import write_sample_dataset
    from unet.train import execute

    other = tmp_path / "other"
    write_sample_dataset(other, count=6, seed=11, size=(64, 80))
    expected = sum(len(training_splits(str(d))[0]) for d in (sample_dir, other))
    run = create_run(TrainConfig(data=[str(sample_dir), str(other)], preset="tiny", size=64, epochs=20, batch=4,
                                 time_budget_min=0.0001), tmp_path / "runs")
    assert execute(run) == "completed"
    out = capsys.readouterr().out
    assert f"data: {expected} training" in out  # both datasets' photos
    assert run.config()["data"] == [str(sample_dir.resolve()), str(other.resolve())]
    # the budget ran out in the first epoch, which still counts, and the run completes
    assert "time budget of 0.0001 min reached: this epoch is the last" in out
    assert epochs_of(run) == [1] and run.model_path.is_file()


def test_a_run_on_a_fold_validates_on_held_out_training_photos_and_never_reads_val(tmp_path, sample_dir, capsys):
    from unet.data import fold_split, scan_dataset
    from unet.train import execute

    scan = scan_dataset(sample_dir)
    rest, held = fold_split(scan.split("train"), 2, 3)
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=4, fold="2/3"),
                     tmp_path / "runs")
    assert execute(run) == "completed", run.log_tail()
    out = capsys.readouterr().out
    assert (f"data: {len(rest)} training and {len(held)} validation photos (fold 2/3 of the training photos; "
            "the val split is not read)") in out
    assert len(held) != len(scan.split("val"))  # not the val split by another name
    assert run.config()["fold"] == "2/3"
    from unet.errors import ConfigError

    with pytest.raises(ConfigError, match="fold"):
        TrainConfig(fold="4/3").validate()


def test_weight_averaging_is_what_validation_sees_and_what_the_run_exports(tmp_path, sample_dir, trained_tiny):
    """``ema``: validation scores the averaged weights (so the best checkpoint is chosen on
    them), the checkpoint keeps the trained weights with the average in its optimizer state
    (a resumed run goes on averaging), and model.keras is the average."""
    import keras

    from unet.errors import ConfigError
    from unet.train import _averaged_weights, _data, execute, keras_dataset

    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4, ema=0.8,
                      learning_rate=0.01)
    run = create_run(cfg, tmp_path)
    assert execute(run) == "completed", run.log_tail()
    best_row = max(run.history(), key=lambda r: r["val_dice"])
    checkpoint = keras.saving.load_model(run.best_checkpoint, safe_mode=True)
    trained = [keras.ops.convert_to_numpy(v) for v in checkpoint.trainable_variables]
    _, val_b, _, _ = _data(cfg, lambda line: None)
    raw_loss = checkpoint.evaluate(keras_dataset(val_b, workers=1), verbose=0, return_dict=True)["loss"]
    _averaged_weights(checkpoint)
    averaged = [keras.ops.convert_to_numpy(v) for v in checkpoint.trainable_variables]
    avg_loss = checkpoint.evaluate(keras_dataset(val_b, workers=1), verbose=0, return_dict=True)["loss"]
    assert not all(np.allclose(a, b) for a, b in zip(trained, averaged))  # the average is not the trained
    assert avg_loss == pytest.approx(best_row["val_loss"], rel=1e-3, abs=1e-4)
    assert abs(raw_loss - best_row["val_loss"]) > 1e-3
    exported = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    assert all(np.allclose(a, keras.ops.convert_to_numpy(b)) for a, b in zip(averaged, exported.trainable_variables))
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.0).validate()
    # a checkpoint of a run without averaging cannot be averaged: said, not guessed
    from unet.model import ModelError

    with pytest.raises(ModelError, match="no weight average"):
        _averaged_weights(keras.saving.load_model(trained_tiny.best_checkpoint, safe_mode=True))


def test_a_deeply_supervised_run_trains_side_maps_and_exports_the_plain_preset(tmp_path, sample_dir):
    """``deep_supervision``: the checkpoints hold the side maps (a resumed run goes on with them);
    model.keras is the preset's own network, with the averaged weights when ``ema`` is on too."""
    import json

    import keras

    from unet.model import build_unet, main_network
    from unet.train import _averaged_weights, execute

    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=4, ema=0.8,
                      deep_supervision=True)
    run = create_run(cfg, tmp_path)
    assert execute(run) == "completed", run.log_tail()
    checkpoint = keras.saving.load_model(run.last_checkpoint, safe_mode=True)
    assert checkpoint.output_shape[-1] == 4 and checkpoint.loss.name == "deep_supervision_loss"
    assert {"val_dice", "val_recall"} <= set(run.history()[-1])
    exported = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    assert [layer.name for layer in exported.layers] == [layer.name for layer in build_unet("tiny", 64).layers]
    best = keras.saving.load_model(run.best_checkpoint, safe_mode=True)
    _averaged_weights(best)
    for a, b in zip(main_network(best).get_weights(), exported.get_weights()):
        np.testing.assert_allclose(a, b)
    cfg_file = json.loads(run.config_path.read_text())
    run.config_path.write_text(json.dumps({**cfg_file, "epochs": 2}))
    assert execute(run, resume=True) == "completed", run.log_tail()
    assert epochs_of(run) == [1, 2]
    with pytest.raises(Exception, match="deep_supervision"):
        TrainConfig(deep_supervision="yes").validate()

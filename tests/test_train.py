"""Training runs as real processes: files, stop, resume, and a killed run."""

import os
import signal
import time

import pytest

from unet.runs import TrainConfig, create_run, get_run, launch, list_runs, request_stop, wait


def _epochs(run):
    return [int(r["epoch"]) for r in run.history()]


def _wait_for(cond, timeout=120, poll=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return False


def test_tiny_run_leaves_a_complete_run_folder(trained_tiny):
    run = trained_tiny
    st = run.status()
    assert st["state"] == "completed" and st["error"] is None and st["ended_at"]
    assert _epochs(run) == [1, 2]
    row = run.history()[-1]
    assert {"loss", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall"} <= set(row)
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file() and run.model_path.is_file()
    cfg = run.config()
    for key in ("data", "preset", "size", "loss", "optimizer", "learning_rate", "epochs", "batch", "augment",
                "seed", "backend", "devices"):
        assert key in cfg, key
    assert cfg["backend"] == "tensorflow"
    assert run.progress()["epoch"] == 2 and run.progress()["batch_losses"]
    assert any((run.dir / "tensorboard").rglob("events.out.tfevents*"))
    assert [r.id for r in list_runs(run.dir.parent)] == [run.id]


def test_stop_then_resume_gives_an_unbroken_history(tmp_path, sample_dir):
    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=12, batch=4, steps_per_epoch=8)
    run = create_run(cfg, tmp_path)
    launch(run)
    assert _wait_for(lambda: len(_epochs(run)) >= 2), run.log_tail()
    assert request_stop(run)
    st = wait(run, timeout=60)
    assert st["state"] == "stopped", run.log_tail()
    done = run.epochs_done()
    assert 2 <= done < 12 and _epochs(run) == list(range(1, done + 1))
    assert run.last_checkpoint.is_file()
    assert "stopped on request" in run.log_tail()
    launch(run, resume=True)
    st = wait(run, timeout=180)
    assert st["state"] == "completed", run.log_tail()
    assert _epochs(run) == list(range(1, 13))
    assert len(st["resumed_at"]) == 1


def test_killed_run_is_reported_failed_and_resumes(tmp_path, sample_dir):
    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=12, batch=4, steps_per_epoch=8)
    run = create_run(cfg, tmp_path)
    launch(run)
    assert _wait_for(lambda: len(_epochs(run)) >= 2 and run.status()["state"] == "running"), run.log_tail()
    os.kill(run.raw_status()["pid"], signal.SIGKILL)
    assert _wait_for(lambda: run.status()["state"] == "failed", timeout=10)
    assert "ended unexpectedly" in run.status()["error"]
    done = run.epochs_done()
    assert _epochs(run)[:done] == list(range(1, done + 1))
    launch(run, resume=True)
    st = wait(run, timeout=180)
    assert st["state"] == "completed", run.log_tail()
    assert _epochs(run) == list(range(1, 13))  # no gap, no duplicate


def test_two_runs_started_at_once_keep_to_their_own_files(tmp_path, sample_dir):
    a = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4, seed=1), tmp_path)
    b = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=3, batch=4, seed=2), tmp_path)
    assert a.dir != b.dir
    launch(a)
    launch(b)
    assert wait(a, timeout=180)["state"] == "completed", a.log_tail()
    assert wait(b, timeout=180)["state"] == "completed", b.log_tail()
    assert _epochs(a) == [1, 2] and _epochs(b) == [1, 2, 3]
    assert a.config()["seed"] == 1 and b.config()["seed"] == 2
    assert a.raw_status()["pid"] != b.raw_status()["pid"]
    assert f"run {a.id}" in a.log_tail(200) and f"run {b.id}" not in a.log_tail(200)


def test_run_ids_cannot_escape_the_runs_folder(tmp_path):
    for bad in ["../x", "/etc", "a/b", "..", ""]:
        with pytest.raises((ValueError, FileNotFoundError)):
            get_run(bad, tmp_path)


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        TrainConfig(size=100).validate()
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge").validate()


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

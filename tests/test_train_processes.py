"""Training runs as real processes: stop, resume, a killed run, the run queue, several devices
and several hosts."""

import os
import signal

import numpy as np
import pytest

from conftest import epochs_of, wait_for
from unet.runs import TrainConfig, create_run, launch, list_runs, request_stop, wait


def test_a_killed_run_and_a_stopped_one_resume_into_an_unbroken_history(tmp_path, sample_dir):
    """One run's whole life: killed (SIGKILL) mid-training, reported failed, resumed; stopped on
    request, resumed again; completed with every epoch once and no gap in the per-batch loss.
    (One run for both ways of ending early: each training process costs seconds of TensorFlow
    import and tracing on a 2-core machine.)"""
    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=8, batch=4, steps_per_epoch=8)
    run = create_run(cfg, tmp_path)
    launch(run)
    # Wait on the checkpoint, not on history.csv: the history row of an epoch is written before its
    # checkpoint, so a kill between the two leaves one epoch fewer to resume from (and that is fine).
    assert wait_for(lambda: run.epochs_done() >= 2 and run.status()["state"] == "running"), run.log_tail()
    os.kill(run.raw_status()["pid"], signal.SIGKILL)
    assert wait_for(lambda: run.status()["state"] == "failed", timeout=10)
    assert "ended unexpectedly" in run.status()["error"]
    killed_at = run.epochs_done()
    assert killed_at >= 2 and epochs_of(run)[:killed_at] == list(range(1, killed_at + 1))

    launch(run, resume=True)
    assert wait_for(lambda: run.epochs_done() > killed_at and run.status()["state"] == "running"), run.log_tail()
    assert request_stop(run)
    st = wait(run, timeout=60)
    assert st["state"] == "stopped", run.log_tail()
    done = run.epochs_done()
    assert killed_at < done < 8 and epochs_of(run) == list(range(1, done + 1))  # no gap, no duplicate
    assert run.last_checkpoint.is_file()
    assert "stopped on request" in run.log_tail()

    launch(run, resume=True)
    st = wait(run, timeout=180)
    assert st["state"] == "completed", run.log_tail()
    assert epochs_of(run) == list(range(1, 9))
    assert len(st["resumed_at"]) == 2
    # The per-batch loss line goes on from before each interruption: no gap where it resumed.
    xs = [b[0] for b in run.progress()["batch_losses"]]
    assert xs == sorted(xs) and xs[0] <= 1.0 and xs[-1] == 8.0
    gaps = np.diff(xs)
    assert gaps.max() <= 1.5 / 8  # at most one batch apart (8 batches per epoch)
    assert run.progress()["eta_s"] == 0  # and no time left once it is done


def test_two_runs_started_at_once_keep_to_their_own_files(tmp_path, sample_dir):
    a = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4, seed=1), tmp_path)
    b = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=3, batch=4, seed=2), tmp_path)
    assert a.dir != b.dir
    launch(a)
    launch(b)
    assert wait(a, timeout=180)["state"] == "completed", a.log_tail()
    assert wait(b, timeout=180)["state"] == "completed", b.log_tail()
    assert epochs_of(a) == [1, 2] and epochs_of(b) == [1, 2, 3]
    assert a.config()["seed"] == 1 and b.config()["seed"] == 2
    assert a.raw_status()["pid"] != b.raw_status()["pid"]
    assert f"run {a.id}" in a.log_tail(200) and f"run {b.id}" not in a.log_tail(200)


def test_a_reused_pid_is_not_taken_for_the_training_process(tmp_path, sample_dir):
    from unet.runs import process_identity

    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny"), tmp_path)
    me = process_identity()
    run.set_status(state="running", **me)
    assert run.status()["state"] == "running"  # this very process: alive
    # the same pid, started at another time: the training process died and the pid was reused
    run.set_status(state="running", pid=me["pid"], pid_created=me["pid_created"] - 1000)
    st = run.status()
    assert st["state"] == "failed" and "ended unexpectedly" in st["error"] and "before its first checkpoint" in st["error"]


def test_runs_beyond_the_limit_wait_and_a_paused_one_is_flagged(tmp_path, sample_dir, monkeypatch):
    """Three Starts with room for one: the first trains, the others wait; one leaves the queue,
    the other starts when the first ends. The first, paused meanwhile, is flagged."""
    import keras

    from unet import losses, metrics  # noqa: F401  (the checkpoint's loss and metrics, as training registers them)

    monkeypatch.setenv("UNET_MAX_RUNS", "1")  # the training processes inherit it
    busy = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=30, batch=4,
                                  steps_per_epoch=8), tmp_path)
    left = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=4), tmp_path)
    # the one that waits also trains with AdamW, a constant learning rate and mixed precision
    # (its own process: mixed precision sets a process-wide Keras policy)
    later = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=4,
                                   optimizer="adamw", schedule="constant", learning_rate=0.002,
                                   mixed_precision=True), tmp_path)
    assert launch(busy) is not None
    assert launch(left) is None and launch(later) is None  # queued, no process
    st = later.status()
    assert st["state"] == "queued" and "the limit is 1" in st["waiting"] and not st.get("pid")
    assert "the limit is 1" in later.summary()["error"]
    assert request_stop(left) and left.status()["state"] == "stopped"  # leaves the queue

    assert wait_for(lambda: busy.status()["state"] == "running" and busy.progress()), busy.log_tail()
    assert busy.stalled() is None
    pid = busy.raw_status()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: busy.stalled() is not None, timeout=10)
        assert "paused" in busy.stalled() and f"kill -CONT {pid}" in busy.summary()["error"]
        assert busy.status()["state"] == "running"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: busy.stalled() is None, timeout=10)
    assert later.status()["state"] == "queued"  # still waiting for the slot

    assert request_stop(busy)
    assert wait(busy, timeout=120)["state"] == "stopped", busy.log_tail()
    # the busy run's process started the waiting one as it ended; the one that left did not start
    assert wait(later, timeout=180)["state"] == "completed", later.log_tail()
    assert f"started waiting run {later.id}" in busy.log_tail(50)
    assert later.raw_status()["started_at"] >= busy.raw_status()["ended_at"]
    assert left.status()["state"] == "stopped" and not left.history()

    assert np.isfinite(later.history()[0]["loss"])
    assert later.environment()["precision"] == "mixed_bfloat16"
    checkpoint = keras.saving.load_model(later.last_checkpoint, safe_mode=True)
    assert type(checkpoint.optimizer).__name__ == "AdamW"
    assert float(keras.ops.convert_to_numpy(checkpoint.optimizer.learning_rate)) == pytest.approx(0.002)
    assert checkpoint.layers[2].dtype_policy.name == "mixed_bfloat16"
    from unet.damage_model import DamageModel

    # the model for inference computes in float32 (the precision is chosen where it runs)
    assert {layer.dtype_policy.name for layer in DamageModel.load(later.model_path).network.layers} == {"float32"}


def test_data_parallel_training_over_two_cpu_devices(tmp_path, sample_dir, backend="tensorflow"):
    """The multi-GPU path, run on a machine without GPUs: the CPU split into two devices
    (TensorFlow: a MirroredStrategy over two logical CPU devices; JAX, DataParallel over two
    host devices, is the single-process run of the multi-host test below), a replica on each.
    A real training process, a whole history, a checkpoint and a model that loads and
    predicts here with TensorFlow. With deep supervision on, whose side maps are built inside the
    strategy's scope with the rest of the network; the model saved is the plain one."""
    from conftest import run_cli

    from unet.damage_model import DamageModel

    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4, steps_per_epoch=3,
                      deep_supervision=True)
    run = create_run(cfg, tmp_path)
    env = {"KERAS_BACKEND": backend, "UNET_CPU_DEVICES": "2", "UNET_DATA_WORKERS": "2"}
    out = run_cli("runs", "start", run.id, "--runs-dir", str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr[-3000:] + run.log_tail()
    assert run.status()["state"] == "completed"
    assert run.environment()["backend"] == backend and run.environment()["parallel"]["replicas"] == 2
    assert "data parallel: MirroredStrategy over 2 CPU devices" in out.stdout if backend == "tensorflow" \
        else "data parallel: DataParallel over 2 CPU devices" in out.stdout
    assert epochs_of(run) == [1, 2] and all(np.isfinite(float(r["loss"])) for r in run.history())
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file()
    model = DamageModel.load(run.model_path)
    assert not any(layer.name.startswith("side") for layer in model.network.layers)
    assert model.segment(np.zeros((40, 50, 3), np.uint8)).mask.shape == (40, 50)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tmp_path, sample_dir):
    from conftest import run_cli

    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=1, batch=3), tmp_path)
    out = run_cli("runs", "start", run.id, "--runs-dir", str(tmp_path), env={"UNET_CPU_DEVICES": "2"})
    assert out.returncode == 1
    assert "batch 3 does not split evenly over 2 devices" in run.status()["error"]


def test_multi_host_training_with_two_local_processes(tmp_path, sample_dir):
    """`train --distributed` as two processes of one JAX job on this machine (two CPU devices
    each, gradients over gloo), against a single-process JAX run of the same config over two
    host devices (keras.distribution.DataParallel): the same steps, a whole history, one run
    folder and one checkpoint, written by process 0 alone."""
    import json
    import socket
    import subprocess
    import sys

    from conftest import ROOT, run_cli

    from unet.damage_model import DamageModel

    cfg = TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4, steps_per_epoch=3)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "UNET_CPU_DEVICES": "2",
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
               "KERAS_DISTRIBUTION_PROCESS_ID": str(pid), "UNET_DATA_WORKERS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "unet", "train", "--config", str(tmp_path / "cfg.json"),
                                       "--runs-dir", str(tmp_path / "runs"), "--distributed"], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def tails(outs):
        return "".join(out[-3000:] for out in outs)

    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:  # a hung collective must not outlive the test (it held both cores after it)
            p.kill()
        raise AssertionError("the two processes did not finish in 240 s:\n" + tails(p.communicate()[0] for p in procs))
    assert [p.returncode for p in procs] == [0, 0], tails(outs)
    assert "process 0 of 2" in outs[0] and "process 1 of 2: process 0 writes the run folder" in outs[1]
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 1  # one folder, process 0's
    run = runs[0]
    assert run.status()["state"] == "completed" and run.environment()["parallel"]["replicas"] == 4
    assert "on 2 hosts" in run.environment()["parallel"]["how"]
    single = create_run(cfg, tmp_path / "single")
    out = run_cli("runs", "start", single.id, "--runs-dir", str(tmp_path / "single"),
                  env={"KERAS_BACKEND": "jax", "UNET_CPU_DEVICES": "2", "UNET_DATA_WORKERS": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "data parallel: DataParallel over 2 CPU devices" in out.stdout
    assert single.environment()["backend"] == "jax" and single.environment()["parallel"]["replicas"] == 2
    assert epochs_of(run) == epochs_of(single) == [1, 2]
    assert run.progress()["steps"] == single.progress()["steps"] == 3
    assert all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["val_dice"])) for r in run.history())
    assert sorted(p.name for p in run.last_checkpoint.parent.iterdir()) == sorted(
        p.name for p in single.last_checkpoint.parent.iterdir())
    seg = DamageModel.load(run.model_path).segment(np.zeros((40, 50, 3), np.uint8))  # loads here, on TensorFlow
    assert seg.mask.shape == (40, 50)


def test_distributed_training_outside_jax_is_refused_in_one_line(tmp_path, sample_dir):
    from conftest import run_cli

    out = run_cli("train", "--data", str(sample_dir), "--preset", "tiny", "--epochs", "1", "--runs-dir",
                  str(tmp_path), "--distributed", env={"KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 2 and not list(tmp_path.iterdir())
    assert out.stderr.strip().splitlines()[-1].startswith("error: --distributed trains on the JAX backend")

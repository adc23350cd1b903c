"""Training batches made in worker processes (unet.batches): the same batches as the threads
make, no shared memory or process left behind, a dead worker named, a real training run."""

import os
import signal
import subprocess
import sys
import textwrap
from multiprocessing import shared_memory

import numpy as np
import psutil
import pytest

from conftest import ROOT, epochs_of, wait_for
from unet.batches import ProcessBatches
from unet.data import Augment, PairBatcher


def _pairs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(70, 90), (64, 64), (50, 120), (96, 80), (40, 40)]  # some smaller than a crop
    return [(rng.integers(0, 256, (*shapes[i % 5], 3), dtype=np.uint8), rng.random(shapes[i % 5]) < 0.2)
            for i in range(n)]


def _same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_processes_make_exactly_the_batches_the_threads_make_and_leave_nothing_behind():
    batcher = PairBatcher(_pairs(), 48, 3, Augment(), steps=4, seed=7)
    with ProcessBatches(batcher, 2, ahead=3) as pool:
        names = [b.name for b in pool._blocks]
        pids = [p.pid for p in pool._procs]
        # in order, across the end of an epoch (made ahead there too)
        for epoch in (0, 1):
            for i in range(4):
                _same(pool.batch(epoch, i), batcher.batch(i, epoch))
        # a peek behind what was made ahead (Keras looks at the first batch), and on from there
        _same(pool.batch(1, 0), batcher.batch(0, 1))
        _same(pool.batch(1, 1), batcher.batch(1, 1))
        # a jump (a resumed run starts at its epoch): what was made ahead is dropped
        _same(pool.batch(5, 2), batcher.batch(2, 5))
        _same(pool.batch(5, 3), batcher.batch(3, 5))
        _same(pool.batch(6, 0), batcher.batch(0, 6))
        # Ctrl-C in a terminal reaches the workers too: the training process stops them itself
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        x, y = pool.batch(6, 1)
        assert all(p.is_alive() for p in pool._procs)
        assert x.shape == (3, 48, 48, 3) and x.dtype == np.uint8 and y.shape == (3, 48, 48, 1) and y.dtype == np.float32
    # every epoch's batches differ (a seed per epoch and batch), as with threads
    assert not np.array_equal(batcher.batch(0, 0)[0], batcher.batch(0, 1)[0])
    for name in names:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_validation_tiles_are_refused_and_a_dead_worker_is_named():
    with pytest.raises(ValueError, match="training batches"):
        ProcessBatches(PairBatcher(_pairs(), 48, 3, None), 2)
    batcher = PairBatcher(_pairs(), 48, 3, Augment(), steps=50, seed=0)
    pool = ProcessBatches(batcher, 2, ahead=4)
    try:
        pool.batch(0, 0)
        os.kill(pool._procs[0].pid, signal.SIGKILL)  # one of two: its batch would never come
        assert wait_for(lambda: not pool._procs[0].is_alive(), timeout=10)
        with pytest.raises(RuntimeError, match=r"1 of 2 batch worker processes ended unexpectedly \(exit codes \[-9\]"):
            for i in range(1, 50):
                pool.batch(0, i)
    finally:
        pool.close()


@pytest.mark.parametrize("end", ["SIGKILL", "SIGTERM"])
def test_workers_end_when_the_training_process_is_killed(tmp_path, end):
    """A killed training run (the Stop page's last resort, an OOM kill) leaves no worker behind;
    nor does a process that ends on SIGTERM without closing its pool (a benchmark stopped by
    `timeout`): it exits at once instead of waiting forever for workers that ignore SIGTERM."""
    script = textwrap.dedent(f"""
        import signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        from unet.batches import ProcessBatches
        from unet.data import Augment, PairBatcher
        if __name__ == "__main__":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            pairs = [(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool))]
            pool = ProcessBatches(PairBatcher(pairs, 32, 2, Augment(), steps=3), 2)
            pool.batch(0, 0)
            print(" ".join(str(p.pid) for p in pool._procs), flush=True)
            print(" ".join(b.name for b in pool._blocks), flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        names = proc.stdout.readline().split()
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids) and len(names) == 2
        proc.send_signal(getattr(signal, end))
        assert proc.wait(30) == (143 if end == "SIGTERM" else -signal.SIGKILL)

        def gone(pid):
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        assert wait_for(lambda: all(gone(p) for p in pids), timeout=15), "a worker outlived its training process"

        def freed(name):  # the resource tracker unlinks what the killed process left
            try:
                shared_memory.SharedMemory(name=name).close()
                return False
            except FileNotFoundError:
                return True

        assert wait_for(lambda: all(freed(n) for n in names), timeout=15), "a killed run left its shared memory"
    finally:
        proc.kill()


def test_a_run_trains_with_batch_processes_as_it_does_with_threads(tmp_path, sample_dir, monkeypatch, capsys):
    """The same run, its batches made by two processes (the GPU default), or by threads because
    the machine's shared memory is too small for the processes (a container's 64 MiB /dev/shm):
    the same batches, so the same losses, and a complete run folder either way."""
    import unet.batches
    from unet.runs import TrainConfig, create_run
    from unet.train import execute

    monkeypatch.setenv("UNET_DATA_PROCESSES", "2")
    losses = {}
    for shm in ("enough", "too small"):
        if shm == "too small":
            monkeypatch.setattr(unet.batches, "shared_memory_free", lambda: 2**16)
        run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4,
                                     steps_per_epoch=3), tmp_path / shm.replace(" ", "-"))
        assert execute(run) == "completed", run.log_tail()
        assert epochs_of(run) == [1, 2] and run.best_checkpoint.is_file() and run.model_path.is_file()
        out = capsys.readouterr().out
        assert ("made by 2 worker processes" in out) == (shm == "enough")
        assert ("MiB free (a container's default is 64 MiB: give it more with --shm-size): "
                "training batches made by threads instead" in out) == (shm == "too small")
        losses[shm] = [row["loss"] for row in run.history()]
    np.testing.assert_allclose(losses["enough"], losses["too small"], rtol=1e-4)


def test_a_bad_process_count_is_named(monkeypatch):
    from unet.errors import ConfigError
    from unet.train import data_processes

    monkeypatch.setenv("UNET_DATA_PROCESSES", "-1")
    with pytest.raises(ConfigError, match="UNET_DATA_PROCESSES must be a whole number of processes, 0 or more"):
        data_processes(gpu=True)
    monkeypatch.setenv("UNET_DATA_PROCESSES", "3")
    assert data_processes(gpu=False) == 3
    monkeypatch.delenv("UNET_DATA_PROCESSES")
    assert data_processes(gpu=False) == 0 and data_processes(gpu=True) >= 1

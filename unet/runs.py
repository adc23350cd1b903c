"""Training runs on disk: one folder per run, written by the training process only.

    runs/<id>/config.json       the run's definition (a TrainConfig), written once
    runs/<id>/environment.json  where it trained: backend, devices, versions, host
    runs/<id>/status.json       state, pid, times, error (atomic writes)
    runs/<id>/checkpoint.json   what checkpoints/last.keras holds: epochs completed
    runs/<id>/history.csv       one row per completed epoch
    runs/<id>/progress.json     live: epoch, batch, loss, ETA, recent batch losses
    runs/<id>/log.txt           the process's output
    runs/<id>/checkpoints/      last.keras (with optimizer state), best.keras
    runs/<id>/model.keras       best weights, inference only (+ model.json, its card)
    runs/<id>/eval/             evaluation results per test split
    runs/<id>/tensorboard/      TensorBoard logs (TensorFlow backend)

The dashboard only reads these files; a run keeps going when the page or the app goes
away. A run folder someone damaged (a file that is not JSON, or the wrong JSON) is listed
as unreadable; it never stops the others from being listed. This module never imports
Keras.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .errors import RunError
from .files import read_json, write_json_atomic

ACTIVE = ("queued", "running")
FINAL = ("completed", "failed", "stopped")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_runs_dir() -> Path:
    """``$UNET_RUNS_DIR``, else ``runs/`` in the project: the same folder for the app and the CLI,
    wherever either was started from."""
    return Path(os.environ.get("UNET_RUNS_DIR") or PROJECT_ROOT / "runs")


def _object(path: Path) -> dict:
    """A JSON object from ``path``; {} when it is missing, not JSON, or not an object."""
    data = read_json(path, {})
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------
# Process liveness
# ---------------------------------------------------------------------------------


def _created(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def process_alive(pid, created: float | None = None) -> bool:
    """Whether process ``pid`` runs (not a zombie) and, given ``created`` (its start time as
    recorded by :func:`process_identity`), is the same process and not a reused pid."""
    import psutil

    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, waiting for its parent to reap it
            return False
        return created is None or abs(proc.create_time() - float(created)) < 0.01
    except (psutil.Error, ValueError, OverflowError, TypeError):
        return False


def process_identity(pid: int | None = None) -> dict:
    """What a status records to recognise the training process later: pid and start time."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "pid_created": _created(pid)}


def _owner_alive(st: dict) -> bool:
    created = st.get("pid_created")
    return process_alive(st.get("pid"), created if isinstance(created, (int, float)) else None)


# ---------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------


DEAD_MESSAGE = ("the training process ended unexpectedly (killed, or out of memory); "
                "resume continues from the last checkpoint")
DEAD_NO_CHECKPOINT = ("the training process ended unexpectedly (killed, or out of memory) before its first "
                      "checkpoint; start it again")
UNREADABLE = "unreadable"


@dataclass
class Run:
    """A run folder; every accessor reads the files afresh and never raises for a damaged one."""

    dir: Path
    id: str = field(init=False)

    def __post_init__(self):
        self.dir = Path(self.dir)
        self.id = self.dir.name

    # paths
    config_path = property(lambda self: self.dir / "config.json")
    environment_path = property(lambda self: self.dir / "environment.json")
    status_path = property(lambda self: self.dir / "status.json")
    checkpoint_info_path = property(lambda self: self.dir / "checkpoint.json")
    history_path = property(lambda self: self.dir / "history.csv")
    progress_path = property(lambda self: self.dir / "progress.json")
    log_path = property(lambda self: self.dir / "log.txt")
    stop_path = property(lambda self: self.dir / "STOP")
    last_checkpoint = property(lambda self: self.dir / "checkpoints" / "last.keras")
    best_checkpoint = property(lambda self: self.dir / "checkpoints" / "best.keras")
    model_path = property(lambda self: self.dir / "model.keras")

    def config(self) -> dict:
        """The config as stored ({} when damaged; :meth:`train_config` validates it)."""
        return _object(self.config_path)

    def train_config(self) -> TrainConfig:
        """The validated :class:`TrainConfig`; :class:`~unet.errors.ConfigError` naming the file if damaged."""
        from .errors import ConfigError

        data = read_json(self.config_path, None)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path}: not a readable training config (JSON object)")
        try:
            return TrainConfig.from_dict(data).validate()
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{self.config_path}: {exc}") from None

    def environment(self) -> dict:
        return _object(self.environment_path)

    def raw_status(self) -> dict:
        return _object(self.status_path)

    def status(self) -> dict:
        """The status, with a dead process detected and recorded as failed."""
        st = read_json(self.status_path)  # read once: the Train page asks every 2 s
        if not isinstance(st, dict) or not isinstance(read_json(self.config_path), dict):
            return {"state": UNREADABLE, "error": "config.json or status.json is damaged (not a JSON object)"}
        if st.get("state") in ACTIVE and st.get("pid") and not _owner_alive(st):
            time.sleep(0.05)  # the process may have written its final state just now
            st = self.raw_status()
            if st.get("state") in ACTIVE and not _owner_alive(st):
                message = DEAD_MESSAGE if self.last_checkpoint.exists() else DEAD_NO_CHECKPOINT
                st.update(state="failed", error=message, ended_at=_now())
                try:
                    write_json_atomic(self.status_path, st)
                except OSError:
                    pass  # an unwritable folder still reads as failed
        return st

    def stalled(self, st: dict | None = None) -> str | None:
        """Why a running run looks stuck, or None: its process is paused (SIGSTOP), or it
        has written nothing for ``UNET_STALL_MINUTES`` (default 10) minutes."""
        import psutil

        st = self.status() if st is None else st
        if st.get("state") != "running" or not _owner_alive(st):
            return None
        try:
            if psutil.Process(st["pid"]).status() == psutil.STATUS_STOPPED:
                return (f"the training process is paused (stopped by a signal): `kill -CONT {st['pid']}` lets it "
                        "go on; Stop ends it")
        except psutil.Error:
            return None
        try:
            limit = float(os.environ.get("UNET_STALL_MINUTES", "10"))
        except ValueError:
            limit = 10.0
        times = [p.stat().st_mtime for p in (self.progress_path, self.status_path) if p.exists()]
        idle = (time.time() - max(times)) / 60 if times else 0.0
        if idle > limit:
            return f"no progress for {idle:.0f} minutes (the process is alive but has not finished a batch)"
        return None

    @property
    def state(self) -> str:
        return str(self.status().get("state", "unknown"))

    def set_status(self, **changes) -> dict:
        st = self.raw_status()
        st.update(changes)
        write_json_atomic(self.status_path, st)
        return st

    def epochs_done(self) -> int:
        """Epochs whose weights ``last.keras`` holds (0 before the first)."""
        info = _object(self.checkpoint_info_path) or _object(self.dir / "state.json")  # state.json: older runs
        try:
            return max(0, int(info.get("epochs_done", 0)))
        except (TypeError, ValueError):
            return 0

    def history(self) -> list[dict]:
        try:
            with open(self.history_path, newline="") as f:
                return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, csv.Error, UnicodeDecodeError):
            return []

    def progress(self) -> dict:
        return _object(self.progress_path)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def created_at(self) -> str:
        """When the run was made (for ordering), as text; '' when unknown."""
        for source in (self.raw_status(), self.config()):  # the config held it in older runs
            value = source.get("created_at")
            if isinstance(value, str):
                return value
        return ""

    def summary(self) -> dict:
        """One row for run tables: state, preset, size, epochs, best and last validation Dice, error."""
        st, cfg = self.status(), self.config()
        dice = [h["val_dice"] for h in self.history() if isinstance(h.get("val_dice"), (int, float))]
        text = lambda v: v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None  # noqa: E731
        return {"run": self.id, "state": str(st.get("state")), "preset": text(cfg.get("preset")),
                "size": text(cfg.get("size")), "epochs": f"{self.epochs_done()}/{text(cfg.get('epochs')) or '?'}",
                "best val Dice": max(dice, default=None), "last val Dice": dice[-1] if dice else None,
                "started": str(st.get("started_at") or ""),
                "error": str(st.get("error") or self.stalled(st) or st.get("waiting") or "")}

    def best_model_path(self) -> Path | None:
        for p in (self.model_path, self.best_checkpoint):
            if p.exists():
                return p
        return None


def _num(v: str):
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    except (TypeError, ValueError):
        return v


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID_RE.match(run_id) or ".." in run_id:
        raise RunError(f"{run_id!r} is not a valid run id")
    return run_id


def get_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    """The run with this id; the id cannot name anything outside ``runs_dir``."""
    base = Path(runs_dir or default_runs_dir()).resolve()
    path = (base / check_run_id(run_id)).resolve()
    if path.parent != base:
        raise RunError(f"{run_id!r} is not a valid run id")
    if not (path / "config.json").is_file():
        raise RunError(f"no run {run_id!r} in {base}")
    return Run(path)


def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """All runs, newest first."""
    base = Path(runs_dir or default_runs_dir())
    if not base.is_dir():
        return []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    runs = []
    for p in entries:
        try:
            if _ID_RE.match(p.name) and p.is_dir() and (p / "config.json").is_file():
                runs.append(Run(p))
        except OSError:  # vanished or unreadable while listing: not a run to show
            continue
    return sorted(runs, key=lambda r: r.created_at(), reverse=True)


def create_run(config: TrainConfig, runs_dir: str | Path | None = None) -> Run:
    """Make a run folder with its config and a queued status."""
    config.validate()
    base = Path(runs_dir or default_runs_dir())
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = re.sub(r"[^A-Za-z0-9]+", "-", config.name or config.preset).strip("-")[:40] or "run"
    while True:
        run_id = f"{stamp}-{label}-{secrets.token_hex(2)}"
        path = base / run_id
        try:
            path.mkdir()  # atomic: two runs started at once never share a folder
            break
        except FileExistsError:
            continue
    (path / "checkpoints").mkdir()
    cfg = config.to_dict()
    data = [str(Path(d).expanduser().resolve()) for d in config.dataset_folders()]
    cfg.update(data=data[0] if isinstance(config.data, str) else data)
    if config.init_from:
        cfg["init_from"] = str(Path(config.init_from).expanduser().resolve())
    write_json_atomic(path / "config.json", cfg)
    write_json_atomic(path / "status.json", {"state": "queued", "created_at": _now(), "run_id": run_id})
    return Run(path)


def max_runs() -> int:
    """How many runs may train at once in one runs folder (``UNET_MAX_RUNS``, default 2):
    each run takes every core it can get, so more at once only slows all of them."""
    try:
        return max(1, int(os.environ.get("UNET_MAX_RUNS", "2")))
    except ValueError:
        return 2


@contextlib.contextmanager
def _launch_lock(runs_dir: Path):
    """One launcher at a time per runs folder, so two Starts never both take the last slot."""
    import fcntl

    with open(runs_dir / ".launch.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _training(runs_dir: Path, but: str = "") -> list[Run]:
    """Runs whose training process is alive now (a waiting run has none)."""
    return [r for r in list_runs(runs_dir) if r.id != but and r.raw_status().get("state") in ACTIVE
            and _owner_alive(r.raw_status())]


def launch(run: Run, resume: bool = False, restart: bool = False) -> int | None:
    """Start the run's training as a detached OS process; returns its pid, or None when
    :func:`max_runs` runs are training already: the run then waits, queued, and starts
    when one of them ends (:func:`start_waiting`).

    The process gets its own session, so it survives the dashboard or the app
    being closed or restarted.
    """
    st = run.status()
    if st.get("state") == UNREADABLE:
        raise RunError(f"run {run.id}: {st['error']}")
    if st.get("state") in ACTIVE and _owner_alive(st):
        raise RunError(f"run {run.id} is already {st['state']}")
    if resume and not run.last_checkpoint.exists():
        raise RunError(f"run {run.id} has no checkpoint to resume from")
    run.stop_path.unlink(missing_ok=True)
    with _launch_lock(run.dir.parent):
        busy = _training(run.dir.parent, but=run.id)
        if len(busy) >= max_runs():
            run.set_status(state="queued", error=None, pid=None, pid_created=None,
                           waiting=f"{len(busy)} run(s) training already (the limit is {max_runs()}, "
                                   "UNET_MAX_RUNS); starts when one ends",
                           launch={"resume": resume, "restart": restart})
            return None
        return _spawn(run, resume, restart)


def _spawn(run: Run, resume: bool, restart: bool) -> int:
    cmd = [sys.executable, "-m", "unet", "runs", "resume" if resume else "start", run.id,
           "--runs-dir", str(run.dir.parent)] + (["--restart"] if restart else [])
    env = dict(os.environ)
    pkg_root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["UNET_LAUNCHED"] = "1"  # a stop asked for before the process is up must still count
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=pkg_root)
    st = run.raw_status()
    if st.get("state") not in ACTIVE or st.get("pid") is None:
        run.set_status(state="queued", error=None, waiting=None, **process_identity(proc.pid))
    # Reap the child in the background so it never lingers as a zombie in this process.
    import threading

    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def start_waiting(runs_dir: str | Path | None = None) -> list[str]:
    """Start waiting runs (oldest first) while fewer than :func:`max_runs` train; returns their ids.

    Called by a training process as it ends, and by the Train page and ``runs list``, so a
    queue moves on even after a process was killed.
    """
    base = Path(runs_dir or default_runs_dir())
    if not base.is_dir():
        return []
    def waiting_runs() -> list[Run]:
        found = []
        for r in reversed(list_runs(base)):
            st = r.raw_status()
            if st.get("state") == "queued" and st.get("waiting"):
                found.append(r)
        return found

    if not waiting_runs():  # the usual case, on every Train page visit: no lock taken
        return []
    started = []
    with _launch_lock(base):
        waiting = waiting_runs()  # again under the lock: another launcher may have taken them
        free = max_runs() - len(_training(base))
        for run in waiting[:max(0, free)]:
            how = run.raw_status().get("launch") or {}
            _spawn(run, bool(how.get("resume")), bool(how.get("restart")))
            started.append(run.id)
    return started


def request_stop(run: Run) -> bool:
    """Ask a run to stop after its current batch; returns False if it is not active."""
    st = run.status()
    if st.get("state") not in ACTIVE:
        return False
    if st.get("waiting") and not st.get("pid"):  # never started: leave the queue
        run.set_status(state="stopped", waiting=None, ended_at=_now())
        return True
    run.stop_path.write_text(_now())
    pid = st.get("pid")
    # SIGTERM only once the trainer says "running": it installs its handler before that, and
    # a process still starting would die of the signal instead (the STOP file stops it).
    if st.get("state") == "running" and _owner_alive(st):
        try:
            os.kill(pid, signal.SIGTERM)  # handled: stop after the batch, checkpoint, exit
        except OSError:
            pass
    return True


def wait(run: Run, timeout: float = 600, poll: float = 0.2) -> dict:
    """Block until the run reaches a final state (or the timeout); returns its status."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = run.status()
        if st.get("state") in FINAL:
            return st
        time.sleep(poll)
    return run.status()

"""Training runs on disk: one folder per run, written by the training process only.

    runs/<id>/config.json      everything needed to reproduce the run
    runs/<id>/status.json      state, pid, times, error (atomic writes)
    runs/<id>/state.json       epochs completed (written after the checkpoint)
    runs/<id>/history.csv      one row per completed epoch
    runs/<id>/progress.json    live: epoch, batch, loss, ETA, recent batch losses
    runs/<id>/log.txt          the process's output
    runs/<id>/checkpoints/     last.keras (with optimizer state), best.keras
    runs/<id>/model.keras      best weights, inference only (+ model.json: threshold, size)
    runs/<id>/eval/            evaluation results per test split
    runs/<id>/tensorboard/     TensorBoard logs (TensorFlow backend)

The dashboard only reads these files; a run keeps going when the page or the app goes
away. This module never imports Keras.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "running")
FINAL = ("completed", "failed", "stopped")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEAD_MESSAGE = "the training process ended unexpectedly (killed, or out of memory); resume continues from the last checkpoint"


def default_runs_dir() -> Path:
    return Path(os.environ.get("UNET_RUNS_DIR", "runs"))


# ---------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON so readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def write_csv_atomic(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Write rows as CSV atomically; columns are ``fieldnames`` then any other keys, in order seen."""
    keys = list(fieldnames or [])
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    if keys:
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# ---------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.json).

    Defaults finish in a few minutes on a 2-core CPU with the generated sample data.
    """

    data: str | list[str] = "data/sample"  # one dataset folder, or several pooled
    preset: str = "lite"
    size: int = 128
    loss: str = "bce_dice"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # or "constant"
    epochs: int = 10
    batch: int = 8
    steps_per_epoch: int | None = None  # None: one pass over the training photos
    augment: bool = True
    scale: tuple[float, float] = (0.75, 1.33)
    val_fraction: float = 0.15  # used only when the dataset has no val/ folder
    threshold: float = 0.5  # for validation metrics
    seed: int = 0
    device: str = "auto"  # auto, cpu or gpu
    mixed_precision: bool = False
    time_budget_min: float | None = None  # end training (as completed) after this many minutes
    init_from: str | None = None  # a .keras model of the same preset whose weights start the run (fine-tuning)
    name: str = ""

    def validate(self) -> "TrainConfig":
        from .model import PRESETS  # model.py imports Keras only when a model is built

        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}")
        if self.loss not in ("bce", "dice", "bce_dice"):
            problems.append("loss must be bce, dice or bce_dice")
        if self.size < 16 or self.size % 16:
            problems.append("size must be a multiple of 16")
        if self.epochs < 1 or self.batch < 1:
            problems.append("epochs and batch must be at least 1")
        if not 0 < self.learning_rate < 1:
            problems.append("learning rate must be between 0 and 1")
        if self.device not in ("auto", "cpu", "gpu"):
            problems.append("device must be auto, cpu or gpu")
        if self.optimizer not in ("adam", "adamw"):
            problems.append("optimizer must be adam or adamw")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            problems.append("time budget must be positive")
        if self.schedule not in ("constant", "cosine"):
            problems.append("schedule must be constant or cosine")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"backend", "devices", "created_at", "run_id", "unet_version"}
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        kwargs = {k: v for k, v in d.items() if k in known}
        if "scale" in kwargs:
            kwargs["scale"] = tuple(kwargs["scale"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------
# Process liveness
# ---------------------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    if Path("/proc").is_dir():
        now = _proc_start(pid)
        if now is None:
            return False
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":  # exited, waiting for its parent to reap it
            return False
        return start is None or now == start
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def process_identity() -> dict:
    return {"pid": os.getpid(), "pid_start": _proc_start(os.getpid())}


# ---------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------


@dataclass
class Run:
    """A run folder; every accessor reads the files afresh."""

    dir: Path
    id: str = field(init=False)

    def __post_init__(self):
        self.dir = Path(self.dir)
        self.id = self.dir.name

    # paths
    config_path = property(lambda self: self.dir / "config.json")
    status_path = property(lambda self: self.dir / "status.json")
    state_path = property(lambda self: self.dir / "state.json")
    history_path = property(lambda self: self.dir / "history.csv")
    progress_path = property(lambda self: self.dir / "progress.json")
    log_path = property(lambda self: self.dir / "log.txt")
    stop_path = property(lambda self: self.dir / "STOP")
    last_checkpoint = property(lambda self: self.dir / "checkpoints" / "last.keras")
    best_checkpoint = property(lambda self: self.dir / "checkpoints" / "best.keras")
    model_path = property(lambda self: self.dir / "model.keras")
    eval_dir = property(lambda self: self.dir / "eval")

    def config(self) -> dict:
        return read_json(self.config_path, {}) or {}

    def raw_status(self) -> dict:
        return read_json(self.status_path, {}) or {}

    def status(self) -> dict:
        """The status, with a dead process detected and recorded as failed."""
        st = self.raw_status()
        if st.get("state") in ACTIVE and st.get("pid") and not process_alive(st.get("pid"), st.get("pid_start")):
            time.sleep(0.05)  # the process may have written its final state just now
            st = self.raw_status()
            if st.get("state") in ACTIVE and not process_alive(st.get("pid"), st.get("pid_start")):
                st.update(state="failed", error=DEAD_MESSAGE, ended_at=_now())
                try:
                    write_json_atomic(self.status_path, st)
                except OSError:
                    pass  # an unwritable folder still reads as failed
        return st

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

    def set_status(self, **changes) -> dict:
        st = self.raw_status()
        st.update(changes)
        write_json_atomic(self.status_path, st)
        return st

    def epochs_done(self) -> int:
        return int((read_json(self.state_path, {}) or {}).get("epochs_done", 0))

    def history(self) -> list[dict]:
        try:
            with open(self.history_path, newline="") as f:
                return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except OSError:
            return []

    def progress(self) -> dict:
        return read_json(self.progress_path, {}) or {}

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def summary(self) -> dict:
        """One row for run tables: state, preset, size, epochs, best and last validation Dice, error."""
        st, cfg = self.status(), self.config()
        dice = [h["val_dice"] for h in self.history() if isinstance(h.get("val_dice"), (int, float))]
        return {"run": self.id, "state": st.get("state"), "preset": cfg.get("preset"), "size": cfg.get("size"),
                "epochs": f"{self.epochs_done()}/{cfg.get('epochs')}", "best val Dice": max(dice, default=None),
                "last val Dice": dice[-1] if dice else None, "started": st.get("started_at", ""),
                "error": st.get("error") or ""}

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


def data_roots(data: str | list[str]) -> list[str]:
    """The dataset folders of a config's ``data`` (a path or a list of paths)."""
    return [data] if isinstance(data, str) else list(data)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"{run_id!r} is not a valid run id")
    return run_id


def get_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    """The run with this id; the id cannot name anything outside ``runs_dir``."""
    base = Path(runs_dir or default_runs_dir()).resolve()
    path = (base / check_run_id(run_id)).resolve()
    if path.parent != base:
        raise ValueError(f"{run_id!r} is not a valid run id")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no run {run_id!r} in {base}")
    return Run(path)


def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """All runs, newest first."""
    base = Path(runs_dir or default_runs_dir())
    if not base.is_dir():
        return []
    runs = [Run(p) for p in base.iterdir() if p.is_dir() and (p / "config.json").is_file() and _ID_RE.match(p.name)]
    return sorted(runs, key=lambda r: r.config().get("created_at", ""), reverse=True)


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
    data = [str(Path(d).expanduser().resolve()) for d in data_roots(config.data)]
    cfg.update(run_id=run_id, created_at=_now(), data=data[0] if isinstance(config.data, str) else data)
    if config.init_from:
        cfg["init_from"] = str(Path(config.init_from).expanduser().resolve())
    write_json_atomic(path / "config.json", cfg)
    write_json_atomic(path / "status.json", {"state": "queued", "created_at": cfg["created_at"]})
    return Run(path)


def launch(run: Run, resume: bool = False) -> int:
    """Start the run's training as a detached OS process; returns its pid.

    The process gets its own session, so it survives the dashboard or the app
    being closed or restarted.
    """
    st = run.status()
    if st.get("state") in ACTIVE and process_alive(st.get("pid"), st.get("pid_start")):
        raise RuntimeError(f"run {run.id} is already {st['state']}")
    if resume and not run.last_checkpoint.exists():
        raise RuntimeError(f"run {run.id} has no checkpoint to resume from")
    run.stop_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "unet", "runs", "resume" if resume else "start", run.id,
           "--runs-dir", str(run.dir.parent)]
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=pkg_root)
    st = run.raw_status()
    if st.get("state") not in ACTIVE or st.get("pid") is None:
        run.set_status(state="queued", pid=proc.pid, pid_start=_proc_start(proc.pid), error=None)
    # Reap the child in the background so it never lingers as a zombie in this process.
    import threading

    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def request_stop(run: Run) -> bool:
    """Ask a run to stop after its current batch; returns False if it is not active."""
    st = run.status()
    if st.get("state") not in ACTIVE:
        return False
    run.stop_path.write_text(_now())
    pid = st.get("pid")
    if pid and process_alive(pid, st.get("pid_start")):
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

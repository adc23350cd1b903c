"""The training process of one run (started by ``python -m unet train`` or the launcher).

Order of writes at the end of each epoch, so that a kill at any moment loses at most
the epoch in progress and never leaves a gap or a duplicate in the history:

1. ``checkpoints/last.keras`` (and ``best.keras`` when validation improved), atomically;
2. the epoch's row in ``history.csv``;
3. ``state.json`` with ``epochs_done``.

Resume loads ``last.keras`` (weights + optimizer state), drops history rows at or after
``epochs_done`` and continues with that epoch. A stop request (STOP file, SIGTERM or
Ctrl-C) ends training after the current batch and writes ``last.keras`` first.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from .runs import ACTIVE, Run, TrainConfig, _now, process_alive, process_identity, write_csv_atomic, write_json_atomic


class StopRequested(Exception):
    """Raised between batches when the run was asked to stop."""


def _atomic_save(model, path: Path) -> None:
    """Save a checkpoint so that a crash or a full disk never leaves a half-written one."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # name the checkpoint, not a temp file
    finally:
        tmp.unlink(missing_ok=True)


def _callbacks(run: Run, cfg: TrainConfig, steps: int, val_steps: int, initial_epoch: int):
    import keras

    class RunRecorder(keras.callbacks.Callback):
        """Live progress, stop requests, checkpoints and history for the run folder."""

        def __init__(self):
            super().__init__()
            self.history = [r for r in run.history() if int(r.get("epoch", 0)) <= initial_epoch]
            best = [r.get("val_dice") for r in self.history if isinstance(r.get("val_dice"), (int, float))]
            self.best = max(best) if best else -math.inf
            self.batch_losses: list[list[float]] = []
            self.last_write = 0.0
            self.t0 = time.monotonic()
            self.batch_time = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_t0 = time.monotonic()
            self.batch_t = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            dt = now - self.batch_t
            self.batch_t = now
            self.batch_time = dt if self.batch_time is None else 0.8 * self.batch_time + 0.2 * dt
            loss = float((logs or {}).get("loss", float("nan")))
            step = self.epoch * steps + batch + 1
            self.batch_losses.append([step / steps, loss])
            self.batch_losses = self.batch_losses[-2000:]
            if run.stop_path.exists():
                self._progress(batch + 1, loss, force=True, note="stopping")
                raise StopRequested()
            if cfg.time_budget_min and now - self.t0 > 60 * cfg.time_budget_min and not self.model.stop_training:
                print(f"time budget of {cfg.time_budget_min} min reached: this epoch is the last", flush=True)
                self.model.stop_training = True  # ends the epoch here, validates, records it
            self._progress(batch + 1, loss)

        def _progress(self, batch, loss, force=False, note=""):
            now = time.monotonic()
            if not force and now - self.last_write < 0.5 and batch < steps:
                return
            self.last_write = now
            remaining = (cfg.epochs - self.epoch - 1) * (steps + val_steps) + (steps - batch) + val_steps
            write_json_atomic(run.progress_path, {
                "epoch": self.epoch + 1, "epochs": cfg.epochs, "batch": batch, "steps": steps,
                "loss": loss, "eta_s": round(remaining * (self.batch_time or 0), 1),
                "elapsed_s": round(now - self.t0, 1), "updated_at": _now(), "note": note,
                "batch_losses": self.batch_losses[-500:],
            })

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            run.last_checkpoint.parent.mkdir(exist_ok=True)
            _atomic_save(self.model, run.last_checkpoint)
            score = logs.get("val_dice", -logs.get("loss", 0.0))
            improved = score > self.best
            if improved:
                self.best = score
                _atomic_save(self.model, run.best_checkpoint)
            row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in sorted(logs.items())},
                   "seconds": round(time.monotonic() - self.epoch_t0, 2), "best": int(improved)}
            self.history = [r for r in self.history if int(r["epoch"]) < epoch + 1] + [row]
            write_csv_atomic(run.history_path, self.history)
            write_json_atomic(run.state_path, {"epochs_done": epoch + 1, "best_val_dice": self.best})
            self._progress(steps, logs.get("loss", float("nan")), force=True)
            print(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())),
                  flush=True)

    cbs = [RunRecorder()]
    if keras.backend.backend() == "tensorflow":
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run.dir / "tensorboard"), write_graph=False))
    return cbs


def _install_stop_signals(run: Run) -> None:
    def handler(signum, frame):
        try:
            run.stop_path.write_text(_now())
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _data(cfg: TrainConfig, log):
    from .data import Augment, PairBatcher, load_pairs, training_splits

    train, val, scan = training_splits(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction)
    train_pairs, _, p1 = load_pairs(train)
    val_pairs, _, p2 = load_pairs(val)
    problems = scan.problems + p1 + p2
    for p in problems:
        log(f"skipped {p}")
    if not train_pairs:
        raise ValueError(f"{cfg.data}: no training photo could be read")
    aug = Augment(scale=tuple(cfg.scale)) if cfg.augment else Augment.none()
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_pairs) / cfg.batch))
    train_b = PairBatcher(train_pairs, cfg.size, cfg.batch, aug, steps=steps, seed=cfg.seed)
    val_b = PairBatcher(val_pairs, cfg.size, cfg.batch, None) if val_pairs else None
    log(f"data: {len(train_pairs)} training and {len(val_pairs)} validation photos, "
        f"{len(problems)} skipped; {steps} batches of {cfg.batch} per epoch")
    return train_b, val_b, len(problems)


def keras_dataset(batcher, workers: int = 1):
    """Wrap a :class:`~unet.data.PairBatcher` as a ``keras.utils.PyDataset``."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)

        def __len__(self):
            return len(batcher)

        def __getitem__(self, index):
            return batcher.batch(index)

        def on_epoch_end(self):
            batcher.epoch += 1

    return Batches()


def _compile(model, cfg: TrainConfig, total_steps: int):
    import keras

    from .losses import get_loss
    from .metrics import keras_metrics

    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, total_steps), alpha=0.05)
    opt = (keras.optimizers.AdamW(lr, weight_decay=1e-4) if cfg.optimizer == "adamw"
           else keras.optimizers.Adam(lr))
    model.compile(optimizer=opt, loss=get_loss(cfg.loss), metrics=keras_metrics(cfg.threshold))


def execute(run: Run, resume: bool = False) -> str:
    """Train the run in this process; returns the final state.

    Never raises for a training failure: the error goes into ``status.json`` and the
    log, and the state is ``failed``.

    Raises:
        RuntimeError: another live process is already training this run (nothing is touched).
    """
    cfg = TrainConfig.from_dict(run.config())

    def log(msg: str) -> None:
        print(msg, flush=True)

    status = run.raw_status()
    owner = status.get("pid")
    if (status.get("state") in ACTIVE and owner not in (None, os.getpid())
            and process_alive(owner, status.get("pid_start"))):
        raise RuntimeError(f"run {run.id} is already {status['state']} (process {owner})")
    _install_stop_signals(run)
    run.stop_path.unlink(missing_ok=True)
    status.update(state="running", error=None, **process_identity())
    status.setdefault("started_at", _now())
    if resume:
        status.setdefault("resumed_at", []).append(_now())
    try:
        write_json_atomic(run.status_path, status)
    except OSError as exc:
        print(f"cannot write to the run folder {run.dir}: {exc}", file=sys.stderr, flush=True)
        return "failed"

    state, error = "failed", None
    try:
        from .devices import prepare

        prepare(cfg.device)
        import keras

        from . import losses, metrics  # noqa: F401  registers the objects checkpoints refer to
        from .devices import setup_training
        from .model import build_unet, save_model

        strategy, devices = setup_training(cfg.mixed_precision)
        if cfg.device == "gpu" and not any(d["kind"] == "GPU" for d in devices):
            raise RuntimeError("device 'gpu' was chosen but no GPU is visible to Keras")
        conf = run.config()
        conf.update(backend=keras.backend.backend(), devices=[d["name"] for d in devices])
        write_json_atomic(run.config_path, conf)
        log(f"run {run.id}: backend {conf['backend']}, devices: {', '.join(conf['devices'])}")
        keras.utils.set_random_seed(cfg.seed)

        train_b, val_b, n_problems = _data(cfg, log)
        run.set_status(data_problems=n_problems)
        initial_epoch = run.epochs_done() if resume else 0
        if resume and initial_epoch >= cfg.epochs:
            log("all epochs already done")
        train_b.epoch = initial_epoch
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            if resume and run.last_checkpoint.exists():
                model = keras.saving.load_model(run.last_checkpoint, safe_mode=True)
                log(f"resumed from {run.last_checkpoint.name} after {initial_epoch} completed epochs")
            else:
                model = build_unet(cfg.preset, cfg.size)
                if cfg.init_from:
                    from .model import load_model

                    source = load_model(cfg.init_from)
                    try:
                        model.set_weights(source.get_weights())
                    except ValueError:
                        raise ValueError(f"{cfg.init_from}: its architecture is not preset {cfg.preset!r}") from None
                    log(f"weights initialised from {cfg.init_from}")
                _compile(model, cfg, cfg.epochs * len(train_b))
        callbacks = _callbacks(run, cfg, len(train_b), len(val_b) if val_b else 0, initial_epoch)
        try:
            model.fit(
                keras_dataset(train_b),
                validation_data=keras_dataset(val_b) if val_b else None,
                epochs=cfg.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2,
            )
            state = "completed"
        except StopRequested:
            _atomic_save(model, run.last_checkpoint)
            log("stopped on request after the current batch; checkpoint written")
            state = "stopped"
        best = run.best_checkpoint if run.best_checkpoint.exists() else None
        if best is not None:
            final = keras.saving.load_model(best, safe_mode=True)
            save_model(final, run.model_path, threshold=cfg.threshold, preset=cfg.preset,
                       source=f"run {run.id}")
    except Exception as exc:  # any failure ends this run only, recorded for the user
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            error = (f"the disk is full (or a file-size limit was reached) while writing "
                     f"{exc.filename or 'the run folder'}: {exc.strerror}")
        elif isinstance(exc, (PermissionError, OSError)) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            error = f"the run folder cannot be written ({exc.filename or run.dir}): {exc.strerror}"
        traceback.print_exc()
        state = "failed"
    try:
        run.set_status(state=state, error=error, ended_at=_now())
    except OSError as exc:
        print(f"could not record the final state {state}: {exc}", file=sys.stderr, flush=True)
    log(f"run {run.id} {state}" + (f": {error}" if error else ""))
    return state

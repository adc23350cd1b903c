"""The training process of one run (started by ``python -m unet train`` or the launcher).

Order of writes at the end of each epoch, so that a kill at any moment loses at most
the epoch in progress and never leaves a gap or a duplicate in the history:

1. ``checkpoints/last.keras`` (and ``best.keras`` when validation improved), atomically;
2. the epoch's row in ``history.csv``;
3. ``checkpoint.json`` with ``epochs_done``.

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

from .config import TrainConfig
from .errors import ConfigError, RunError, UnetError
from .files import atomic_path, read_json, write_csv_atomic, write_json_atomic
from .runs import ACTIVE, Run, _now, _owner_alive, process_identity


class StopRequested(Exception):
    """Raised between batches when the run was asked to stop."""


def _atomic_save(model, path: Path) -> None:
    """Save a checkpoint so that a crash or a full disk never leaves a half-written one."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _callbacks(run: Run, cfg: TrainConfig, steps: int, val_steps: int, initial_epoch: int):
    import keras

    class RunRecorder(keras.callbacks.Callback):
        """Live progress, stop requests, checkpoints and history for the run folder."""

        def __init__(self):
            super().__init__()
            self.history = [r for r in run.history() if int(r.get("epoch", 0)) <= initial_epoch]
            best = [r.get("val_dice") for r in self.history if isinstance(r.get("val_dice"), (int, float))]
            self.best = max(best) if best else -math.inf
            # A resumed run's per-batch losses carry on from where they were, without a gap.
            earlier = read_json(run.progress_path, {}) if initial_epoch else {}
            self.batch_losses: list[list[float]] = [
                b for b in (earlier.get("batch_losses") or []) if isinstance(b, list) and len(b) == 2
                and isinstance(b[0], (int, float)) and b[0] <= initial_epoch] if isinstance(earlier, dict) else []
            self.last_write = 0.0
            self.t0 = time.monotonic()
            # Time left is the whole run's average pace since its first batch (validation and
            # checkpoints included), not the last batch's, which jumps from one second to the next.
            self.pace_t0 = None
            self.batches_timed = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_t0 = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if self.pace_t0 is None:  # the first batch also builds the graph: the pace starts after it
                self.pace_t0 = now
            else:
                self.batches_timed += 1
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
            remaining = (cfg.epochs - self.epoch - 1) * steps + (steps - batch)
            pace = (now - self.pace_t0) / self.batches_timed if self.batches_timed else 0.0
            write_json_atomic(run.progress_path, {
                "epoch": self.epoch + 1, "epochs": cfg.epochs, "batch": batch, "steps": steps,
                "loss": loss, "eta_s": round(remaining * pace, 1),
                "elapsed_s": round(now - self.t0, 1), "updated_at": _now(), "note": note,
                "batch_losses": self.batch_losses[-500:],
            })

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            run.last_checkpoint.parent.mkdir(exist_ok=True)
            _atomic_save(self.model, run.last_checkpoint)
            # Nothing validated: the last epoch is the model (a loss on random training crops is
            # no measure to choose by; with a decaying learning rate the last epoch is the settled one).
            validated = "val_dice" in logs
            improved = not validated or logs["val_dice"] > self.best
            if improved:
                if validated:
                    self.best = logs["val_dice"]
                _atomic_save(self.model, run.best_checkpoint)
            row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in sorted(logs.items())},
                   "seconds": round(time.monotonic() - self.epoch_t0, 2), "best": int(improved)}
            self.history = [r for r in self.history if int(r["epoch"]) < epoch + 1] + [row]
            write_csv_atomic(run.history_path, self.history)
            write_json_atomic(run.checkpoint_info_path, {"epochs_done": epoch + 1,
                                                        "best_val_dice": self.best if validated else None})
            self._progress(steps, logs.get("loss", float("nan")), force=True)
            print(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())),
                  flush=True)

    # With weight averaging, validation (and so the best checkpoint's choice) sees the averaged
    # weights; checkpoints keep the trained ones with the average in the optimizer's state, so
    # a resumed run goes on as it would have; _export writes the average.
    cbs = [keras.callbacks.SwapEMAWeights(), RunRecorder()] if cfg.ema else [RunRecorder()]
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
    from .data import PairBatcher, load_pairs, parse_fold, training_splits

    train, val, scan = training_splits(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                       fold=parse_fold(cfg.fold), validation=cfg.validation)
    train_pairs, _, p1 = load_pairs(train)
    val_pairs, val_kept, p2 = load_pairs(val)
    problems = scan.problems + p1 + p2
    for p in problems:
        log(f"skipped {p}")
    if not train_pairs:
        from .data import DatasetError

        raise DatasetError(f"{cfg.data}: no training photo could be read")
    aug = augment_of(cfg)
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_pairs) / cfg.batch))
    # In a multi-host job each process makes its share of every batch (a seed of its own) and the
    # same number of steps as one process would; validation runs the whole split on each process,
    # so each global batch holds every process's copy of the same photos and the averages are
    # those of one process.
    from .devices import process_shard

    process, processes = process_shard()
    local = cfg.batch // processes
    shard = process if processes > 1 else None
    train_b = PairBatcher(train_pairs, cfg.size, local, aug, steps=steps, seed=cfg.seed, shard=shard)
    val_b = PairBatcher(val_pairs, cfg.size, local, None) if val_pairs else None
    held = ""
    if cfg.fold:
        held = f" (fold {cfg.fold} of the training photos; the val split is not read)"
    elif not cfg.validation:
        held = " (no validation: the val split is not read; the model is the last epoch's)"
    log(f"data: {len(train_pairs)} training and {len(val_pairs)} validation photos{held}, "
        f"{len(problems)} skipped; {steps} batches of {cfg.batch} per epoch")
    return train_b, val_b, len(problems), val_kept


def augment_of(cfg: TrainConfig):
    """The crops' random changes for a config (none with ``augment`` off)."""
    from .data import Augment

    if not cfg.augment:
        return Augment.none()
    return Augment(crop_scale=tuple(cfg.crop_scale), brightness=cfg.brightness, contrast=cfg.contrast,
                   color=cfg.color, noise=cfg.noise)


def data_workers() -> int:
    """Threads preparing batches (``UNET_DATA_WORKERS``; default every core, at most 16).

    One thread cropped and augmented 174 images/s of 256x256 here (2 cores), about what an
    H100 took from the pipeline (175 img/s, against 672 from pre-loaded arrays): the input
    was the bottleneck. Batches stay deterministic: batch ``i`` of epoch ``e`` has its own seed,
    whichever thread makes it (PIL and numpy release the GIL for the heavy parts).
    """
    from .config import count_setting

    return count_setting("UNET_DATA_WORKERS", max(1, min(16, os.cpu_count() or 1)))


def data_processes(gpu: bool) -> int:
    """Worker processes making the training batches (``UNET_DATA_PROCESSES``; 0 is threads).

    By default, training on a GPU uses :func:`data_workers` processes: threads there scaled
    2.1x on 16 cores under the GIL and competed with the training loop for it
    (:mod:`unet.batches`). On a CPU the network's arithmetic takes every core and the batches
    are a small part of a step, so threads make them.
    """
    from .config import count_setting

    return count_setting("UNET_DATA_PROCESSES", data_workers() if gpu else 0, "processes", minimum=0)


def keras_dataset(batcher, workers: int | None = None, processes: int = 0):
    """Wrap a :class:`~unet.data.PairBatcher` as a ``keras.utils.PyDataset``, its batches made
    ahead by :func:`data_workers` threads (a queue of two per thread), or, for training
    batches with ``processes``, by that many worker processes (:class:`unet.batches.ProcessBatches`).
    Either way batch ``i`` of epoch ``e`` is the same. Call its ``close()`` when done (it ends
    the worker processes)."""
    import keras

    pool = None
    if processes and batcher.augment is not None:
        from .batches import ProcessBatches

        pool = ProcessBatches(batcher, processes)
        workers = 1  # the processes make the batches ahead; the training loop takes them in turn
    workers = workers or data_workers()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(8, 2 * workers))

        def __len__(self):
            return len(batcher)

        def __getitem__(self, index):
            return batcher.batch(index) if pool is None else pool.batch(batcher.epoch, index)

        def on_epoch_end(self):
            batcher.epoch += 1

        def close(self):
            if pool is not None:
                pool.close()

    return Batches()


def _compile(model, cfg: TrainConfig, total_steps: int):
    import keras

    from .losses import get_loss
    from .metrics import keras_metrics

    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, total_steps), alpha=0.05)
    ema = {"use_ema": True, "ema_momentum": cfg.ema} if cfg.ema else {}
    opt = (keras.optimizers.AdamW(lr, weight_decay=1e-4, **ema) if cfg.optimizer == "adamw"
           else keras.optimizers.Adam(lr, **ema))
    model.compile(optimizer=opt, loss=get_loss(cfg.loss, cfg.deep_supervision), metrics=keras_metrics(cfg.threshold))
    # The optimizer's variables made now, not in the first step: a variable made while the step is
    # traced makes TensorFlow trace it twice (the first epoch of a tiny run took 8.9 s, now 3.0).
    opt.build(model.trainable_variables)


def _claim(run: Run, resume: bool) -> dict:
    """Mark the run as running in this process.

    Raises:
        RunError: another live process is already training this run (nothing is touched).
    """
    status = run.raw_status()
    owner = status.get("pid")
    if status.get("state") in ACTIVE and owner not in (None, os.getpid()) and _owner_alive(status):
        raise RunError(f"run {run.id} is already {status['state']} (process {owner})")
    _install_stop_signals(run)  # a stop asked for while the process started (STOP file) still counts
    status.update(state="running", error=None, **process_identity())
    status.setdefault("started_at", _now())
    if resume:
        status.setdefault("resumed_at", []).append(_now())
    write_json_atomic(run.status_path, status)
    return status


def _start_backend(run: Run, cfg: TrainConfig, log):
    """Prepare the device, the precision policy and (several GPUs) a distribution strategy;
    record them in ``environment.json``. Returns the strategy's scope and the devices."""
    from .devices import describe_environment, prepare

    prepare(cfg.device)
    import keras

    from . import losses, metrics  # noqa: F401  registers the objects checkpoints refer to
    from .devices import setup_training

    strategy, devices, parallel = setup_training(cfg.mixed_precision)
    if cfg.device == "gpu" and not any(d["kind"] == "GPU" for d in devices):
        raise RunError("device 'gpu' was chosen but no GPU is visible to Keras")
    if cfg.batch % parallel["replicas"]:
        raise ConfigError(f"batch {cfg.batch} does not split evenly over {parallel['replicas']} devices "
                          f"({parallel['how']}): choose a multiple of {parallel['replicas']}")
    env = {**describe_environment(devices, cfg.mixed_precision), "parallel": parallel}
    write_json_atomic(run.environment_path, env)
    log(f"run {run.id}: backend {env['backend']}, devices: {', '.join(env['devices'])}"
        + (f"; data parallel: {parallel['how']}" if parallel["replicas"] > 1 else ""))
    keras.utils.set_random_seed(cfg.seed)
    return (strategy.scope() if strategy is not None else contextlib.nullcontext()), devices


def _network(run: Run, cfg: TrainConfig, resume: bool, total_steps: int, log):
    """The network to train: the last checkpoint (resume), or a new one, from ``init_from``'s
    weights when given, compiled."""
    import keras

    from .model import build_unet, deeply_supervised

    if resume and run.last_checkpoint.exists():
        model = keras.saving.load_model(run.last_checkpoint, safe_mode=True)
        log(f"resumed from {run.last_checkpoint.name} after {run.epochs_done()} completed epochs")
        return model
    model = build_unet(cfg.preset, cfg.size)
    if cfg.init_from:
        from .model import ModelError, load_model

        source = load_model(cfg.init_from)
        try:
            model.set_weights(source.get_weights())
        except ValueError:
            raise ModelError(f"{cfg.init_from}: its architecture is not preset {cfg.preset!r}") from None
        log(f"weights initialised from {cfg.init_from}")
    if cfg.deep_supervision:
        model = deeply_supervised(model)
    _compile(model, cfg, total_steps)
    return model


def training_memory(model, batch: int, mixed_precision: bool) -> int:
    """Bytes one training step needs, estimated from the network: the weights with their
    gradients and Adam's two moments (4 copies, float32), and every layer's output for the
    batch kept for the backward pass together with its gradient (2 copies)."""
    import numpy as np

    act_bytes = 2 if mixed_precision else 4
    params = model.count_params() * 4 * 4
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers if layer.output is not None)
    return params + 2 * outputs * batch * act_bytes


def _check_memory(model, cfg: TrainConfig, devices: list[dict]) -> None:
    """Refuse a run whose training step cannot fit in this machine's free memory (CPU
    training), before it is killed for it: the message says what to lower."""
    import psutil

    if any(d["kind"] == "GPU" for d in devices):
        return  # the GPU's own allocator reports what does not fit, as an error the run records
    need = training_memory(model, cfg.batch, cfg.mixed_precision)
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise ConfigError(f"size {cfg.size} at batch {cfg.batch} needs about {need / 2**30:.1f} GiB to train "
                          f"({cfg.preset} preset); this machine has {free / 2**30:.1f} GiB free: lower the batch "
                          "or the size")


def _fit(run: Run, cfg: TrainConfig, model, train_b, val_b, initial_epoch: int, log, gpu: bool = False) -> str:
    """Train from ``initial_epoch``; "completed", or "stopped" on a stop request (checkpoint written).
    On a GPU the training batches are made by worker processes (:func:`data_processes`)."""
    from .batches import SharedMemoryTooSmall

    callbacks = _callbacks(run, cfg, len(train_b), len(val_b) if val_b else 0, initial_epoch)
    processes = data_processes(gpu)
    try:
        train_data = keras_dataset(train_b, processes=processes)
        if processes:
            log(f"training batches made by {processes} worker processes")
    except SharedMemoryTooSmall as exc:
        log(f"{exc}: training batches made by threads instead")
        train_data = keras_dataset(train_b)
    try:
        model.fit(
            train_data,
            validation_data=keras_dataset(val_b) if val_b else None,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        return "completed"
    except StopRequested:
        _atomic_save(model, run.last_checkpoint)
        log("stopped on request after the current batch; checkpoint written")
        return "stopped"
    finally:
        train_data.close()


def _export(run: Run, cfg: TrainConfig, val=(), log=lambda line: None) -> None:
    """Save the best checkpoint as the run's inference model (``model.keras`` + its card).

    A card that ``calibrate --write`` tuned keeps its threshold, scale and calibration record
    (a resumed run never loses them); as the weights changed since, the record is marked
    stale, and the Home page and ``calibrate`` say to measure again.
    """
    import keras

    from .damage_model import DamageModel, ModelCard
    from .model import main_network, save_model

    if not run.best_checkpoint.exists():
        return
    final = keras.saving.load_model(run.best_checkpoint, safe_mode=True)
    if cfg.ema:
        _averaged_weights(final)
    final = main_network(final)  # a deeply supervised run's side heads are for training only
    card = {"threshold": cfg.threshold, "preset": cfg.preset, "source": f"run {run.id}"}
    try:
        old = ModelCard.read(run.model_path)
    except UnetError:
        old = None
    if old is not None and old.calibration and not old.calibration.get("auto"):
        stale = {**old.calibration, "stale": f"the weights changed after calibration (run trained on, {_now()}); "
                                              "calibrate again"}
        card.update(threshold=old.threshold, scale=old.scale, calibration=stale)
    model = DamageModel(final, ModelCard(input_size=cfg.size, threshold=cfg.threshold))  # one any-size copy
    if val and "calibration" not in card:
        card.update(_calibrated(run, model, val, log))
    save_model(model, run.model_path, **card)


def _averaged_weights(model) -> None:
    """Put the optimizer's weight average (``ema``) into a checkpoint's network, as was validated."""
    from .model import ModelError

    opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if not getattr(opt, "use_ema", False):
        raise ModelError("the checkpoint has no weight average in its optimizer state (trained without ema?)")
    opt.finalize_variable_values(model.trainable_variables)  # Keras: the average into the network


def _calibrated(run: Run, model, val, log) -> dict:
    """The threshold with the best F1 on the run's validation photos, as the bundled model's was
    chosen (a run's model no longer ships with 0.5); {} when they cannot be read."""
    from .evaluate import calibrate_samples

    log(f"calibrating the threshold on the {len(val)} validation photos")
    try:
        result = calibrate_samples(model, {"validation photos of this run": (val, [])})
    except UnetError as exc:
        log(f"calibration skipped: {exc}")
        return {}
    result["auto"] = f"chosen when run {run.id} finished training ({_now()}); `calibrate --write` replaces it"
    log(f"threshold {result['threshold']:.3f} (F1 {result['mean_f1']:.4f} on the validation photos)")
    return {"threshold": round(min(0.99, max(0.01, result["threshold"])), 3), "calibration": result}


def _failure_message(run: Run, exc: Exception) -> str:
    """The one line a user reads in the status for a failed run."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (f"the disk is full (or a file-size limit was reached) while writing "
                f"{exc.filename or 'the run folder'}: {exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        where = Path(exc.filename) if exc.filename else run.dir
        inside = where == run.dir or run.dir in where.parents
        what = "the run folder cannot be written" if inside else "a file cannot be read"
        return f"{what} ({where}): {exc.strerror}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0] if not isinstance(exc, UnetError) \
        else str(exc).splitlines()[0]


def execute(run: Run, resume: bool = False) -> str:
    """Train the run in this process; returns the final state.

    Never raises for a training failure: the error goes into ``status.json`` and the
    log, and the state is ``failed``.

    Raises:
        RunError: another live process is already training this run (nothing is touched).
    """

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        _claim(run, resume)
    except OSError as exc:
        print(f"cannot write to the run folder {run.dir}: {exc}", file=sys.stderr, flush=True)
        return "failed"

    state, error = "failed", None
    try:
        cfg = run.train_config()
        initial_epoch = run.epochs_done() if resume else 0
        if resume and initial_epoch >= cfg.epochs and run.model_path.exists():
            log(f"all {cfg.epochs} epochs already done; nothing to train (the model and its card are unchanged)")
            state = "completed"
        else:
            scope, devices = _start_backend(run, cfg, log)
            train_b, val_b, n_problems, val_samples = _data(cfg, log)
            run.set_status(data_problems=n_problems)
            train_b.epoch = initial_epoch
            with scope:
                model = _network(run, cfg, resume, cfg.epochs * len(train_b), log)
            _check_memory(model, cfg, devices)
            state = _fit(run, cfg, model, train_b, val_b, initial_epoch, log,
                         gpu=any(d["kind"] == "GPU" for d in devices))
            from .devices import process_shard

            process, processes = process_shard()
            if processes > 1:
                import keras

                keras.distribution.set_distribution(None)  # the export runs in process 0 alone
            if process == 0:
                _export(run, cfg, val_samples, log)
    except Exception as exc:  # any failure ends this run only, recorded for the user
        error = _failure_message(run, exc)
        traceback.print_exc()
        state = "failed"
    try:
        run.set_status(state=state, error=error, ended_at=_now())
    except OSError as exc:
        print(f"could not record the final state {state}: {exc}", file=sys.stderr, flush=True)
    log(f"run {run.id} {state}" + (f": {error}" if error else ""))
    try:  # this run's slot is free: the next waiting run may start
        from .runs import start_waiting

        for other in start_waiting(run.dir.parent):
            log(f"started waiting run {other}")
    except OSError as exc:
        print(f"could not start the waiting runs: {exc}", file=sys.stderr, flush=True)
    return state

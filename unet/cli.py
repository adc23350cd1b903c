"""``python -m unet``: every dashboard action as a command for batch work.

Bad input (any :class:`unet.UnetError`) ends with exit code 2 and one line saying what is
wrong; a training run that fails exits with 1; anything else is a bug in this package and
shows its traceback (exit code 1), so it can be reported and fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import DEVICES, LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
from .errors import UnetError


class CliError(UnetError):
    """A one-line reason for exit code 2."""


MODEL_HELP = ".keras file, or a bundled model: default (the default) or noise-robust (grainy, dim or JPEG-noisy photos)"


def _progress(desc: str, every_s: float | None = None):
    """A progress bar on a terminal; elsewhere (a log, a pipe) a plain line every ``every_s``
    seconds ($UNET_PROGRESS_SECONDS, default 30), so a long job piped to a file still says how far it is."""
    if every_s is None:
        every_s = float(os.environ.get("UNET_PROGRESS_SECONDS", "30"))
    if sys.stderr.isatty():
        from tqdm import tqdm

        return lambda items: tqdm(items, desc=desc, unit="img", file=sys.stderr)

    def lines(items):
        if not hasattr(items, "__len__"):
            items = list(items)
        n = len(items)  # a sized iterable is not run ahead: it may be the work itself
        start = last = time.monotonic()
        for k, item in enumerate(items):
            now = time.monotonic()
            if k and now - last >= every_s:
                left = (now - start) / k * (n - k)
                print(f"{desc}: {k}/{n} ({100 * k / n:.0f}%), about {_duration(left)} left",
                      file=sys.stderr, flush=True)
                last = now
            yield item
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _threshold(text: str) -> float:
    t = float(text)
    if not 0.0 < t < 1.0:
        raise argparse.ArgumentTypeError("threshold must be between 0 and 1")
    return t


def _mm_per_px(text: str) -> float:
    from .cracks import check_mm_per_px

    try:
        return check_mm_per_px(text, "--mm-per-px")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fold(text: str | None) -> tuple[int, int] | None:
    from .data import DatasetError, parse_fold

    try:
        return parse_fold(text)
    except DatasetError as exc:
        raise CliError(str(exc)) from None


def _scale(text: str) -> float:
    from .model import check_scale

    try:
        return check_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _runs_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default=None, help="folder of training runs (default: $UNET_RUNS_DIR, else the "
                   "project's runs/, wherever the command runs from)")


# ---------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------


def cmd_sample_data(a) -> int:
    from .synthetic import write_sample_dataset

    h, w = a.size
    summary = write_sample_dataset(a.dir, count=a.count, seed=a.seed, size=(h, w), progress=_progress("generating"))
    print(f"wrote {summary['count']} synthetic photos to {a.dir} "
          f"(train {summary['splits']['train']}, val {summary['splits']['val']}, test {summary['splits']['test']}; "
          f"{summary['mean_damaged_pct']}% damaged pixels)")
    return 0


def _train_config(a) -> TrainConfig:
    base = {}
    if a.config:
        try:
            base = json.loads(Path(a.config).read_text())
        except OSError as exc:
            raise CliError(f"{a.config}: cannot read config ({exc.strerror})")
        except ValueError as exc:
            raise CliError(f"{a.config}: not valid JSON ({exc})")
    # Config keys from their flags; a command with fewer flags than `train` (crossval) leaves the rest to the file.
    flags = {"preset": "preset", "size": "size", "epochs": "epochs", "batch": "batch", "loss": "loss",
             "learning_rate": "lr", "steps_per_epoch": "steps_per_epoch", "seed": "seed", "device": "device",
             "name": "name", "optimizer": "optimizer", "schedule": "schedule", "init_from": "init_from",
             "fold": "fold", "ema": "ema", "brightness": "brightness", "contrast": "contrast",
             "color": "color", "noise": "noise"}
    data = getattr(a, "data", None)
    overrides = {key: getattr(a, flag, None) for key, flag in flags.items()}
    overrides["data"] = (data[0] if len(data) == 1 else data) if data else None
    base.update({k: v for k, v in overrides.items() if v is not None})
    if getattr(a, "no_augment", False):
        base["augment"] = False
    if getattr(a, "mixed_precision", False):
        base["mixed_precision"] = True
    if getattr(a, "deep_supervision", False):
        base["deep_supervision"] = True
    if "data" not in base:
        raise CliError("--data is required (a dataset folder), or a --config that names one")
    try:
        cfg = TrainConfig.from_dict(base).validate()
    except (TypeError, UnetError) as exc:
        raise CliError(f"invalid training config: {exc}") from None
    for root in cfg.dataset_folders():
        if not Path(root).expanduser().is_dir():
            raise CliError(f"{root}: dataset folder does not exist")
    return cfg


def cmd_train(a) -> int:
    from .runs import create_run, launch

    cfg = _train_config(a)
    if a.distributed:
        return _train_distributed(a, cfg)
    run = create_run(cfg, a.runs_dir)
    print(f"run {run.id}\nfolder {run.dir}", flush=True)
    if a.detach:
        pid = launch(run)
        print(f"training in the background (pid {pid})" if pid else f"queued: {run.raw_status().get('waiting')}",
              "; follow it with: python -m unet runs list", sep="", flush=True)
        return 0
    from .train import execute

    run.stop_path.unlink(missing_ok=True)
    return _final(run, execute(run))


def cmd_crossval(a) -> int:
    from .crossval import cross_validate, final_model, table
    from .runs import default_runs_dir

    cfg = _train_config(a)
    runs_dir = a.runs_dir or default_runs_dir()
    if a.final:
        if a.only:
            raise CliError("--final trains the final model only; train the folds with --only in another command")
        final = final_model(cfg, a.folds, runs_dir)
        if a.out and final.get("card"):  # only a model whose card came from the folds is worth installing
            from .model import load_model
            from .runs import get_run

            final["out"] = str(load_model(get_run(final["run"], runs_dir).model_path).save(a.out))
        print(json.dumps(final))
        return 0 if final.get("card") else 1
    if a.out:
        raise CliError("--out saves the final model: it goes with --final")
    summary = cross_validate(cfg, a.folds, runs_dir, only=a.only, scales=a.scales)
    print(table(summary))
    # This command's folds only: with --only, the others may be training in other processes.
    mine = {str(k) for k in (a.only or range(1, a.folds + 1))}
    failed = [k for k, r in summary["runs"].items() if r.get("mean_f1") is None and k in mine]
    if failed:
        print(f"error: fold(s) {', '.join(sorted(failed, key=int))} not scored (see above); run the same command "
              "again to resume", file=sys.stderr)
        return 1
    return 0


def _train_distributed(a, cfg) -> int:
    """One process of a multi-host job (every process runs the same command): process 0 makes
    and writes the run folder; the others train in a scratch folder they remove at the end."""
    import shutil
    import tempfile

    from .devices import prepare, start_multihost
    from .runs import create_run
    from .train import execute

    if a.detach:
        raise CliError("--distributed runs in the foreground: the job's launcher starts every process")
    prepare(cfg.device)
    cfg.validate()
    process, processes = start_multihost()
    if cfg.batch % processes:
        raise CliError(f"batch {cfg.batch} does not split evenly over {processes} processes")
    scratch = None
    if process == 0:
        run = create_run(cfg, a.runs_dir)
        print(f"run {run.id}\nfolder {run.dir}\nprocess 0 of {processes}", flush=True)
    else:
        scratch = tempfile.mkdtemp(prefix=f"unet-process{process}-")
        run = create_run(cfg, scratch)
        print(f"process {process} of {processes}: process 0 writes the run folder", flush=True)
    try:
        state = execute(run)
        return _final(run, state) if process == 0 else (1 if state == "failed" else 0)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _final(run, state: str) -> int:
    st = run.status()
    if state == "failed":
        reason = st.get("error") or "its status could not be recorded (see the message above)"
        print(f"error: run {run.id} failed: {reason}", file=sys.stderr)
        return 1
    print(f"run {run.id} {state}; model: {run.model_path if run.model_path.exists() else 'none yet'}")
    return 0


def _load(model_path):
    from .damage_model import DamageModel

    return DamageModel.load(model_path)


def _photos_and_model(a):
    """Check the inputs and the output folder (said before the model loads, which takes seconds);
    then the model."""
    from .predict import collect_images, output_folder

    missing = [p for p in a.inputs if not Path(p).exists()]
    if missing:
        raise CliError(f"{missing[0]}: no such file or folder")
    if not collect_images(a.inputs, skip=[a.out]):
        raise CliError("no image files found in the given folders")
    output_folder(a.out)
    return _load(a.model)


def cmd_predict(a) -> int:
    from .predict import predict_files

    model = _photos_and_model(a)
    options = dict(threshold=a.threshold, progress=_progress("segmenting"), flips=a.flips, scale=a.scale,
                   measure=a.measure or a.mm_per_px is not None, mm_per_px=a.mm_per_px)
    try:
        if a.ray is not None:
            from .cluster import predict_files_ray

            rows = predict_files_ray(model, a.inputs, a.out, address=a.ray, workers=a.workers,
                                     cpus_per_worker=a.cpus_per_worker, **options)
        else:
            rows = predict_files(model, a.inputs, a.out, **options)
    except KeyboardInterrupt:
        print(f"interrupted; {Path(a.out) / 'results.csv'} lists what was done", file=sys.stderr)
        return 130
    bad = [r for r in rows if r["error"]]
    for r in rows:
        print(f"{r['file']}: " + (f"error: {r['error']}" if r["error"] else _result_line(r)))
    print(f"{len(rows) - len(bad)} segmented, {len(bad)} failed; results in {Path(a.out) / 'results.csv'}")
    _name_low_confidence(rows)
    _suggest_noise_robust(model, rows)
    if a.mm_per_px is not None:
        from .cracks import DISCLAIMER

        print(f"grades: {DISCLAIMER}")
    if rows and len(bad) == len(rows):
        raise CliError(f"none of the {len(rows)} photo(s) could be segmented; {Path(a.out) / 'results.csv'} "
                       "says why for each")
    return 0


def _suggest_noise_robust(model, rows: list[dict]) -> None:
    """With the bundled default: name the photos brightened or smoothed for it, for which the
    bundled noise-robust model usually keeps more of the cracks (docs/exposure.md)."""
    from .predict import few, for_noise_robust

    dim = for_noise_robust(model.path, rows)
    if dim:
        print(f"{len(dim)} photo(s) dim or grainy ({few(dim)}): --model noise-robust usually keeps more of their cracks")


def _result_line(r: dict) -> str:
    line = f"{r['damaged_pct']:.2f}% damaged"
    if "cracks" in r:
        line += f", {r['cracks']} crack(s), widest {r['max_width_px']:.1f} px"
        if "grade" in r:
            line += f" = {r['max_width_mm']:.2f} mm, grade {r['grade']} ({r['grade_name']})"
    from .predict import low_confidence

    if low_confidence(r):
        line += f"; low confidence, check it by eye: {r.get('note') or 'see results.csv'}"
    return line


def _name_low_confidence(rows: list[dict]) -> None:
    """A line naming the photos whose masks need a check by eye (the ``note`` column says why)."""
    from .predict import few, low_confidence

    low = [Path(r["file"]).name for r in rows if low_confidence(r)]
    if low:
        print(f"{len(low)} photo(s) with low confidence, to check by eye before trusting their masks: {few(low, 5)}")


def cmd_survey(a) -> int:
    from .survey import run_survey

    model = _photos_and_model(a)
    try:
        rows = run_survey(model, a.inputs, a.out, mm_per_px=a.mm_per_px, threshold=a.threshold,
                          progress=_progress("surveying"), flips=a.flips, scale=a.scale, title=a.title)
    except KeyboardInterrupt:
        print(f"interrupted; {Path(a.out) / 'report.html'} covers what was done", file=sys.stderr)
        return 130
    bad = [r for r in rows if r["error"]]
    print("worst first:")
    for r in rows[:10]:
        print(f"  {r['file']}: " + (f"error: {r['error']}" if r["error"] else _result_line(r)))
    if len(rows) > 10:
        print(f"  ... {len(rows) - 10} more in survey.csv")
    print(f"{len(rows) - len(bad)} measured, {len(bad)} failed; report: {Path(a.out) / 'report.html'}, "
          f"table: {Path(a.out) / 'survey.csv'}")
    _name_low_confidence(rows)
    _suggest_noise_robust(model, rows)
    if a.mm_per_px is not None:
        from .cracks import DISCLAIMER

        print(f"grades: {DISCLAIMER}")
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import eval_samples, evaluate, evaluate_and_store, results_dir

    model_path, out, run = a.model, a.out, None
    if a.run and a.ray is not None and not a.out:
        raise CliError("--ray with --run: give --out (results stored in a run come from the single-process path)")
    if a.run and (a.flips or a.scale is not None) and not a.out:
        raise CliError("--flips and --scale results are not stored in the run (Compare shows the model's own "
                       "predictions); give --out for them")
    if a.run:
        from .runs import get_run

        run = get_run(a.run, a.runs_dir)
        model_path = run.best_model_path()
        if model_path is None:
            raise CliError(f"run {run.id} has no saved model yet")
    fold = _fold(a.fold)
    if a.run and fold is not None and not a.out:
        raise CliError("--fold with --run: give --out (the Compare page keeps results of whole splits)")
    samples, problems = eval_samples(a.data, fold)
    if not samples:
        _list_skipped([str(p) for p in problems])
        raise CliError(f"{a.data}: no usable image/mask pairs to evaluate ({len(problems)} problems, listed above)")
    model = _load(model_path)
    if run is not None and out is None:
        # Stored where the Compare page looks for it, marked with the model file's version.
        out = results_dir(model_path, a.data, run.dir.parent)
        result = evaluate_and_store(model, model_path, a.data, run.dir.parent, threshold=a.threshold,
                                    progress=_progress("evaluating"), samples=samples, problems=problems)
    else:
        options = dict(threshold=a.threshold, out_dir=out, problems=problems, progress=_progress("evaluating"),
                       flips=a.flips, scale=a.scale,
                       meta={"data": str(Path(a.data).resolve()), "model": str(model_path or "default")})
        if a.ray is not None:
            from .cluster import evaluate_ray

            result = evaluate_ray(model, samples, address=a.ray, workers=a.workers,
                                  cpus_per_worker=a.cpus_per_worker, **options)
        else:
            result = evaluate(model, samples, **options)
    if a.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}))
    else:
        sc = result["scale"]
        seen = ", photos seen at their automatic scale" if sc == "auto" else f", photos seen at {sc:g}x" if sc != 1 else ""
        print(f"{result['n_images']} images at threshold {result['threshold']:.2f}{seen}"
              f"{' (averaged over mirror images)' if a.flips else ''}: "
              f"IoU {result['iou']:.4f}  Dice/F1 {result['dice']:.4f}  precision {result['precision']:.4f}  "
              f"recall {result['recall']:.4f}  (best F1 {result['best_f1']:.4f} at {result['best_threshold']:.3f})")
        print(_interval_line(result))
        skipped = result.get("problems") or []  # found by the scan, and while reading the photos
        _list_skipped(skipped)
        if skipped:
            print(f"{len(skipped)} file(s) skipped, listed above")
        if out:
            print(f"results written to {out}")
    return 0


def _interval_line(result: dict) -> str:
    """How far a split's F1 can be trusted, in words."""
    iv, n = result.get("dice_interval"), result.get("sources", 0)
    if not iv:
        return f"  F1 interval: none (the photos come from {n} source photo(s); at least 3 are needed)"
    return (f"  F1 90% interval {iv[0]:.3f}-{iv[1]:.3f}, resampling the {n} source photos "
            f"(a photo's patches and crops count as one)")


def cmd_compare(a) -> int:
    from .evaluate import compare_rows, eval_samples, evaluate

    summaries = [m for m in a.models if m.endswith(".json")]
    if summaries:
        if len(summaries) != len(a.models) or a.data or a.fold:
            raise CliError("compare takes .keras models with --data, or crossval summaries (.json) alone")
        return _compare_summaries(a)
    if not a.data:
        raise CliError("compare needs --data: the split the models are scored on")
    samples, problems = eval_samples(a.data, _fold(a.fold))
    if not samples:
        _list_skipped([str(p) for p in problems])
        raise CliError(f"{a.data}: no usable image/mask pairs to compare on ({len(problems)} problems, listed above)")
    results = {}
    for path in a.models:
        model = _load(path)
        results[path] = evaluate(model, samples, problems=problems, save_masks=False,
                                 progress=_progress(f"evaluating {Path(path).name}"))
    first = a.models[0]
    rows = []
    for path, r in results.items():
        d = compare_rows(r["per_image"], results[first]["per_image"]) if path != first else None
        rows.append({"model": path, "dice": r["dice"], "precision": r["precision"], "recall": r["recall"],
                     "threshold": r["threshold"], "dice_interval": r["dice_interval"], "sources": r["sources"],
                     "vs_first": d})
    if a.json:
        print(json.dumps({"data": str(a.data), "fold": a.fold, "models": rows}))
        return 0
    print(f"{len(samples)} photos from {rows[0]['sources']} source photos; each model at its own threshold and scale")
    for row in rows:
        iv = row["dice_interval"]
        print(f"{row['model']}: F1 {row['dice']:.4f}" + (f" (90% interval {iv[0]:.3f}-{iv[1]:.3f})" if iv else "")
              + f"  precision {row['precision']:.4f}  recall {row['recall']:.4f}  threshold {row['threshold']:.3f}")
        d = row["vs_first"]
        if d:
            print(f"  against {first}: {d['difference']:+.4f} F1 (90% interval {d['low']:+.3f} to {d['high']:+.3f}; "
                  f"ahead in {100 * d['ahead']:.0f}% of resamples): {_verdict(d)}")
    _list_skipped(results[first].get("problems") or [])
    return 0


def _verdict(d: dict) -> str:
    return "the photos cannot tell them apart" if d["verdict"] == "cannot tell apart" else d["verdict"]


def _compare_summaries(a) -> int:
    """Recipes compared on their out-of-fold scores: every photo that both cross-validations
    scored, each by a fold model that never saw it."""
    from .crossval import compare_out_of_fold, out_of_fold
    from .files import read_json

    loaded = {}
    for path in a.models:
        summary = read_json(path, None)
        if not isinstance(summary, dict) or "runs" not in summary:
            raise CliError(f"{path}: missing, or not a crossval summary (runs/crossval-<name>-<K>.json)")
        loaded[path] = summary
    first = a.models[0]
    rows = [{"summary": path, "out_of_fold": out_of_fold(s["runs"]),
             "vs_first": compare_out_of_fold(s, loaded[first]) if path != first else None}
            for path, s in loaded.items()]
    if a.json:
        print(json.dumps({"summaries": rows}))
        return 0
    for row in rows:
        print(f"{row['summary']}:")
        if not row["out_of_fold"]:
            print("  no fold with its photos' counts (run its crossval command again to score them)")
        for name, o in row["out_of_fold"].items():
            iv = f" (90% interval {o['interval'][0]:.3f}-{o['interval'][1]:.3f})" if o["interval"] else ""
            print(f"  {name}: out-of-fold F1 {o['dice']:.4f}{iv}  precision {o['precision']:.4f}  recall "
                  f"{o['recall']:.4f}  ({o['photos']} photos, {o['sources']} sources)")
        for name, d in (row["vs_first"] or {}).items():
            if d:
                print(f"  {name}, against {first} on the {d['photos']} photos both scored: {d['difference']:+.4f} F1 "
                      f"(90% interval {d['low']:+.3f} to {d['high']:+.3f}; ahead in {100 * d['ahead']:.0f}% of "
                      f"resamples): {_verdict(d)}")
    return 0


def _ray_args(p) -> None:
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on a Ray cluster: 'auto' (the one `ray start` made here), host:port or "
                        "ray://host:10001; alone, a cluster started on this machine for this command "
                        "(docs/scale.md)")
    p.add_argument("--workers", type=_positive_int, help="with --ray: model workers (default: one per GPU, "
                                                         "else one per CPU)")
    p.add_argument("--cpus-per-worker", type=_positive_int, help="with --ray: CPUs each worker takes (default 1)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number, 1 or more (got {text!r})")
    return value


def _list_skipped(problems: list[str], most: int = 20) -> None:
    for p in problems[:most]:
        print(f"skipped {p}", file=sys.stderr)
    if len(problems) > most:
        print(f"... and {len(problems) - most} more", file=sys.stderr)


def cmd_calibrate(a) -> int:
    from .evaluate import calibrate

    for split in a.data:
        if not Path(split).is_dir():
            raise CliError(f"{split}: no such split folder")
    model = _load(a.model)
    result = calibrate(model, a.data, progress=_progress("calibrating"), scales=a.scales, fold=_fold(a.fold))
    for split in result["splits"].values():
        del split["images"]  # a row per photo: for crossval's out-of-fold scores, not for the card
    if a.write:
        model.update_card(threshold=round(result["threshold"], 3), scale=result["scale"], calibration=result)
    print(json.dumps(result, indent=None if a.json else 2))
    return 0


def cmd_runs(a) -> int:
    from .runs import get_run, launch, list_runs, request_stop, start_waiting

    if a.action == "list":
        start_waiting(a.runs_dir)  # a queue whose last process was killed moves on
        rows = [r.summary() for r in list_runs(a.runs_dir)]
        if a.json:
            print(json.dumps(rows))
        elif not rows:
            print("no runs yet")
        else:
            for row in rows:
                vd = row["best val Dice"]
                vd = f"{vd:.4f}" if vd is not None else "-"
                print(f"{row['run']:<44} {row['state']:<10} {row['preset'] or '-':<9} epochs {row['epochs']:<7} "
                      f"best val_dice {vd}" + (f"  ({row['error']})" if row["error"] else ""))
        return 0
    if not a.id:
        raise CliError(f"runs {a.action} needs a run id (see: python -m unet runs list)")
    run = get_run(a.id, a.runs_dir)
    if a.action == "stop":
        if request_stop(run):
            print(f"asked run {run.id} to stop after its current batch")
            return 0
        raise CliError(f"run {run.id} is not running (it is {run.state})")
    resume = a.action == "resume"
    if resume and not run.last_checkpoint.exists():
        raise CliError(f"run {run.id} has no checkpoint to resume from")
    if not resume and run.epochs_done() and not a.restart:
        raise CliError(f"run {run.id} already trained {run.epochs_done()} epochs: `runs resume` continues it; "
                       "`runs start --restart` trains it again from scratch, replacing its history and model")
    if a.detach:
        pid = launch(run, resume=resume, restart=a.restart)
        print(f"run {run.id} {'resumed' if resume else 'started'} in the background (pid {pid})" if pid
              else f"run {run.id} queued: {run.raw_status().get('waiting')}")
        return 0
    from .train import execute

    if not os.environ.get("UNET_LAUNCHED"):  # by hand: an old stop request is no longer meant
        run.stop_path.unlink(missing_ok=True)
    return _final(run, execute(run, resume=resume))


def cmd_devices(a) -> int:
    from .devices import backend, list_devices, prepare

    prepare()
    print(f"Keras backend: {backend()}")
    for d in list_devices():
        print(f"{d['kind']}: {d['name']}")
    return 0


# ---------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError("size is HEIGHTxWIDTH, e.g. 256x320")
    if min(h, w) < 32 or max(h, w) > 4096:
        raise argparse.ArgumentTypeError("each side must be between 32 and 4096")
    return h, w


MM_HELP = ("the photos' scale at the wall, millimetres per pixel (for example the wall's real width in mm / the "
           "photo's width in px): lengths and widths in mm and a damage grade by the widest crack")
FLIPS_HELP = ("careful mode: also segment each photo's mirror images and average "
              "(4x the time, slightly more accurate)")
SCALE_HELP = ("'auto', or a factor: resize photos by this before the model sees them; masks keep the photo's "
              "size (default: the model's card; 'auto' for the bundled model: each photo's own, from the width of "
              "its cracks in a coarse pass). Below 1 suits close-ups and high-resolution photos whose cracks are "
              "many pixels wide; it loses hairline cracks")


def build_parser() -> argparse.ArgumentParser:
    from .model import PRESETS

    parser = argparse.ArgumentParser(prog="python -m unet", description="Damage segmentation: data, training, "
                                     "prediction and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-data", help="generate a synthetic damaged-wall dataset")
    p.add_argument("dir", help="target folder")
    p.add_argument("--count", type=int, default=48, help="number of photos (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(256, 320), help="HEIGHTxWIDTH (default 256x320)")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("train", help="train a U-Net (a run folder under --runs-dir)")
    p.add_argument("--data", nargs="+", help="dataset folder(s) (train/ and val/ inside, or one pool to split); "
                   "several are pooled")
    p.add_argument("--config", help="JSON training config; flags override its values")
    p.add_argument("--preset", help=", ".join(PRESETS))
    p.add_argument("--size", type=int, help="training input side, a multiple of 16")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--loss", choices=list(LOSSES), help="; ".join(f"{k}: {v}" for k, v in LOSSES.items()))
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--mixed-precision", action="store_true", help="bfloat16 on CPU, float16 on GPU")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--ema", type=float, metavar="M", help="average the weights as training goes (momentum M, "
                   "such as 0.99); validation and the saved model use the average")
    p.add_argument("--deep-supervision", action="store_true", help="decoder levels 2-4 each give a map of their "
                   "own while training, scored with the same loss (the saved model is the plain preset)")
    p.add_argument("--brightness", type=float, metavar="F", help="crops' brightness moves by up to +-F x 255 "
                   "(default 0.15)")
    p.add_argument("--contrast", type=float, metavar="F", help="crops' contrast is scaled by 1 +- F (default 0.15)")
    p.add_argument("--color", type=float, metavar="F", help="crops' colour: each channel's gain is scaled by "
                   "1 +- F and the saturation by 1 +- 2F (default 0: off)")
    p.add_argument("--noise", type=float, metavar="F", help="crops' sensor noise: Gaussian, of a standard "
                   "deviation drawn in 0-F x 255 per crop (default 0: off; 0.08 is up to 20/255)")
    p.add_argument("--name", help="a label for the run id")
    p.add_argument("--init-from", help="start from this .keras model's weights (same preset): fine-tuning")
    p.add_argument("--fold", metavar="K/N", help="validate on fold K of N of the training photos (whole source "
                   "photos per fold) instead of the val split, which is not read: choices made on folds")
    p.add_argument("--detach", action="store_true", help="train in a background process and return")
    p.add_argument("--distributed", action="store_true",
                   help="one process of a multi-host job (KERAS_BACKEND=jax; the coordinator from "
                        "KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES, _PROCESS_ID; docs/scale.md)")
    _runs_dir_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="k-fold cross-validation of a training recipe by source photo: K runs, "
                       "each scored on the fold it never saw (the val splits are not read)")
    p.add_argument("--config", required=True, help="JSON training config (the recipe); its fold is replaced")
    p.add_argument("--folds", type=int, default=5, help="K (default 5)")
    p.add_argument("--only", type=int, nargs="+", metavar="K", help="train and score only these folds now")
    p.add_argument("--scales", nargs="+", type=_scale, metavar="S", default=None,
                   help="scales calibrated with the threshold (default: auto)")
    p.add_argument("--name", help="a label for the runs and the summary file")
    p.add_argument("--final", action="store_true", help="train the recipe on every training photo (nothing held "
                   "out, the val splits not read) and give it the median threshold and the scale of the folds "
                   "scored so far; again later, only the card is renewed from the folds scored by then")
    p.add_argument("--out", metavar="MODEL.keras", help="with --final: also save the final model (and its card) "
                   "there once its card comes from the folds, e.g. models/default.keras")
    _runs_dir_arg(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("predict", help="segment photos; write masks, overlays and results.csv")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--threshold", type=_threshold, help="damage probability threshold (default: the model's)")
    p.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    p.add_argument("--scale", type=_scale, help=SCALE_HELP)
    p.add_argument("--measure", action="store_true",
                   help="measure the cracks: per-photo columns in results.csv, <name>_cracks.csv and _cracks.png "
                        "(implied by --mm-per-px)")
    p.add_argument("--mm-per-px", type=_mm_per_px, help=MM_HELP)
    _ray_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("survey", help="segment and measure a folder of photos; rank them and write report.html")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (masks, survey.csv, report.html)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--threshold", type=_threshold, help="damage probability threshold (default: the model's)")
    p.add_argument("--mm-per-px", type=_mm_per_px, help=MM_HELP)
    p.add_argument("--title", help="the report's title")
    p.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    p.add_argument("--scale", type=_scale, help=SCALE_HELP)
    p.set_defaults(func=cmd_survey)

    p = sub.add_parser("evaluate", help="IoU, Dice, precision and recall of a model on a split")
    p.add_argument("--data", required=True, help="a split folder (or a dataset: its test/ or val/ split)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help=MODEL_HELP)
    g.add_argument("--run", help="a run id: evaluates its model and stores results in the run folder")
    p.add_argument("--threshold", type=_threshold)
    p.add_argument("--fold", metavar="K/N", help="evaluate fold K of N of the dataset's training photos (what a run "
                   "trained with --fold K/N held out) instead of its test/val split")
    p.add_argument("--out", help="folder for metrics.json, per_image.csv, pr_curve.csv")
    p.add_argument("--flips", action="store_true", help=FLIPS_HELP)
    p.add_argument("--scale", type=_scale, help=SCALE_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _ray_args(p)
    _runs_dir_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="two or more models on one split (or recipes on their crossval folds): F1 "
                       "with its interval, and whether the photos can tell each from the first (paired resampling "
                       "of the source photos)")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".keras files, or crossval summaries "
                   "(runs/crossval-<name>-<K>.json: their out-of-fold scores, no --data); the first is the reference")
    p.add_argument("--data", help="a split folder (or a dataset: its test/ or val/ split)")
    p.add_argument("--fold", metavar="K/N", help="fold K of N of the dataset's training photos instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("calibrate", help="choose the threshold that maximises mean F1 over validation splits")
    p.add_argument("--data", nargs="+", required=True, help="validation split folder(s); each counts equally "
                   "(with --fold: dataset folders)")
    p.add_argument("--fold", metavar="K/N", help="calibrate on fold K of N of each dataset's training photos (the "
                   "photos a run trained with --fold K/N held out) instead of val splits")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--scales", nargs="+", type=_scale, metavar="S",
                   help="also choose the resize factor photos get before the model sees them, among these "
                        "(e.g. 1 0.875 0.75; one pass over the splits each; default: the model's own)")
    p.add_argument("--write", action="store_true", help="store the threshold (and scale) in the model's .json sidecar")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("runs", help="list, stop, resume or start training runs")
    p.add_argument("action", choices=["list", "stop", "resume", "start"])
    p.add_argument("id", nargs="?", help="run id")
    p.add_argument("--detach", action="store_true", help="resume/start in a background process")
    p.add_argument("--restart", action="store_true", help="start: train a run that has epochs again from scratch")
    p.add_argument("--json", action="store_true", help="list as JSON")
    _runs_dir_arg(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("devices", help="the Keras backend and the CPU/GPUs it sees")
    p.set_defaults(func=cmd_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnetError as exc:  # bad input; any other exception is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""K-fold cross-validation of a training recipe, by source photo (issue #14's honest protocol).

A recipe (a :class:`~unet.config.TrainConfig`) is trained K times, run k holding out fold k
of K of every dataset's training photos (whole source photos per fold: no fold shares a wall
with another), and each run's model is calibrated on the fold it never saw. The mean and
spread of those K scores rank recipes without reading the val splits, which stay for one
final reading. Each fold's run is an ordinary run folder; ``crossval-<name>-<K>.json`` in
the runs folder records them as they finish, so an interrupted cross-validation continues
where it stopped (a run killed mid-training resumes from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import statistics
from pathlib import Path
from typing import Callable, Sequence

from .config import TrainConfig
from .errors import ConfigError, UnetError
from .files import read_json, write_json_atomic


def summary_path(cfg: TrainConfig, folds: int, runs_dir: str | Path) -> Path:
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in (cfg.name or cfg.preset)).strip("-") or "recipe"
    return Path(runs_dir) / f"crossval-{label}-{folds}.json"


def _recipe(cfg: TrainConfig) -> dict:
    """The recipe as the summary stores it: the config less what each run sets (its fold, and
    whether it validates)."""
    return json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("fold", "validation")}))


def _identity(recipe: dict | None) -> dict | None:
    """What makes two recipes the same: everything but where the datasets lie (their folder names
    stay), so folds trained on another machine, with the data copied elsewhere, count together.
    A summary written before a config key existed holds no value for it: read through the config,
    it gets that key's default, which is what its runs trained with (a new key's default keeps the
    old behaviour), so its folds still count with the same recipe run today."""
    if recipe is None:
        return None
    try:
        recipe = _recipe(TrainConfig.from_dict(recipe))
    except (ConfigError, TypeError):  # a key this version does not know: compared as written
        pass
    data = recipe.get("data")
    names = [Path(d).name for d in data] if isinstance(data, list) else Path(str(data)).name
    return {**recipe, "data": names}


def cross_validate(cfg: TrainConfig, folds: int, runs_dir: str | Path, only: Sequence[int] | None = None,
                   scales: Sequence[float | str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Train and score the recipe on each fold; returns (and writes) the summary.

    Args:
        cfg: the recipe; its ``fold`` is replaced by each fold in turn.
        folds: K, at least 2.
        only: the folds to do now (1-based; default all); the others already done are kept.
        scales: the scales :func:`unet.evaluate.calibrate` chooses among with the threshold
            (default ``["auto"]``, the bundled model's).

    Returns:
        ``{"recipe", "folds", "scales", "runs": {k: {...}}, "mean": {...}}``: per fold the run
        id, threshold, scale and F1 per dataset; ``mean`` the mean and standard deviation over
        the folds done.

    Raises:
        ConfigError: bad K or fold numbers. A fold whose run fails is recorded as failed and the
        others still run; the exception is raised only for problems before any training.
    """
    from .data import parse_fold
    from .evaluate import calibrate
    from .model import load_model

    if folds < 2:
        raise ConfigError("cross-validation needs at least 2 folds")
    todo = list(only or range(1, folds + 1))
    for k in todo:
        parse_fold(f"{k}/{folds}")  # a clear message for a fold out of range
    cfg = cfg.validate()
    path, summary = _opened(cfg, folds, runs_dir, json.loads(json.dumps(list(scales or ["auto"]))))
    for k in todo:
        entry = summary["runs"].get(str(k), {})
        if entry.get("mean_f1") is not None and "images" in entry:
            log(f"fold {k}/{folds}: done already (run {entry['run']}, mean F1 {entry['mean_f1']:.4f})")
            continue
        if entry.get("mean_f1") is not None:  # scored before its photos' counts were recorded
            log(f"fold {k}/{folds}: scoring run {entry['run']} again for its photos' counts (no training)")
        name = f"{cfg.name or cfg.preset}-fold{k}of{folds}"
        fold_cfg = dataclasses.replace(cfg, fold=f"{k}/{folds}", validation=True, name=name)  # it validates on its fold
        run, state = _trained(entry, runs_dir, fold_cfg,
                              lambda run: _record(path, k, {"run": run.id, "state": "training"}),
                              f"fold {k}/{folds}", log)
        if state != "completed":
            summary = _record(path, k, {"run": run.id, "state": state})
            log(f"fold {k}/{folds}: the other folds go on")
            continue
        scored = calibrate(load_model(run.model_path), cfg.dataset_folders(), scales=summary["scales"],
                           fold=(k, folds))
        summary = _record(path, k, {
            "run": run.id, "state": state, "threshold": scored["threshold"], "scale": scored["scale"],
            "mean_f1": scored["mean_f1"],
            "f1": {Path(s).name: v["f1_at_threshold"] for s, v in scored["splits"].items()},
            "recall": {Path(s).name: v["recall_at_threshold"] for s, v in scored["splits"].items()},
            # each photo's pixel counts at the fold's threshold, as [id, tp, fp, fn]: the out-of-fold scores
            "images": {Path(s).name: [[r["id"], r["tp"], r["fp"], r["fn"]] for r in v["images"]]
                       for s, v in scored["splits"].items()},
        })
        log(f"fold {k}/{folds}: mean F1 {scored['mean_f1']:.4f} at threshold {scored['threshold']:.3f}")
    with _locked(path):
        return read_json(path)


def final_model(cfg: TrainConfig, folds: int, runs_dir: str | Path, log: Callable[[str], None] = print) -> dict:
    """The recipe trained on every training photo, its threshold and scale taken from the folds.

    The last step of the protocol: the folds ranked the recipe, each fold's model calibrated on
    photos it never saw; the final run trains on all of them with nothing held out (the val
    splits are not read) and its card gets the median of the folds' thresholds and their most
    common scale, which no photo it trained on chose. Calibrating it on photos it has seen
    would pick a threshold for its own overconfidence. Run again, it does not train again: a
    completed final run only gets its card anew from the folds scored by then (folds trained
    beside it in other processes count once they are recorded).

    Returns:
        The summary's ``final`` entry: run id, state, and once a fold is scored, the threshold,
        scale and the folds they came from (``card`` False while none is).
    """
    from .model import load_model

    if folds < 2:
        raise ConfigError("cross-validation needs at least 2 folds")
    cfg = cfg.validate()
    path, summary = _opened(cfg, folds, runs_dir)  # started before any fold (beside them), it may make it
    run, state = _trained(summary.get("final") or {}, runs_dir,
                          dataclasses.replace(cfg, fold=None, validation=False, name=f"{cfg.name or cfg.preset}-final"),
                          lambda run: _record(path, "final", {"run": run.id, "state": "training"}), "final", log)
    if state != "completed":
        return _record(path, "final", {"run": run.id, "state": state, "card": False})["final"]
    with _locked(path):
        scored = {k: r for k, r in (read_json(path).get("runs") or {}).items() if r.get("mean_f1") is not None}
    done = {"run": run.id, "state": "completed", "card": bool(scored)}
    if not scored:
        log(f"final: run {run.id} trained; no fold is scored yet, so its card keeps threshold "
            f"{cfg.threshold}: run this again once one is")
        return _record(path, "final", done)["final"]
    folds_used = sorted(scored, key=int)
    threshold = round(statistics.median(r["threshold"] for r in scored.values()), 3)
    scales = [r["scale"] for r in scored.values()]
    scale = max(scales, key=lambda s: (scales.count(s), s == "auto"))
    record = {"threshold": threshold, "scale": scale, "from_folds": [int(k) for k in folds_used],
              "fold_thresholds": [scored[k]["threshold"] for k in folds_used],
              "fold_mean_f1": statistics.fmean(scored[k]["mean_f1"] for k in folds_used),
              "how": f"the median threshold and the most common scale of {len(folds_used)} of {folds} "
                    f"cross-validation folds, each chosen on photos its model never saw ({path.name})"}
    load_model(run.model_path).update_card(threshold=threshold, scale=scale, calibration=record)
    log(f"final: run {run.id}: threshold {threshold:.3f}, scale {scale} from fold(s) {', '.join(folds_used)}")
    return _record(path, "final", {**done, **{k: record[k] for k in ("threshold", "scale", "from_folds")}})["final"]


def _trained(entry: dict, runs_dir, cfg: TrainConfig, started: Callable, label: str, log) -> tuple:
    """(run, state): the run ``entry`` names once it has trained: left as it is when completed,
    resumed from its last checkpoint when it stopped or died, else a new run of ``cfg``.
    ``started(run)`` records it before it trains."""
    from .runs import Run, create_run, get_run
    from .train import execute

    run = None
    if entry.get("run"):
        try:
            run = get_run(entry["run"], runs_dir)
        except UnetError:
            run = None
    if run is not None and run.state == "completed":
        return run, "completed"
    resume = run is not None and run.last_checkpoint.exists()
    if not resume:
        run = create_run(cfg, runs_dir)
    started(run)
    log(f"{label}: {'resuming' if resume else 'training'} run {run.id}")
    run.stop_path.unlink(missing_ok=True)  # an old stop request (the one that ended it) is no longer meant
    state = execute(Run(run.dir), resume=resume)
    if state != "completed":
        log(f"{label}: run {run.id} {state}; run this again to resume it")
    return run, state


def _opened(cfg: TrainConfig, folds: int, runs_dir, scales: list | None = None) -> tuple[Path, dict]:
    """(its path, the summary on disk), made or checked against this recipe (and these scales,
    when given), under the lock; another recipe, or other scales, under the same name is refused."""
    from .data import GROUPING

    path, recipe = summary_path(cfg, folds, runs_dir), _recipe(cfg)
    with _locked(path):
        summary = read_json(path, None) or {}
        if _identity(summary.get("recipe")) not in (None, _identity(recipe)) or \
                (scales is not None and summary.get("scales") not in (None, scales)):
            raise ConfigError(f"{path}: holds a cross-validation of another recipe (or scored at other scales) "
                              "under this name; give this one another name")
        if summary.get("runs") and summary.get("grouping", 1) != GROUPING:
            raise ConfigError(f"{path}: its folds were drawn when photos were grouped by source another way "
                              f"(rule {summary.get('grouping', 1)}, now {GROUPING}: see unet.data.source_of); "
                              "folds drawn now hold other photos: give this recipe another name")
        summary.update(recipe=recipe, folds=folds, grouping=GROUPING)
        if scales is not None:
            summary["scales"] = scales
        summary.setdefault("runs", {})
        write_json_atomic(path, summary)
        return path, summary


@contextlib.contextmanager
def _locked(path: Path):
    """The summary file's lock: several processes may cross-validate folds of one recipe at once
    (``--only``, one per GPU or machine sharing the runs folder), each recording its own folds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record(path: Path, k: int | str, entry: dict) -> dict:
    """Fold k's entry (or, for k ``"final"``, the final run's) into the summary on disk, as other
    processes left it, with the means anew; returns the summary."""
    with _locked(path):
        summary = read_json(path)
        if k == "final":
            summary["final"] = entry
        else:
            summary["runs"][str(k)] = entry
            summary["mean"] = _means(summary["runs"])
        write_json_atomic(path, summary)
        return summary


def _means(runs: dict) -> dict:
    """Mean and standard deviation over the scored folds: of the mean F1, and per dataset."""
    done = [r for r in runs.values() if r.get("mean_f1") is not None]
    if not done:
        return {}

    def stats(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    out = {"folds_scored": len(done), "mean_f1": stats([r["mean_f1"] for r in done])}
    for name in done[0]["f1"]:
        out[f"f1 {name}"] = stats([r["f1"][name] for r in done if name in r["f1"]])
        out[f"recall {name}"] = stats([r["recall"][name] for r in done if name in r["recall"]])
    out["out_of_fold"] = out_of_fold(runs)
    return out


def out_of_fold_rows(runs: dict) -> dict[str, list[dict]]:
    """Per dataset, every scored fold's photos with their pixel counts, each photo scored by the
    fold model that never saw it, at that fold's threshold (folds scored before the counts were
    recorded have none)."""
    rows: dict[str, list[dict]] = {}
    for r in runs.values():
        if r.get("mean_f1") is None:
            continue
        for name, images in (r.get("images") or {}).items():
            rows.setdefault(name, []).extend({"id": i, "tp": tp, "fp": fp, "fn": fn} for i, tp, fp, fn in images)
    return rows


def out_of_fold(runs: dict) -> dict:
    """Per dataset, the pixel F1 of the scored folds' photos pooled (every photo scored by a model
    that never saw it), with its 90% interval over their source photos: one figure over up to all
    of the training photos' walls, far more of them than a val split or one fold has."""
    from .evaluate import source_counts
    from .metrics import f1_interval, scores

    out = {}
    for name, rows in out_of_fold_rows(runs).items():
        sources, counts = source_counts(rows)
        tp, fp, fn = counts.sum(0)
        out[name] = {**{k: scores(tp, fp, fn)[k] for k in ("dice", "precision", "recall")},
                     "interval": f1_interval(counts), "photos": len(rows), "sources": len(sources)}
    return out


def compare_out_of_fold(a: dict, b: dict) -> dict[str, dict]:
    """Two recipes' summaries, per dataset: a's out-of-fold F1 minus b's on the photos both scored
    (:func:`unet.evaluate.compare_rows`: paired, over their source photos)."""
    from .evaluate import compare_rows

    rows_a, rows_b = out_of_fold_rows(a.get("runs", {})), out_of_fold_rows(b.get("runs", {}))
    return {name: compare_rows(rows_a[name], rows_b[name]) for name in sorted(set(rows_a) & set(rows_b))}


def table(summary: dict) -> str:
    """The summary as lines of text: one per fold, then the mean +- sd."""
    runs = summary.get("runs", {})
    names = sorted({n for r in runs.values() for n in r.get("f1", {})})
    lines = [f"{'fold':<6}{'run':<46}{'threshold':>10}{'scale':>7}{'mean F1':>9}" + "".join(f"{n:>12}" for n in names)]
    for k in sorted(runs, key=int):
        r = runs[k]
        if r.get("mean_f1") is None:
            lines.append(f"{k:<6}{r['run']:<46}  ({r['state']})")
            continue
        scale = r["scale"] if isinstance(r["scale"], str) else f"{r['scale']:g}"
        lines.append(f"{k:<6}{r['run']:<46}{r['threshold']:>10.3f}{scale:>7}{r['mean_f1']:>9.4f}"
                     + "".join(f"{r['f1'].get(n, float('nan')):>12.4f}" for n in names))
    m = summary.get("mean") or {}
    if m:
        lines.append(f"{'mean':<6}{m['folds_scored']:<3}{'folds scored':<43}{'':>10}{'':>7}"
                     f"{m['mean_f1']['mean']:>9.4f}" + "".join(f"{m[f'f1 {n}']['mean']:>12.4f}" for n in names))
        lines.append(f"{'sd':<6}{'':<46}{'':>10}{'':>7}{m['mean_f1']['sd']:>9.4f}"
                     + "".join(f"{m[f'f1 {n}']['sd']:>12.4f}" for n in names))
    for name, o in (m.get("out_of_fold") or {}).items():
        iv = f", 90% interval {o['interval'][0]:.3f}-{o['interval'][1]:.3f}" if o["interval"] else ""
        lines.append(f"out of fold, {name}: F1 {o['dice']:.4f}{iv} (precision {o['precision']:.4f}, recall "
                     f"{o['recall']:.4f}; {o['photos']} photos from {o['sources']} sources, pooled over the folds)")
    return "\n".join(lines)

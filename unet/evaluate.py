"""Evaluating a model on a split: totals, a threshold sweep and per-image metrics.

Each photo is segmented as in production (tiled, at the model's scale) and scored at
its own resolution. Pixel counts are summed over the split for the aggregate numbers;
per-image numbers follow the empty-mask rules in :mod:`unet.metrics`. The sweep comes
from histograms of the predicted probability of damaged and intact pixels, so any
threshold is evaluated without running the model again.

Files written to ``out_dir``: ``metrics.json``, ``per_image.csv``, ``pr_curve.csv`` and
``pred/<id>.png`` (predicted masks at the chosen threshold, for side-by-side views).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .data import Problem, Sample, load_pair, scan_dataset, source_of
from .imaging import ImageError
from .metrics import MIN_GROUPS, Counts, confusion, f1_difference, f1_interval, scores
from .errors import UnetError
from .files import read_json, write_csv_atomic, write_json_atomic

BINS = 1000
# Calibration keeps recall within this of precision (issue #14): for the engineers who use the
# masks a missed crack costs more than a false alarm.
RECALL_SLACK = 0.05
# Part of every stored result's key: stored results of an older format are computed again.
RESULTS_FORMAT = 2  # 2: per-image pixel counts and the F1 interval


def eval_key(data_dir: str | Path) -> str:
    """A folder name for results on one split: readable, unique per absolute path."""
    p = Path(data_dir).expanduser().resolve()
    digest = hashlib.sha1(str(p).encode()).hexdigest()[:8]
    tail = "-".join(p.parts[-2:]) if len(p.parts) >= 2 else p.name
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in tail)[:60]
    return f"{safe}-{digest}"


def eval_samples(data_dir: str | Path, fold: tuple[int, int] | None = None) -> tuple[list[Sample], list[Problem]]:
    """The samples to evaluate: a split folder itself, or the test (else val) split of a dataset.

    With ``fold`` (k, K): fold k of the dataset's training photos (:func:`unet.data.fold_split`,
    whole source photos per fold), the photos a run trained with ``--fold k/K`` held out;
    ``data_dir`` is then the dataset or its train/ folder.
    """
    if fold is not None:
        from .data import fold_split

        root = Path(data_dir)
        scan = scan_dataset(root / "train" if (root / "train").is_dir() else root)
        pool = scan.split("train") or scan.split("all")
        if not pool:
            return [], scan.problems
        return fold_split(pool, *fold)[1], scan.problems
    scan = scan_dataset(data_dir)
    for name in ("all", "test", "val"):
        if scan.split(name):
            return scan.split(name), scan.problems
    return [], scan.problems


def sweep(pos_hist: np.ndarray, neg_hist: np.ndarray) -> dict:
    """Precision/recall/F1 at every histogram threshold and the F1-best one."""
    tp = np.cumsum(pos_hist[::-1])[::-1].astype(np.float64)  # pixels with prob >= bin start
    fp = np.cumsum(neg_hist[::-1])[::-1].astype(np.float64)
    positives = float(pos_hist.sum())
    fn = positives - tp
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = np.where(positives > 0, tp / max(positives, 1), 1.0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    thresholds = np.arange(len(pos_hist)) / len(pos_hist)
    best = _plateau_middle(f1)
    return {
        "thresholds": thresholds, "precision": precision, "recall": recall, "f1": f1,
        "best_threshold": float(thresholds[best]), "best_f1": float(f1[best]),
    }


def _plateau_middle(f1: np.ndarray) -> int:
    """Index of the middle of the best-F1 plateau (threshold 0, which marks everything, excluded).

    Where many thresholds tie, the middle is the one furthest from both edges, so it
    holds up best on new photos.
    """
    top = np.flatnonzero(f1[1:] >= f1[1:].max() - 1e-12) + 1
    return int(top[(len(top) - 1) // 2])


def evaluate(
    model,
    samples: Sequence[Sample],
    threshold: float | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    problems: Sequence[Problem] = (),
    save_masks: bool = True,
    meta: dict | None = None,
    with_curve: bool = False,
    runner=None,
    flips: bool = False,
    scale: float | None = None,
    scorer: Callable | None = None,
) -> dict:
    """Evaluate ``model`` on ``samples``; write the results to ``out_dir`` when given.

    Returns:
        The aggregate dict: ``iou, dice, precision, recall, threshold, n_images``,
        the sweep's ``best_threshold`` and ``best_f1``, ``problems``, ``per_image`` (a row per
        photo), ``sources`` (how many source photos the images came from) and ``dice_interval``: the F1's 90% interval when
        those are resampled (:func:`unet.metrics.f1_interval`; None with too few); with
        ``with_curve`` also ``curve``: F1, precision and recall at each of the 1000 sweep thresholds,
        and ``image_hists``: each photo's (id, histogram of its damaged pixels' probabilities, the
        same of its intact pixels), from which its counts at any threshold follow (:func:`counts_at`).
        ``runner`` is a :class:`~unet.predict.Predictor` to use instead of the model's
        own (another precision or tile size); ``flips`` and ``scale`` are passed to it
        per photo (careful mode; another resize factor than the card's). ``scorer`` yields
        each sample's :func:`score_sample` in order, given (predictor, samples, threshold,
        flips, scale, save_masks, progress): where the photos are scored (this process by
        default; a Ray cluster, :func:`unet.cluster.evaluate_ray`).
    """
    from .damage_model import DamageModel
    from .files import write_bytes_atomic
    from .model import check_scale

    pred = runner or DamageModel.of(model).predictor
    t = pred.default_threshold if threshold is None else float(threshold)
    scale = pred.scale if scale is None else check_scale(scale)
    total = Counts()
    pos_hist = np.zeros(BINS, np.int64)
    neg_hist = np.zeros(BINS, np.int64)
    rows, skipped, hists = [], list(problems), []
    out = Path(out_dir) if out_dir else None
    if out and save_masks:
        (out / "pred").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for r in (scorer or _local_scores)(pred, samples, t, flips, scale, bool(out and save_masks), progress):
        if isinstance(r, Problem):
            skipped.append(r)
            continue
        total = total + r["counts"]
        pos_hist += r["pos"]
        neg_hist += r["neg"]
        rows.append(r["row"])
        if with_curve:
            hists.append((r["row"]["id"], r["pos"], r["neg"]))
        if r["mask_png"] is not None:
            write_bytes_atomic(out / "pred" / f"{r['row']['id']}.png", r["mask_png"])
    sw = sweep(pos_hist, neg_hist)
    sources, counts = source_counts(rows)
    result = {
        **scores(total.tp, total.fp, total.fn),
        # how far the split's F1 can be trusted: its source photos resampled (f1_interval)
        "dice_interval": f1_interval(counts),
        "sources": len(sources),
        "threshold": t,
        "scale": scale,
        "flips": bool(flips),
        "n_images": len(rows),
        "best_threshold": sw["best_threshold"],
        "best_f1": sw["best_f1"],
        "pixels": {"tp": total.tp, "fp": total.fp, "fn": total.fn, "tn": total.tn},
        "seconds": round(time.monotonic() - started, 2),
        "problems": [str(p) for p in skipped],
        **(meta or {}),
    }
    result["per_image"] = rows  # as read_results gives them back
    if with_curve:
        result["curve"] = {k: sw[k].tolist() for k in ("thresholds", "f1", "precision", "recall")}
        result["image_hists"] = hists
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(out / "per_image.csv", rows)
        step = max(1, BINS // 200)
        write_csv_atomic(out / "pr_curve.csv", [
            {"threshold": round(float(sw["thresholds"][i]), 4), "precision": round(float(sw["precision"][i]), 6),
             "recall": round(float(sw["recall"][i]), 6), "f1": round(float(sw["f1"][i]), 6)}
            for i in range(0, BINS, step)
        ])
        # written last: its presence means "complete"
        write_json_atomic(out / "metrics.json", {k: v for k, v in result.items()
                                                 if k not in ("curve", "image_hists", "per_image")})
    return result


def score_sample(pred, s: Sample, t: float, flips: bool, scale: float, save_mask: bool) -> "dict | Problem":
    """One sample scored: its confusion counts, the histograms of the predicted probability over
    its damaged and intact pixels, its per-image row and (``save_mask``) its mask as PNG bytes;
    or the :class:`Problem` that kept it out."""
    from .imaging import encode_png

    try:
        image, truth = load_pair(s)
    except ImageError as exc:
        return Problem(exc.name, exc.problem)
    prob, seen_scale = pred.scaled_probability(image, flips=flips, scale=scale)
    mask = prob >= t
    counts = confusion(mask, truth)
    idx = np.minimum((prob * BINS).astype(np.int64), BINS - 1)
    row = {"id": s.id, "image": str(s.image), "width": image.shape[1], "height": image.shape[0],
           "true_pct": round(100 * float(truth.mean()), 4), "pred_pct": round(100 * float(mask.mean()), 4),
           "scale": seen_scale, **{k: round(v, 6) for k, v in counts.scores().items()},
           "tp": counts.tp, "fp": counts.fp, "fn": counts.fn}
    return {"counts": counts, "pos": np.bincount(idx[truth], minlength=BINS),
            "neg": np.bincount(idx[~truth], minlength=BINS), "row": row,
            "mask_png": encode_png(mask) if save_mask else None}


def source_counts(rows: Sequence[dict], ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Per-image rows (``id``, ``tp``, ``fp``, ``fn``; as stored or as read back from CSV) summed per
    source photo (:func:`unet.data.source_of`: a wall's patches together): the sources, sorted,
    and their (tp, fp, fn) rows. ``ids``: only these photos."""
    keep = None if ids is None else set(ids)
    sums: dict[str, np.ndarray] = {}
    for r in rows:
        if keep is None or r["id"] in keep:
            source = source_of(r["id"])
            sums[source] = sums.get(source, 0) + np.array([float(r["tp"]), float(r["fp"]), float(r["fn"])])
    names = sorted(sums)
    return names, np.array([sums[n] for n in names]).reshape(-1, 3)


def counts_at(hists: Sequence[tuple[str, np.ndarray, np.ndarray]], index: int) -> list[dict]:
    """Each photo's pixel counts at the sweep's threshold ``index`` (probability >= index / BINS),
    from :func:`evaluate`'s ``image_hists``: rows for :func:`source_counts`."""
    return [{"id": sid, "tp": int(pos[index:].sum()), "fp": int(neg[index:].sum()), "fn": int(pos[:index].sum())}
            for sid, pos, neg in hists]


def compare_rows(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> dict | None:
    """Model a's F1 minus model b's on the photos both were scored on, with its interval and the
    share of resamples where a is ahead (:func:`unet.metrics.f1_difference`), over their source
    photos; None with fewer than :data:`unet.metrics.MIN_GROUPS` sources in common."""
    common = {r["id"] for r in rows_a} & {r["id"] for r in rows_b}
    names, a = source_counts(rows_a, common)
    _, b = source_counts(rows_b, common)
    if len(names) < MIN_GROUPS:
        return None
    return {**f1_difference(a, b), "sources": len(names), "photos": len(common)}


def _local_scores(pred, samples, t, flips, scale, save_masks, progress):
    for s in progress(samples) if progress else samples:
        yield score_sample(pred, s, t, flips, scale, save_masks)


def read_results(out_dir: str | Path) -> dict | None:
    """A stored evaluation: metrics dict plus ``per_image`` and ``pr_curve`` row lists."""
    out = Path(out_dir)
    result = read_json(out / "metrics.json")
    if not isinstance(result, dict):
        return None
    for name in ("per_image", "pr_curve"):
        try:
            with open(out / f"{name}.csv", newline="") as f:
                result[name] = list(csv.DictReader(f))
        except OSError:
            result[name] = []
    return result


def results_dir(model_path: str | Path, data_dir: str | Path, runs_dir: str | Path) -> Path:
    """Where the evaluation of a model on a split is stored.

    A run's model keeps its results in its run folder (``<run>/eval/<split key>``);
    any other model file (the bundled default) under ``<runs_dir>/_models/``.
    """
    model_path = Path(model_path).resolve()
    if (model_path.parent / "config.json").is_file() and (model_path.parent / "status.json").is_file():
        return model_path.parent / "eval" / eval_key(data_dir)
    digest = hashlib.sha1(str(model_path).encode()).hexdigest()[:8]
    return Path(runs_dir) / "_models" / f"{model_path.stem}-{digest}" / "eval" / eval_key(data_dir)


def _folder_stamp(folder: str | Path) -> list:
    """Count, total size and newest modification time of the files under ``folder``."""
    n = size = 0
    newest = 0.0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime)
    return [n, size, newest]


def result_key(model_path: str | Path, data_dir: str | Path, threshold: float | None = None) -> str:
    """What stored results depend on: the model file, its card (threshold, scale), a threshold
    given instead of the card's, and the split's files. Any change gives another key."""
    from .damage_model import ModelCard
    from .model import ModelError

    try:
        card = ModelCard.read(model_path)
    except ModelError:
        card = None
    path = Path(model_path)
    parts = {"model": [path.stat().st_mtime, path.stat().st_size], "card": card.to_dict() if card else None,
             "threshold": threshold, "data": _folder_stamp(data_dir), "format": RESULTS_FORMAT}
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stored_results(model_path: str | Path, data_dir: str | Path, runs_dir: str | Path) -> dict | None:
    """Stored results for this model file and split at the model's own settings, if still current:
    the same model file, card and split files (see :func:`result_key`)."""
    result = read_results(results_dir(model_path, data_dir, runs_dir))
    if result is None:
        return None
    if result.get("key") != result_key(model_path, data_dir):
        return None  # the model, its card, or the split changed since, or other settings: evaluate again
    return result


def evaluate_and_store(model, model_path: str | Path, data_dir: str | Path, runs_dir: str | Path,
                       threshold: float | None = None, progress=None,
                       samples: Sequence[Sample] | None = None, problems: Sequence[Problem] = ()) -> dict:
    """Evaluate on a split folder and store the results where :func:`stored_results` finds them.

    ``samples`` (with their scan ``problems``) spare a second scan when the caller has them.
    """
    if samples is None:
        samples, problems = eval_samples(data_dir)
    out = results_dir(model_path, data_dir, runs_dir)
    return evaluate(model, samples, threshold=threshold, out_dir=out, problems=problems, progress=progress,
                    meta={"data": str(Path(data_dir).resolve()), "model": str(model_path),
                          "key": result_key(model_path, data_dir, threshold)})


def calibrate(model, splits: Sequence[str | Path], progress=None, scales: Sequence[float] | None = None,
              fold: tuple[int, int] | None = None) -> dict:
    """The threshold (and, given ``scales``, the resize factor) that maximise the mean F1
    over several validation splits.

    Each split counts equally (a small dataset is not outvoted by a large one). Each
    candidate scale costs one pass over the splits; the threshold comes from the same
    pass (a sweep of 1000 thresholds), so it is chosen jointly with the scale.

    Returns:
        ``threshold``, ``scale``, ``mean_f1`` and, per split, its F1 at that threshold (with its
        90% interval over the split's source photos, ``f1_interval``), its own best, and
        ``images``: each photo's pixel counts at that threshold (rows for :func:`source_counts`);
        with several scales also ``scales``: each one's best threshold and mean F1. With ``fold`` (k, K), each split is fold k of that dataset's training photos
        (:func:`eval_samples`), and the result says so (``fold``).
    """
    samples = {}
    for split in splits:
        found, problems = eval_samples(split, fold)
        if not found:
            raise UnetError(f"{split}: no usable image/mask pairs")
        samples[str(split)] = (found, problems)
    result = calibrate_samples(model, samples, progress=progress, scales=scales)
    if fold is not None:
        result["fold"] = f"{fold[0]}/{fold[1]}"
    return result


def calibrate_samples(model, samples: dict[str, tuple[Sequence[Sample], Sequence[Problem]]], progress=None,
                      scales: Sequence[float] | None = None) -> dict:
    """:func:`calibrate` on groups of samples already found: ``{name: (samples, problems)}``."""
    from .damage_model import DamageModel
    from .model import check_scale

    model = DamageModel.of(model)
    candidates = [check_scale(s) for s in (scales or [model.scale])]
    thresholds = np.arange(BINS) / BINS
    tried = {}
    for scale in dict.fromkeys(candidates):  # one model copy and graph for every candidate
        curves, per, recall_ok = [], {}, np.ones(BINS, bool)
        for split, (found, problems) in samples.items():
            r = evaluate(model, found, threshold=0.5, progress=progress, problems=problems, with_curve=True,
                         scale=scale)
            curves.append(np.asarray(r["curve"]["f1"]))
            recall_ok &= np.asarray(r["curve"]["recall"]) >= np.asarray(r["curve"]["precision"]) - RECALL_SLACK
            per[split] = {"best_threshold": r["best_threshold"], "best_f1": r["best_f1"], "n_images": r["n_images"],
                          "curve": r["curve"], "hists": r["image_hists"]}
        mean = np.mean(curves, axis=0)
        # A missed crack is worse than a false alarm: among the thresholds where every split's
        # recall is at least its precision - RECALL_SLACK, the best mean F1 (the F1 peak when none is).
        allowed = recall_ok.copy()
        allowed[0] = False
        ruled = bool(allowed.any())
        best = _plateau_middle(np.where(allowed, mean, -1.0)) if ruled else _plateau_middle(mean)
        for split, curve in zip(per, curves):
            c = per[split].pop("curve")
            per[split].update(f1_at_threshold=float(curve[best]), precision_at_threshold=float(c["precision"][best]),
                              recall_at_threshold=float(c["recall"][best]),
                              images=counts_at(per[split].pop("hists"), best))
            per[split]["f1_interval"] = f1_interval(source_counts(per[split]["images"])[1])
        tried[scale] = {"threshold": float(thresholds[best]), "scale": scale, "mean_f1": float(mean[best]),
                        "peak_f1": float(mean[_plateau_middle(mean)]),
                        "rule": f"best mean F1 with recall >= precision - {RECALL_SLACK} on every split" if ruled
                        else f"F1 peak (no threshold gives recall >= precision - {RECALL_SLACK} on every split)",
                        "splits": per}
    result = dict(max(tried.values(), key=lambda r: r["mean_f1"]))
    if len(tried) > 1:
        result["scales"] = {str(s): {"threshold": r["threshold"], "mean_f1": r["mean_f1"]} for s, r in tried.items()}
    return result

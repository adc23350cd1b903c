"""Survey-scale inference and evaluation on a Ray cluster (``predict --ray``, ``evaluate --ray``).

The photos go through Ray Data: a dataset of (index, path) rows is mapped, a batch at a
time, by a pool of actors that each load the model once (one GPU per actor when the
cluster has GPUs, else CPUs) and return each photo's outputs as bytes. The driver (this
process) writes them with the code the single-process path uses, so the files and
``results.csv`` are the same, byte for byte, and a photo retried after its worker died is
written once: a dead actor's batch is given to a new actor (Ray Data restarts actors and
retries their tasks), and only a finished batch comes back to be written.

What the cluster needs: this package and its requirements on every node (or let
``runtime_env`` ship the package: it is sent with the job), and the photos at the same
path on every node (a shared file system). The model travels through Ray's object store;
the outputs come back to the driver. docs/scale.md says how to run it, what it costs and
where it stops scaling.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError, UnetError

PACKAGE_DIR = Path(__file__).resolve().parent


def connect(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Join a Ray cluster, or start one on this machine; returns its resources.

    ``address``: ``"auto"`` (the cluster ``ray start`` made on this machine), ``host:port`` or
    ``ray://host:10001``; None or ``"local"`` starts a private one here with ``num_cpus`` (default
    all). Already connected: nothing changes. The package travels with the job (runtime_env),
    so the cluster's nodes need its requirements but not this checkout.
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is in requirements.txt
        raise ConfigError("Ray is not installed: pip install -r requirements.txt") from None
    if not ray.is_initialized():
        runtime_env = {"py_modules": [str(PACKAGE_DIR)],
                       "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
        kwargs = {"runtime_env": runtime_env, "include_dashboard": False, "log_to_driver": False,
                  "logging_level": logging.ERROR}
        try:
            if address in (None, "", "local"):
                ray.init(num_cpus=num_cpus, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise UnetError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    for name in ("ray", "ray.data"):  # the driver says what it does itself, as the single-process path
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows its own progress, as the single-process path does
        ctx.print_on_execution_start = False
    except Exception:
        pass
    return dict(ray.cluster_resources())


def _workers(resources: dict, workers: int | None, cpus_per_worker: float | None) -> tuple[int, dict]:
    """How many actors and what each takes: one per GPU when the cluster has GPUs, else one per
    ``cpus_per_worker`` CPUs (default 1)."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1, "num_cpus": cpus_per_worker or 1}
    cpus = cpus_per_worker or 1
    n = workers or max(1, int(resources.get("CPU", 1) // cpus))
    return n, {"num_cpus": cpus}


class _ModelActor:
    """Loads the model once from the bytes in the object store (so nodes need no copy of it)."""

    def __init__(self, model_blob: list, threads: int):
        import ray

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        from .damage_model import DamageModel

        blob = ray.get(model_blob[0])  # a list: the reference is borrowed, not an argument Ray must keep
        with tempfile.TemporaryDirectory(prefix="unet-model-") as folder:  # gone once the model is in memory
            path = Path(folder) / "model.keras"
            path.write_bytes(blob["keras"])
            if blob.get("card") is not None:
                path.with_suffix(".json").write_bytes(blob["card"])
            self.model = DamageModel.load(path, precision=blob.get("precision"))
            self.model.predictor  # built now, while the file is there


def _fault_point() -> None:
    """Fault injection for tests and drills: with ``UNET_RAY_FAULT`` naming a file that does not
    exist yet, the first worker to start its second batch creates it and dies at once, as a
    killed node would (set it before the cluster starts: workers inherit it)."""
    marker = os.environ.get("UNET_RAY_FAULT")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


class _Segmenter(_ModelActor):
    """One actor of the pool: segments a batch of photos, returns each one's outputs as bytes."""

    def __init__(self, model_blob, threads: int, options: dict):
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(model_blob, threads)
        self.options = options
        self.calls = 0
        # Decoding the next photos and encoding the last ones' PNGs overlap the model, as in
        # the single-process pipeline (PIL and zlib release the GIL): a thread per CPU the worker
        # holds, so workers sharing a node do not take each other's cores.
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads or 2), thread_name_prefix="unet-io")

    def __call__(self, batch: dict) -> dict:
        from .model import check_scale
        from .predict import Segmentation, _prefetched, read_photo, render_outputs

        o = self.options
        self.calls += 1
        if self.calls == 2:
            _fault_point()  # a worker dying mid-survey, after some photos are done
        dm = self.model
        cut = dm.predictor.default_threshold if o["threshold"] is None else float(o["threshold"])
        scale_setting = dm.card.scale if o["scale"] is None else check_scale(o["scale"])
        names = [str(n) for n in batch["name"]]
        errors = [""] * len(names)
        fed = []

        def photos():
            for k, (image, error) in enumerate(_prefetched(self.pool, read_photo, map(Path, batch["path"]), 4)):
                errors[k] = error
                if image is not None:
                    fed.append((k, image))
                    yield image

        rendered = {}
        for prob, seen_scale in dm.predictor.scaled_maps(photos(), o["flips"], o["scale"]):
            k, image = fed.pop(0)
            seg = Segmentation.from_probability(prob, cut, seen_scale)
            rendered[k] = self.pool.submit(render_outputs, names[k], image, seg, scale_setting, o["measure"],
                                           o["mm_per_px"])
        out = {"i": [int(i) for i in batch["i"]], "error": errors, "changes": [], "files": []}
        for k in range(len(names)):
            if k in rendered:
                outputs, changes, _ = rendered[k].result()
                out["changes"].append(json.dumps(changes))
                out["files"].append(_pack(outputs))
            else:
                out["changes"].append("{}")
                out["files"].append(b"")
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _pack(outputs) -> bytes:
    """A worker's result for one photo ({column: (file name, bytes)}, or a sample's scores) as one
    bytes value (Arrow columns hold no nested tuples or arrays)."""
    import pickle

    return pickle.dumps(outputs, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> dict:
    import pickle

    return pickle.loads(data) if data else {}


def _mapped(items: list[dict], actor: type, options: dict, model_ref, workers: int, per_actor: dict,
            batch_size: int):
    """The rows ``actor`` returns for ``items``, streamed as batches finish: Ray Data over a pool
    of at most ``workers`` actors, each holding ``per_actor`` resources."""
    import ray

    blocks = max(1, -(-len(items) // batch_size))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(actor, fn_constructor_kwargs={
        "model_blob": [model_ref], "threads": 0 if "num_gpus" in per_actor else int(per_actor["num_cpus"]),
        "options": options}, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        batch_format="numpy", **per_actor)
    return ds.iter_rows()


def _model_blob(model) -> tuple[dict, object]:
    """The model file and its card as bytes, and the loaded model (for its defaults here).
    ``model``: a :class:`~unet.DamageModel` loaded from a file, a path, or None (the bundled one).
    A model loaded with a precision named (or ``UNET_PRECISION`` set here) travels with it: every
    worker predicts in it, as this process would. Otherwise each worker picks its own by its
    hardware (bfloat16 where the CPU has native bfloat16), so a mixed cluster's outputs can
    differ from node to node in the last digits."""
    from .damage_model import DamageModel, ModelCard
    from .predict import named_precision

    dm = model if isinstance(model, DamageModel) else DamageModel.load(model)
    if dm.path is None:
        raise ConfigError("a model to run on a cluster must come from a .keras file (save it first)")
    path = Path(dm.path)
    card = ModelCard.path_for(path)
    return {"keras": path.read_bytes(), "card": card.read_bytes() if card.is_file() else None,
            "precision": dm.precision or named_precision()}, dm


def predict_files_ray(
    model,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    address: str | None = None,
    threshold: float | None = None,
    flips: bool = False,
    scale: float | None = None,
    measure: bool = False,
    mm_per_px: float | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    batch_size: int = 8,
    num_cpus: int | None = None,
) -> list[dict]:
    """:func:`unet.predict.predict_files` on a Ray cluster: the same files and ``results.csv``.

    Args:
        model: the model file (None: the bundled default), or a :class:`~unet.DamageModel` loaded
            from one; the file is sent to the workers, with the precision it was loaded in.
        address: the cluster (see :func:`connect`); None starts one on this machine.
        workers: actors in the pool (default: one per GPU, else one per ``cpus_per_worker`` CPUs).
        batch_size: photos per task (a dead worker's batch is done again elsewhere).
        num_cpus: CPUs of a cluster started here (default: all).
        The rest as :func:`unet.predict.predict_files`.

    Returns:
        One row per input, as :func:`unet.predict.predict_files`.
    """
    import ray

    from .model import check_scale
    from .predict import PhotoJob, _Counted

    if threshold is not None and not 0 < float(threshold) < 1:
        raise ConfigError(f"threshold must be between 0 and 1 (got {threshold})")
    if scale is not None:
        check_scale(scale)
    job = PhotoJob(inputs, out_dir, measure=measure, mm_per_px=mm_per_px)
    todo = []
    for i, (path, name) in enumerate(job.files):
        clash = job.clash(i)
        if clash:
            job.rows[i]["error"] = clash
        else:
            todo.append({"i": i, "path": str(path), "name": name})
    blob, _ = _model_blob(model)
    resources = connect(address, num_cpus)
    n, per_actor = _workers(resources, workers, cpus_per_worker)
    model_ref = ray.put(blob)  # held here while the job runs: a restarted actor fetches it again
    options = {"threshold": threshold, "flips": bool(flips), "scale": scale, "measure": bool(measure),
               "mm_per_px": job.mm_per_px}

    def finished():
        if not todo:
            return
        for row in _mapped(todo, _Segmenter, options, model_ref, n, per_actor, batch_size):
            i = int(row["i"])
            if row["error"]:
                job.rows[i]["error"] = str(row["error"])
            else:
                job.write(_unpack(row["files"]))
                job.rows[i].update(json.loads(row["changes"]))
            yield i

    job.run(_Counted(finished(), len(todo)), progress)
    return job.rows


class _Scorer(_ModelActor):
    """One actor of the pool: scores a batch of samples against their true masks."""

    def __init__(self, model_blob, threads: int, options: dict):
        super().__init__(model_blob, threads)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        from .data import Sample
        from .evaluate import score_sample

        o = self.options
        out = {"i": [], "result": []}
        for i, sample in zip(batch["i"], batch["sample"]):
            s = Sample(**json.loads(sample))
            s = Sample(s.id, Path(s.image), tuple(Path(m) for m in s.masks), s.split)
            out["i"].append(int(i))
            out["result"].append(_pack(score_sample(self.model.predictor, s, o["threshold"], o["flips"],
                                                      o["scale"], o["save_masks"])))
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def evaluate_ray(model, samples, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: float | None = None, batch_size: int = 8, num_cpus: int | None = None,
                 **evaluate_kwargs) -> dict:
    """:func:`unet.evaluate.evaluate` with the photos scored on a Ray cluster: the same totals,
    sweep and files (per-sample scores are summed here, in the samples' order)."""
    import ray

    from .evaluate import evaluate
    from .predict import _Counted

    blob, dm = _model_blob(model)
    resources = connect(address, num_cpus)
    n, per_actor = _workers(resources, workers, cpus_per_worker)
    model_ref = ray.put(blob)  # held here while the job runs: a restarted actor fetches it again

    def scores_of(pred, samples, t, flips, scale, save_masks, progress):
        items = [{"i": i, "sample": json.dumps({"id": s.id, "image": str(s.image),
                                                "masks": [str(m) for m in s.masks], "split": s.split})}
                 for i, s in enumerate(samples)]
        if not items:
            return
        options = {"threshold": t, "flips": flips, "scale": scale, "save_masks": save_masks}
        done: dict[int, object] = {}
        next_i = 0
        stream = (done.update({int(r["i"]): _unpack(r["result"])})
                  for r in _mapped(items, _Scorer, options, model_ref, n, per_actor, batch_size))
        for _ in progress(_Counted(stream, len(items))) if progress else stream:
            while next_i in done:  # in the samples' order, as the single-process path
                yield done.pop(next_i)
                next_i += 1
        while next_i in done:
            yield done.pop(next_i)
            next_i += 1

    return evaluate(dm, samples, scorer=scores_of, **evaluate_kwargs)

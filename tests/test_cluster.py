"""Batch inference and evaluation on a real local Ray cluster (two CPUs, two model workers)."""

import csv
import filecmp
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster on this machine, started for these tests and stopped after them. Workers
    inherit UNET_RAY_FAULT: a test that removes its marker file has a worker die mid-job."""
    from unet.cluster import connect

    marker = tmp_path_factory.mktemp("fault") / "died"
    marker.touch()  # present: no worker dies
    os.environ["UNET_RAY_FAULT"] = str(marker)
    try:
        resources = connect(None, num_cpus=2)
        yield {"resources": resources, "marker": marker}
    finally:
        ray.shutdown()
        os.environ.pop("UNET_RAY_FAULT", None)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_model):
    from unet.damage_model import DamageModel

    return DamageModel(tiny_model, precision="float32").save(tmp_path_factory.mktemp("model") / "tiny.keras",
                                                             threshold=0.5)


def _photos(folder: Path, n: int) -> Path:
    from unet.synthetic import damaged_wall

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(damaged_wall(i, 120 + 16 * (i % 3), 160)[0]).save(folder / f"p{i:02d}.jpg", quality=90)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _same_outputs(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    return [n for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]


def test_ray_predict_writes_the_same_bytes_as_the_single_process_path(cluster, model_file, tmp_path):
    from unet.cluster import predict_files_ray
    from unet.damage_model import DamageModel
    from unet.predict import predict_files

    src = _photos(tmp_path / "in", 7)
    dm = DamageModel.load(model_file, precision="float32")  # the workers predict in it too, whatever their CPU
    local = predict_files(dm, [src], tmp_path / "one", measure=True)
    seen = []

    def progress(items):
        for item in items:
            seen.append(item)
            yield item

    rows = predict_files_ray(dm, [src], tmp_path / "ray", measure=True, progress=progress, batch_size=2)
    assert rows == local and len(rows) == 8
    assert _same_outputs(tmp_path / "one", tmp_path / "ray") == []  # results.csv included
    broken = rows[0]
    assert broken["file"].endswith("broken.png") and broken["error"] == local[0]["error"] != ""
    assert sorted(seen) == list(range(8))  # progress as each photo finishes (the broken one on a worker too)


def test_a_worker_that_dies_costs_no_photo(cluster, model_file, tmp_path):
    from unet.cluster import predict_files_ray
    from unet.damage_model import DamageModel
    from unet.predict import predict_files

    src = _photos(tmp_path / "in", 10)
    dm = DamageModel.load(model_file, precision="float32")
    local = predict_files(dm, [src], tmp_path / "one")
    cluster["marker"].unlink()  # the first worker to start its second batch dies
    try:
        rows = predict_files_ray(dm, [src], tmp_path / "ray", batch_size=2)
    finally:
        died = cluster["marker"].exists()
        cluster["marker"].touch()
    assert died, "no worker died: the test did not test anything"
    assert rows == local
    assert _same_outputs(tmp_path / "one", tmp_path / "ray") == []
    written = list(csv.DictReader(open(tmp_path / "ray" / "results.csv")))
    assert len(written) == 11 and sum(1 for r in written if not r["error"]) == 10


def test_ray_evaluate_gives_the_same_totals(cluster, model_file, tmp_path, sample_dir):
    import shutil

    from unet.cluster import evaluate_ray
    from unet.damage_model import DamageModel
    from unet.evaluate import eval_samples, evaluate

    split = tmp_path / "split"
    shutil.copytree(sample_dir / "train", split)
    samples, problems = eval_samples(split)
    first = samples[0].image.parent.parent
    for m in (first / "masks").iterdir():  # broken after the scan: found by the worker that reads it
        m.write_bytes(b"not an image")
    dm = DamageModel.load(model_file, precision="float32")
    one = evaluate(dm, samples, out_dir=tmp_path / "one", problems=problems)
    many = evaluate_ray(dm, samples, out_dir=tmp_path / "ray", problems=problems, batch_size=2)
    assert one["n_images"] == many["n_images"] == len(samples) - 1
    assert one["pixels"] == many["pixels"] and one["best_threshold"] == many["best_threshold"]
    assert {k: one[k] for k in ("iou", "dice", "precision", "recall", "problems")} == \
        {k: many[k] for k in ("iou", "dice", "precision", "recall", "problems")}
    assert any(first.name in p for p in many["problems"])
    assert _same_outputs(tmp_path / "one" / "pred", tmp_path / "ray" / "pred") == []
    for name in ("per_image.csv", "pr_curve.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()


def test_cli_predict_with_ray(cluster, model_file, tmp_path, capsys):
    from unet.cli import main

    src = _photos(tmp_path / "in", 3)
    assert main(["predict", str(src), "--out", str(tmp_path / "out"), "--model", str(model_file), "--ray"]) == 0
    out = capsys.readouterr()
    assert "3 segmented, 1 failed" in out.out and "broken.png: error:" in out.out
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 3
    with pytest.raises(SystemExit):
        main(["predict", str(src), "--out", str(tmp_path / "o2"), "--ray", "--workers", "0"])
    assert "--workers: a whole number, 1 or more (got '0')" in capsys.readouterr().err

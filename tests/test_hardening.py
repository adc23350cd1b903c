"""Faults and safety: what happens when the disk fills, the app restarts, names are hostile."""

import json
import os
import resource
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, fresh_pages
from unet.runs import TrainConfig, create_run, wait


def test_exif_rotated_photo_gives_mask_in_displayed_orientation(tiny_model, tmp_path):
    from unet.predict import predict_files

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 90, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated: portrait
    img.save(tmp_path / "phone.jpg", exif=exif)
    predict_files(tiny_model, [tmp_path / "phone.jpg"], tmp_path / "out")
    assert np.asarray(Image.open(tmp_path / "out" / "phone_mask.png")).shape == (90, 40)


def _limit_file_size():
    # Files may not grow past 64 KB: checkpoints cannot be written (a full disk, in effect).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_full_disk_fails_the_run_cleanly(tmp_path, sample_dir):
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4), tmp_path)
    proc = subprocess.run([sys.executable, "-m", "unet", "runs", "start", run.id, "--runs-dir", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_limit_file_size,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status = json.loads(run.status_path.read_text())  # still whole, valid JSON
    assert status["state"] == "failed"
    assert "disk is full" in status["error"] and "last.keras" in status["error"]
    json.loads(run.config_path.read_text())
    assert not run.last_checkpoint.exists()  # no half-written checkpoint
    assert not list(run.dir.rglob("*.tmp*"))  # no temporary leftovers
    assert "disk is full" in proc.stderr


def _respect_permissions():
    """In the training process: file permissions apply, even to root (as they would to a user)."""
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: gone after exec
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "cannot drop capabilities")


def _start_run_respecting_permissions(run, runs_dir):
    try:
        return subprocess.run([sys.executable, "-m", "unet", "runs", "start", run.id, "--runs-dir", str(runs_dir)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_respect_permissions,
                              capture_output=True, text=True, timeout=180)
    except subprocess.SubprocessError as exc:
        if "preexec_fn" in str(exc):
            pytest.skip(f"cannot make file permissions apply to the training process here: {exc}")
        raise


def test_checkpoint_folder_unwritable_fails_the_run_with_a_clear_status(tmp_path, sample_dir):
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4), tmp_path)
    ckpt = run.last_checkpoint.parent
    ckpt.mkdir(parents=True, exist_ok=True)
    ckpt.chmod(0o555)  # e.g. a folder whose permissions changed under the run
    try:
        proc = _start_run_respecting_permissions(run, tmp_path)
    finally:
        ckpt.chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "failed"
    assert "cannot be written" in status["error"] and "last.keras" in status["error"], status["error"]
    assert "Permission denied" in status["error"]
    assert not list(ckpt.iterdir())  # nothing half-written


def test_run_folder_unwritable_exits_with_a_message_naming_it(tmp_path, sample_dir):
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4), tmp_path)
    before = {p.name: p.read_bytes() for p in run.dir.iterdir() if p.is_file()}
    run.dir.chmod(0o555)
    for p in run.dir.iterdir():
        p.chmod(0o444)
    try:
        proc = _start_run_respecting_permissions(run, tmp_path)
    finally:
        run.dir.chmod(0o755)
        for p in run.dir.iterdir():
            p.chmod(0o644)
    assert proc.returncode != 0
    assert str(run.dir) in proc.stderr and "Permission denied" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("its status could not be recorded (see the message above)")
    assert {p.name: p.read_bytes() for p in run.dir.iterdir() if p.is_file()} == before  # nothing lost or changed


def test_run_outlives_the_process_that_started_it(tmp_path, sample_dir):
    """The app (here: a short-lived parent process) goes away; the run goes on; a new app re-attaches."""
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=3, batch=4), tmp_path)
    code = ("import sys; from unet.runs import get_run, launch; "
            f"launch(get_run({run.id!r}, {str(tmp_path)!r})); sys.exit(0)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True, timeout=60)
    assert run.status()["state"] in ("queued", "running")
    assert wait(run, timeout=180)["state"] == "completed", run.log_tail()

    from streamlit.testing.v1 import AppTest

    os.environ["UNET_RUNS_DIR"] = str(tmp_path)
    try:
        fresh_pages()
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
        at.run()
        at.switch_page("pages/train.py").run()
        assert not at.exception
        assert at.selectbox(key="train_run").value == run.id
        assert any("completed" in m.value for m in at.markdown)
    finally:
        del os.environ["UNET_RUNS_DIR"]


def test_hostile_upload_names_are_escaped_and_never_paths(tmp_path, monkeypatch, trained_tiny):
    import shutil

    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    shutil.copytree(trained_tiny.dir, runs / "r")
    monkeypatch.setenv("UNET_RUNS_DIR", str(runs))
    monkeypatch.setenv("UNET_DATA_DIR", str(tmp_path / "data"))
    fresh_pages()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/detect.py").run()
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, "PNG")
    evil = "../../<img src=x onerror=alert(1)>.png"
    at.file_uploader(key="detect_upload").set_value([(evil, buf.getvalue(), "image/png"),
                                                     ("../<b>x</b>.png", b"junk", "image/png")]).run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown) + " ".join(e.value for e in at.error)
    import re

    assert re.search(r"(?<!\\)<", shown) is None  # every '<' is escaped: shown as text, never markup
    assert "\\<img src=x onerror=alert\\(1\\)\\>\\.png" in shown and "../" not in shown
    assert not (tmp_path / "img src=x onerror=alert(1)>.png").exists()
    from pages.common import safe_file_name

    assert safe_file_name(evil) == "img_src_x_onerror_alert_1_.png"
    assert safe_file_name("../../..") == "photo"


def test_dataset_paths_stay_inside_the_allowed_folders(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "walls").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (data / "link").symlink_to(outside)
    monkeypatch.setenv("UNET_DATA_DIR", str(data))
    monkeypatch.delenv("UNET_DATA_ROOTS", raising=False)
    fresh_pages()
    from pages.common import resolve_dataset_path

    assert resolve_dataset_path("walls") == (data / "walls").resolve()
    assert resolve_dataset_path(str(data / "walls")) == (data / "walls").resolve()
    for bad in ["../secret", str(outside), "link", "/etc", "walls/../../secret"]:
        with pytest.raises(ValueError, match="must be inside"):
            resolve_dataset_path(bad)
    monkeypatch.setenv("UNET_DATA_ROOTS", str(outside))
    assert resolve_dataset_path(str(outside)) == outside.resolve()
    with pytest.raises(ValueError, match="not a usable folder path"):  # ENAMETOOLONG, said in one line
        resolve_dataset_path("a" * 5000)


def test_server_settings_are_deliberate():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "localhost"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert 1 <= cfg["server"]["maxUploadSize"] <= 200
    assert cfg["client"]["showErrorDetails"] == "none"


def _cli_respecting_permissions(*args, preexec=None):
    try:
        return subprocess.run([sys.executable, "-m", "unet", *args], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=preexec or _respect_permissions,
                              capture_output=True, text=True, timeout=180)
    except subprocess.SubprocessError as exc:
        if "preexec_fn" in str(exc):
            pytest.skip(f"cannot make file permissions apply to the process here: {exc}")
        raise


@pytest.fixture()
def tiny_model_file(tmp_path):
    from unet.model import build_unet, save_model

    return save_model(build_unet("tiny", 64), tmp_path / "tiny.keras")


def _one_line(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_an_unreadable_photo_or_mask_is_named_and_the_rest_still_run(tmp_path, tiny_model_file, sample_dir):
    import csv
    import shutil

    photos = tmp_path / "photos"
    for i in range(3):
        photos.mkdir(exist_ok=True)
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    (photos / "1.png").chmod(0o000)
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    mask = sorted((data / "test").rglob("masks/*.png"))[0]
    mask.chmod(0o000)
    try:
        proc = _cli_respecting_permissions("predict", "--model", str(tiny_model_file), "--out", str(tmp_path / "o"),
                                           str(photos))
        evaluated = _cli_respecting_permissions("evaluate", "--model", str(tiny_model_file), "--data",
                                                str(data / "test"), "--json")
    finally:
        (photos / "1.png").chmod(0o644)
        mask.chmod(0o644)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    assert [r["error"] for r in rows] == ["", "cannot be read (Permission denied)", ""]
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n_images"] == 1 and any("Permission denied" in p and mask.name in p for p in result["problems"])


def test_training_skips_an_unreadable_mask_and_a_scan_an_unreadable_folder(tmp_path, sample_dir):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    mask = sorted((data / "train").rglob("masks/*.png"))[0]
    sample = sorted(p for p in (data / "val").iterdir() if p.is_dir())[0]
    run = create_run(TrainConfig(data=str(data), preset="tiny", size=64, epochs=1, batch=4), tmp_path / "runs")
    mask.chmod(0o000)
    try:
        proc = _start_run_respecting_permissions(run, tmp_path / "runs")
    finally:
        mask.chmod(0o644)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run.status()["state"] == "completed" and run.status()["data_problems"] >= 1
    assert f"{mask.name}: cannot be read (Permission denied)" in proc.stdout
    # a sample folder that cannot be read (or vanishes) during a scan is a problem, not a crash
    sample.chmod(0o000)
    try:
        scanned = _cli_respecting_permissions("evaluate", "--model", str(run.model_path), "--data", str(data / "val"),
                                              "--json")
    finally:
        sample.chmod(0o755)
    assert scanned.returncode == 0, scanned.stderr
    result = json.loads(scanned.stdout)
    assert result["n_images"] == 1 and any(p.startswith(f"{sample.name}: sample folder has no image")
                                           for p in result["problems"])


def test_a_read_only_output_folder_is_one_line_with_exit_code_2(tmp_path, tiny_model_file):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "p.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = _cli_respecting_permissions("predict", "--model", str(tiny_model_file), "--out", str(locked),
                                           str(tmp_path / "p.png"))
    finally:
        locked.chmod(0o755)
    _one_line(proc)
    assert "locked: the output folder cannot be written" in proc.stderr
    (tmp_path / "file").write_text("x")
    proc = _cli_respecting_permissions("predict", "--model", str(tiny_model_file), "--out", str(tmp_path / "file"),
                                       str(tmp_path / "p.png"))
    _one_line(proc)
    assert "the output folder is a file" in proc.stderr


def test_a_full_disk_during_predict_stops_cleanly_with_results_csv(tmp_path, tiny_model_file):
    import csv

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):  # noise: PNGs that do not compress, larger than the limit below
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
            photos / f"{i}.png")
    out = tmp_path / "out"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    proc = _cli_respecting_permissions("predict", "--model", str(tiny_model_file), "--out", str(out), str(photos),
                                       preexec=small_files)
    _one_line(proc)
    assert "cannot write the results" in proc.stderr and "results.csv lists what was done" in proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3 and all(r["error"].startswith("not processed (writing the results failed") for r in rows)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # nothing half-written left behind

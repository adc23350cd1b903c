"""Shared fixtures: generated data and tiny real models (no mocks, no shared/ needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The JAX runs here (and the processes they start) train tiny networks for a few steps: XLA's
# CPU backend optimising them took longer than the training (41 s -> 17 s for a 2-epoch run).
# Tests check behaviour, not speed; the product compiles at XLA's defaults.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pytest.ini): one worker per core, at most 4. Each worker holds TensorFlow
    and starts training processes, servers and a browser of its own; files stay whole on
    one worker (``--dist loadfile``), so module fixtures are made once."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in the per-sample layout (train/val/test)."""
    from unet.synthetic import write_sample_dataset

    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root, count=12, seed=3, size=(96, 128))
    return root


@pytest.fixture(scope="session")
def tiny_model():
    import keras

    from unet.model import build_unet

    keras.utils.set_random_seed(0)  # the same weights in every session: tests on them cannot flake
    return build_unet("tiny", None)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, sample_dir):
    """A finished tiny training run (real process, real files)."""
    from unet.runs import TrainConfig, create_run
    from unet.train import execute

    runs = tmp_path_factory.mktemp("runs")
    run = create_run(TrainConfig(data=str(sample_dir), preset="tiny", size=64, epochs=2, batch=4), runs)
    assert execute(run) == "completed", run.log_tail()
    return run


def run_cli(*args: str, timeout: float = 240, cwd: Path | None = None, env: dict | None = None):
    """``python -m unet ARGS`` as a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "unet", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=full_env)


def cli_here(capsys, *args: str):
    """``python -m unet ARGS`` in this process (the same parser, commands and error handling,
    without a new interpreter importing TensorFlow: 7 s a call here), for tests of what a
    command does; :func:`run_cli` stays for what needs a process of its own (exit codes
    from a shell, a pipe, signals, a training). Returns (returncode, stdout, stderr)."""
    from types import SimpleNamespace

    from unet.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random photo-like image: colours varying over about 8 pixels, smoothly and at sharp edges
    (a smooth field alone reads as out of focus, which the predictor sharpens), with a grain of
    4/255 (a camera's; pure per-pixel noise would read as a noisy photo, which it smooths)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((w, h), Image.BILINEAR), np.float32)
    blocks = np.asarray(coarse.resize((w, h), Image.NEAREST), np.float32)
    return np.clip((field + blocks) / 2 + rng.normal(0, 4, (h, w, 3)) + 0.5, 0, 255).astype(np.uint8)


def save_like_a_phone(image: np.ndarray, path: Path, exif=None, quality: int = 92, icc: bytes | None = None) -> Path:
    """``image`` saved as a phone saves it, by the extension: HEIC (an iPhone's default, written with
    pillow-heif, which moves an EXIF orientation into the container's rotation, where readers look
    for it) or whatever Pillow writes; ``exif`` a ``PIL.Image.Exif``, ``icc`` a colour profile."""
    from PIL import Image

    extra = {key: value for key, value in (("exif", exif.tobytes() if exif is not None else None),
                                           ("icc_profile", icc)) if value}
    if Path(path).suffix.lower() in (".heic", ".heif"):
        import pillow_heif

        pillow_heif.from_pillow(Image.fromarray(image)).save(path, quality=quality, **extra)
    else:
        Image.fromarray(image).save(path, quality=quality, **extra)
    return Path(path)


def sharp_scene(rng: np.random.Generator, h: int = 256, w: int = 256) -> np.ndarray:
    """Rectangles of random colours on grey: sharp step edges, whose blur unet.predict.blur_sigma
    reads (blurred by r px, it reads about r)."""
    img = np.full((h, w, 3), 140, np.uint8)
    for _ in range(25):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y:y + rng.integers(10, 60), x:x + rng.integers(10, 80)] = rng.integers(40, 220, 3)
    return img


def fresh_pages() -> None:
    """Forget imported page modules: pages.common reads UNET_* folders when imported."""
    for name in [m for m in sys.modules if m == "pages" or m.startswith("pages.")]:
        del sys.modules[name]


def epochs_of(run) -> list[int]:
    """The epochs a run's history.csv records."""
    return [int(r["epoch"]) for r in run.history()]


def wait_for(cond, timeout: float = 120, poll: float = 0.2) -> bool:
    """Whether ``cond()`` became true within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return False

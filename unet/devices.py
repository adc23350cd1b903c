"""Which compute devices this machine has, and preparing them for training.

``prepare`` must run before Keras is first imported in a process: hiding the GPUs
(device="cpu") only works then.
"""

from __future__ import annotations

import os
import platform


def prepare(device: str = "auto") -> None:
    """Hide GPUs for device='cpu'; quieten TensorFlow's start-up logging."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"


def backend() -> str:
    import keras

    return keras.backend.backend()


def list_devices() -> list[dict]:
    """[{'kind': 'CPU'|'GPU', 'name': ...}] for the active Keras backend."""
    name = backend()
    cpu = {"kind": "CPU", "name": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"}
    gpus: list[dict] = []
    try:
        if name == "tensorflow":
            import tensorflow as tf

            for i, d in enumerate(tf.config.list_physical_devices("GPU")):
                details = tf.config.experimental.get_device_details(d)
                gpus.append({"kind": "GPU", "name": details.get("device_name", f"GPU {i}")})
        elif name == "jax":
            import jax

            gpus = [{"kind": "GPU", "name": d.device_kind} for d in jax.devices() if d.platform == "gpu"]
        elif name == "torch":
            import torch

            gpus = [{"kind": "GPU", "name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not break the dashboard
        gpus = []
    return [cpu] + gpus


def setup_training(mixed_precision: bool) -> tuple[object | None, list[dict]]:
    """Memory growth on GPUs, the mixed-precision policy, and a multi-GPU strategy.

    Returns:
        (a ``tf.distribute.MirroredStrategy`` when TensorFlow sees several GPUs, else
        None; the devices in use).
    """
    import keras

    strategy = None
    devices = list_devices()
    gpus = [d for d in devices if d["kind"] == "GPU"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        for g in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(g, True)
            except RuntimeError:
                pass  # already initialised
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
    if mixed_precision:
        # bfloat16 on CPUs (no loss scaling needed), float16 on GPUs.
        keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    return strategy, devices


def detect_hardware() -> list[dict]:
    """CPU and NVIDIA GPUs from the operating system, without importing a framework.

    Fast enough for a page's first paint; :func:`list_devices` says what Keras itself sees.
    """
    import shutil
    import subprocess

    cpu_name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    found = [{"kind": "CPU", "name": f"{cpu_name} ({os.cpu_count()} cores)"}]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5).stdout
            for line in out.strip().splitlines():
                name, _, mem = line.partition(",")
                found.append({"kind": "GPU", "name": f"{name.strip()} ({mem.strip()})"})
        except (OSError, subprocess.SubprocessError):
            pass
    return found


def describe_environment(devices: list[dict], mixed_precision: bool) -> dict:
    """Where a run trains (written once per start to the run's ``environment.json``):
    the backend, its devices and the versions that shape the numbers."""
    import socket
    import sys

    import keras
    import numpy

    from . import __version__

    env = {"backend": backend(), "devices": [d["name"] for d in devices],
           "precision": keras.mixed_precision.global_policy().name if mixed_precision else "float32",
           "keras": keras.__version__, "numpy": numpy.__version__, "python": sys.version.split()[0],
           "unet": __version__, "host": socket.gethostname()}
    if env["backend"] in ("tensorflow", "jax", "torch"):
        module = __import__(env["backend"])
        env[env["backend"]] = getattr(module, "__version__", "?")
    return env

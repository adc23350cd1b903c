"""Which compute devices this machine has, and preparing them for training.

``prepare`` must run before Keras is first imported in a process: hiding the GPUs
(device="cpu") only works then.
"""

from __future__ import annotations

import os
import platform


def cpu_devices() -> int:
    """How many devices to split the CPU into for data-parallel training (``UNET_CPU_DEVICES``,
    default 1). Several CPU devices train exactly as several GPUs do (a replica per device,
    gradients summed): the way to test multi-device training on a machine without GPUs."""
    from .config import count_setting

    return count_setting("UNET_CPU_DEVICES", 1, "devices")


def prepare(device: str = "auto") -> None:
    """Hide GPUs for device='cpu'; split the CPU into ``UNET_CPU_DEVICES`` devices on JAX (XLA
    reads its flags once, at start); quieten TensorFlow's start-up logging."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
    n = cpu_devices()
    flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def start_multihost() -> tuple[int, int]:
    """Join a multi-host JAX job (``train --distributed``); returns (this process, processes).

    The coordinator's address, the number of processes and this one's id come from the
    environment: ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator first, host:port),
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``, or, unset, from
    the cluster as JAX finds it (SLURM, Open MPI, Kubernetes JobSet, Cloud TPU). Processes
    on CPUs exchange gradients over gloo.

    Raises:
        ConfigError: the backend is not JAX (Keras trains across hosts only on JAX).
    """
    from .errors import ConfigError

    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":
        raise ConfigError("--distributed trains on the JAX backend (the one Keras 3 runs across hosts): "
                          "set KERAS_BACKEND=jax on every process")
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # a JAX without the option: GPUs use NCCL anyway
        pass
    import keras

    env = os.environ
    addresses = env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    try:
        keras.distribution.initialize(
            job_addresses=addresses,
            num_processes=int(env["KERAS_DISTRIBUTION_NUM_PROCESSES"]) if "KERAS_DISTRIBUTION_NUM_PROCESSES" in env
            else None,
            process_id=int(env["KERAS_DISTRIBUTION_PROCESS_ID"]) if "KERAS_DISTRIBUTION_PROCESS_ID" in env else None)
    except ValueError as exc:
        raise ConfigError(f"cannot join the multi-host job: {exc}") from None
    return jax.process_index(), jax.process_count()


def process_shard() -> tuple[int, int]:
    """(this process, processes) of a multi-host job; (0, 1) in a single process."""
    if os.environ.get("KERAS_BACKEND") != "jax" or "jax" not in __import__("sys").modules:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


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


def setup_training(mixed_precision: bool) -> tuple[object | None, list[dict], dict]:
    """Memory growth on GPUs, the mixed-precision policy, and data parallelism over every
    device found: several GPUs, or the CPU split into ``UNET_CPU_DEVICES``, or (JAX) every
    device of every process of a multi-host job.

    - TensorFlow: a ``tf.distribute.MirroredStrategy`` over the GPUs (or the CPU devices);
    - JAX: ``keras.distribution.DataParallel`` over ``jax.devices()``;
    - PyTorch: one device (Keras has no multi-device training on it).

    Returns:
        (the strategy whose scope builds the model, or None; the devices; the parallelism:
        ``{"replicas": n, "how": words}``).
    """
    import keras

    strategy = None
    devices = list_devices()
    gpus = [d for d in devices if d["kind"] == "GPU"]
    parallel = {"replicas": 1, "how": "one device"}
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        for g in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(g, True)
            except RuntimeError:
                pass  # already initialised
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            parallel = {"replicas": strategy.num_replicas_in_sync,
                        "how": f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs"}
        elif not gpus and cpu_devices() > 1:
            n = cpu_devices()
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
            except RuntimeError:
                pass  # already split in this process
            names = [d.name for d in tf.config.list_logical_devices("CPU")][:n]
            strategy = tf.distribute.MirroredStrategy(names)
            parallel = {"replicas": len(names), "how": f"MirroredStrategy over {len(names)} CPU devices"}
    elif name == "jax":
        import jax

        found = jax.devices()
        if len(found) > 1:
            # Across hosts every process feeds its own shard of each batch (unet.data.PairBatcher).
            keras.distribution.set_distribution(keras.distribution.DataParallel(
                devices=found, auto_shard_dataset=jax.process_count() == 1))
            kind = "GPU" if found[0].platform == "gpu" else found[0].platform.upper()
            hosts = f" on {jax.process_count()} hosts" if jax.process_count() > 1 else ""
            parallel = {"replicas": len(found), "how": f"DataParallel over {len(found)} {kind} devices{hosts}"}
    if mixed_precision:
        # bfloat16 on CPUs (no loss scaling needed), float16 on GPUs.
        keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    return strategy, devices, parallel


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

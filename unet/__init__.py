"""unet: segment building damage (cracks, spalling) in photos with a U-Net.

The public API is imported lazily, so ``import unet`` is fast and does not start
TensorFlow; Keras is loaded when a model is first built or loaded.

Example:
    >>> import unet
    >>> model = unet.load_model()                # the bundled default model
    >>> seg = unet.segment(model, unet.read_image("wall.jpg"))
    >>> seg.mask.shape, round(seg.damaged_pct, 2)
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_API = {
    "build_unet": "model", "load_model": "model", "save_model": "model", "PRESETS": "model",
    "ModelError": "model", "model_info": "model",
    "segment": "predict", "Segmentation": "predict", "Predictor": "predict", "overlay": "predict",
    "heatmap": "predict", "predict_files": "predict",
    "read_image": "imaging", "read_mask": "imaging", "ImageError": "imaging",
    "scan_dataset": "data", "load_pair": "data",
    "evaluate": "evaluate",
    "TrainConfig": "runs", "create_run": "runs", "list_runs": "runs", "get_run": "runs",
    "write_sample_dataset": "synthetic",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unet' has no attribute {name!r}")

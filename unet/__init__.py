"""unet: segment building damage (cracks, spalling) in photos with a U-Net.

The public API is imported lazily, so ``import unet`` is fast and does not start
TensorFlow; Keras is loaded when a model is first built or loaded.

Example:
    >>> import unet
    >>> model = unet.load_model()                # a DamageModel: the bundled default model
    >>> seg = unet.segment(model, unet.read_image("wall.jpg"))   # or model.segment(...)
    >>> seg.mask.shape, round(seg.damaged_pct, 2)

Errors: everything the package refuses because of its input raises a
:class:`unet.UnetError` (one line, naming the file or value); anything else is a bug.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_API = {
    "build_unet": "model", "load_model": "model", "save_model": "model", "PRESETS": "model",
    "ModelError": "model", "model_info": "model", "DamageModel": "damage_model", "ModelCard": "damage_model",
    "UnetError": "errors", "ConfigError": "errors", "RunError": "errors", "DatasetError": "data",
    "segment": "predict", "Segmentation": "predict", "Predictor": "predict", "overlay": "predict",
    "heatmap": "predict", "predict_files": "predict",
    "read_image": "imaging", "read_mask": "imaging", "ImageError": "imaging",
    "scan_dataset": "data", "load_pair": "data",
    "evaluate": "evaluate",
    "TrainConfig": "config", "create_run": "runs", "list_runs": "runs", "get_run": "runs",
    "write_sample_dataset": "synthetic",
    "measure": "cracks", "Measurement": "cracks", "Crack": "cracks", "run_survey": "survey",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unet' has no attribute {name!r}")

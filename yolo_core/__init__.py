"""yolo_core: the YOLOv2 / YOLO9000 model library in plain PyTorch (no Ray, no MLflow, no nltk).

The names below are imported on first use, so `import yolo_core` stays cheap (no torch import).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_model": "yolo_core.models",
    "list_models": "yolo_core.models",
    "DarknetNet": "yolo_core.darknet_cfg",
    "DarknetCfgError": "yolo_core.darknet_cfg",
    "model_from_cfg": "yolo_core.darknet_cfg",
    "parse_cfg": "yolo_core.darknet_cfg",
    "load_weights": "yolo_core.weights",
    "save_weights": "yolo_core.weights",
    "WeightsError": "yolo_core.weights",
    "count_flops": "yolo_core.flops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'yolo_core' has no attribute {name!r}")

"""Local `evaluate` modules, so fine-tuning and evaluation work offline.

`evaluate.load("accuracy")` would fetch the metric's script from the Hub; `load_metric("accuracy")` loads the copy
shipped in this package instead: "accuracy" (top-1 and top-k), "mean_iou" (semantic segmentation: mean and
per-class IoU and accuracy, from maps or from per-class areas counted on the device) and "coco_map" (COCO box and
mask mAP by pycocotools)."""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
LOCAL_METRICS = ("accuracy", "mean_iou", "coco_map")


def metric_path(name: str) -> str:
    """Folder of the local `evaluate` module `name`, for `evaluate.load(metric_path(name))`."""
    if name not in LOCAL_METRICS:
        raise ValueError(f"No local metric named {name!r}. Local metrics: {', '.join(LOCAL_METRICS)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of a local metric; kept in memory by default, so concurrent processes share no cache files."""
    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["LOCAL_METRICS", "METRICS_DIR", "load_metric", "metric_path"]

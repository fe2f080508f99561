"""Task plug-ins of the fine-tuning entry point, by `--task` name."""

from __future__ import annotations

from .base import DatasetInfo, Evaluator, Task
from .image_classification import ImageClassificationTask
from .object_detection import ObjectDetectionTask
from .semantic_segmentation import SemanticSegmentationTask

TASKS: dict[str, type[Task]] = {}


def register_task(task_class: type[Task]) -> type[Task]:
    """Make `task_class` available as `--task task_class.name`."""
    TASKS[task_class.name] = task_class
    return task_class


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Available tasks: {', '.join(TASKS)}.")
    return TASKS[name]


register_task(ImageClassificationTask)
register_task(SemanticSegmentationTask)
register_task(ObjectDetectionTask)

__all__ = [
    "TASKS",
    "DatasetInfo",
    "Evaluator",
    "ImageClassificationTask",
    "ObjectDetectionTask",
    "SemanticSegmentationTask",
    "Task",
    "get_task",
    "register_task",
]

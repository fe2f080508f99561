"""Task plug-ins of the fine-tuning entry point, by `--task` name."""

from __future__ import annotations

from .base import DatasetInfo, Evaluator, Task
from .image_classification import ImageClassificationTask

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

__all__ = ["TASKS", "DatasetInfo", "Evaluator", "ImageClassificationTask", "Task", "get_task", "register_task"]

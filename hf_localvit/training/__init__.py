"""Fine-tuning DWNet (and other transformers vision models) with Hugging Face Accelerate.

`finetune.py` at the repository root calls `main(argv)`. The loop in `trainer.py` is task-agnostic; each task
(`tasks/`) supplies its dataset adapter, transforms, collate, loss and metric.
"""

from __future__ import annotations

from .errors import BadImageError, CheckpointError, DataError, FinetuneError
from .tasks import TASKS, Task, get_task, register_task
from .trainer import build_parser, main, parse_args, run

__all__ = [
    "TASKS",
    "BadImageError",
    "CheckpointError",
    "DataError",
    "FinetuneError",
    "Task",
    "build_parser",
    "get_task",
    "main",
    "parse_args",
    "register_task",
    "run",
]

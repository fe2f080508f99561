"""The task plug-in interface: everything the task-agnostic trainer needs to know about one kind of task."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator

from ..data import ExampleDataset


@dataclass
class DatasetInfo:
    """What the model card and results say about the data."""

    name: str  # Hub id, folder or description
    hub_id: str | None  # for the card's `datasets:` metadata
    kind: str  # the card's dataset type: the Hub id, "imagefolder", "save_to_disk" or a short name
    train_split: str
    train_rows: int
    validation_split: str  # name of the split evaluated on ("validation" when carved off)
    validation: str  # how the validation set was obtained
    validation_rows: int
    details: dict[str, Any] = field(default_factory=dict)


class Evaluator(ABC):
    """Accumulates gathered per-example outputs over a whole evaluation set and computes the metrics."""

    @abstractmethod
    def add(self, gathered: Any) -> None:
        """One batch of `gather_for_metrics(task.eval_outputs(...))` from all processes."""

    @abstractmethod
    def compute(self) -> dict[str, Any]:
        """Scalar metrics (logged and tracked), optionally also per-class lists (kept in the results and card)."""


class Task(ABC):
    """A task plug-in: dataset adapter, transforms, collate, loss and metric. The trainer owns the loop, the
    distribution, checkpoints, logging and saving.

    After `setup`, the task exposes `model`, `processor` (saved with the model), `train_dataset`, `eval_dataset`
    (`ExampleDataset`s) and `dataset_info`.
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    pipeline_task: ClassVar[str]
    card_tags: ClassVar[list[str]] = []

    model: torch.nn.Module
    processor: Any
    train_dataset: ExampleDataset
    eval_dataset: ExampleDataset
    dataset_info: DatasetInfo

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the task's own options."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Defaults of common options that differ for this task (e.g. its usual optimisation schedule)."""
        return {}

    @classmethod
    def demo_defaults(cls) -> dict[str, Any] | None:
        """Option defaults for a run without --dataset (the task's offline demo), or None if it has none."""
        return None

    @abstractmethod
    def setup(self, accelerator: Accelerator) -> None:
        """Load the data and the model (called on the main process first, then on the others)."""

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return torch.utils.data.default_collate(examples)

    def prepare_train_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Batch-level augmentation on the device (e.g. MixUp); runs under the step's seeded RNG."""
        return batch

    @abstractmethod
    def training_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...

    @abstractmethod
    def eval_outputs(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        """What to gather across processes for the metric: per-example tensors (first dim = batch), or a list with
        one picklable object per example (gathered with `gather_object`)."""

    @abstractmethod
    def new_evaluator(self) -> Evaluator: ...

    def hyperparameters(self) -> dict[str, Any]:
        """The task's options worth recording in the model card."""
        return {}

    def predict_examples(self, model_dir: Path, count: int) -> list[str]:
        """Lines describing predictions of `pipeline` on `count` held-out examples (for the demo)."""
        return []


def add_sync_batch_norm_argument(group: argparse._ArgumentGroup) -> None:
    """`--sync-batch-norm`: the downstream models' BatchNorms synchronised across GPUs, as the originals trained."""
    group.add_argument(
        "--sync-batch-norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Synchronise BatchNorm statistics across GPUs when training on several, as the original (default: on).",
    )


def sync_batch_norm(model: torch.nn.Module, accelerator: Accelerator, enabled: bool) -> torch.nn.Module:
    """`model` with SyncBatchNorm when asked and training runs on several CUDA processes (NCCL); else unchanged."""
    if enabled and accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model

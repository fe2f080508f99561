"""What every task does with `--model` besides building its own model: class-name mappings, loading the config of a
folder or Hub id with an error that lists the presets, the head-resize warning, and the base model's Hub id."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from ..errors import FinetuneError

logger = logging.getLogger(__name__)


def label_mappings(label_names: list[str]) -> dict[str, dict]:
    """`id2label` and `label2id` for a config (transformers derives `num_labels` from `id2label`)."""
    return {
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
    }


def load_pretrained_config(model: str, presets: Iterable[str], trust_remote_code: bool) -> PretrainedConfig:
    """The config of a folder or Hub id; a failure says that `model` is neither a preset nor loadable."""
    try:
        return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as error:
        raise FinetuneError(
            f"--model {model!r} is not a preset ({', '.join(presets)}), and loading it as a folder or "
            f"Hub model id failed: {error}"
        ) from error


def warn_if_head_resized(model: str, model_classes: int, dataset_classes: int, reinitialised: str) -> None:
    """Say that the class-specific layers start afresh when the dataset's class count differs from the model's."""
    if model_classes != dataset_classes:
        logger.warning(
            f"{model} has {model_classes} classes; the dataset has {dataset_classes}, so the {reinitialised} "
            "re-initialised."
        )


def base_model_id(model: str) -> str | None:
    """The Hub id a fine-tune started from (for the model card), or None for a local folder."""
    return None if Path(model).exists() else model

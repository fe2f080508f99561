"""Image classification: label columns, transforms from the model's image processor, MixUp/CutMix, label-smoothed
cross-entropy, and top-1 / top-5 accuracy from the local `evaluate` module."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForImageClassification

from ...metrics import load_metric
from ...models.dwnet import DWNET_PRESETS, DWNetConfig, DWNetForImageClassification, dwnet_image_processor
from ...models.dwnet import dwnet_preset_config
from ..data import (
    ExampleDataset,
    find_column,
    find_image_column,
    load_dataset_source,
    prepare_splits,
    undecoded_images,
)
from ..digits import DIGITS_DATASET_NAME, DIGITS_IMAGE_SIZE, digits_dataset
from ..errors import DataError
from ..images import decode_image
from ..transforms import batch_mixing, classification_train_transform, eval_transform
from .base import DatasetInfo, Evaluator, Task
from .model_loading import base_model_id, label_mappings, load_pretrained_config, warn_if_head_resized

logger = logging.getLogger(__name__)

LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "category", "target", "y")
TOP_K = 5

# A small DWNet for CPU runs and the digits demo: 1.25M parameters, a few seconds per digits epoch on 2 cores.
DEMO_MODEL = "dwnet-demo"
DEMO_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "depths": [1, 1, 2, 1],
    "mixer": "static",
    "drop_path_rate": 0.0,
}
MODEL_PRESETS = (DEMO_MODEL, *DWNET_PRESETS)


class ClassificationExample:
    """Row -> {"pixel_values", "labels"}: decode the image (errors name the row), transform, check the label."""

    def __init__(self, transform: Any, split: str, num_labels: int) -> None:
        self.transform = transform
        self.split = split
        self.num_labels = num_labels

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        label = row["label"]
        if label is None or not 0 <= int(label) < self.num_labels:
            raise DataError(
                f"Row {index} of split '{self.split}' has label {label!r}, outside 0..{self.num_labels - 1}. "
                "Unlabelled rows (e.g. -1 in a test split) cannot be trained or evaluated on."
            )
        image = decode_image(row["image"], index, self.split)
        return {"pixel_values": self.transform(image), "labels": int(label)}


class ClassificationEvaluator(Evaluator):
    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.loss_sum = 0.0
        self.count = 0

    def add(self, gathered: dict[str, torch.Tensor]) -> None:
        self.metric.add_batch(
            predictions=gathered["ranked"].cpu().tolist(), references=gathered["labels"].cpu().tolist()
        )
        self.loss_sum += float(gathered["loss"].float().sum())
        self.count += int(gathered["labels"].numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise DataError("The evaluation set is empty: nothing to compute metrics on.")
        results = self.metric.compute(top_k=[TOP_K])
        results["loss"] = self.loss_sum / self.count
        results["samples"] = self.count
        return results


def _encode_labels(dsd: datasets.DatasetDict) -> datasets.DatasetDict:
    """Make `label` a ClassLabel with one set of names over all splits (strings sorted, or integer ids)."""
    feature = next(iter(dsd.values())).features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return dsd
    if not isinstance(feature, datasets.Value) or not (
        feature.dtype.startswith(("int", "uint")) or feature.dtype in ("string", "large_string", "bool")
    ):
        raise DataError(
            f"The label column holds {feature}; single-label classification needs class names or integer ids. "
            "Name another column with --label-column."
        )
    values = sorted({value for split in dsd.values() for value in split.unique("label") if value is not None})
    if feature.dtype in ("string", "large_string"):
        return dsd.cast_column("label", datasets.ClassLabel(names=[str(value) for value in values]))
    values = [int(value) for value in values]
    names = [str(value) for value in values]
    if values == list(range(len(values))):
        return dsd.cast_column("label", datasets.ClassLabel(names=names))
    index_of = {value: index for index, value in enumerate(values)}
    features = next(iter(dsd.values())).features.copy()
    features["label"] = datasets.ClassLabel(names=names)
    return dsd.map(
        lambda batch: {"label": [index_of[int(value)] for value in batch["label"]]},
        batched=True,
        features=features,
        desc="Encoding labels",
    )


def build_classification_model(
    args: argparse.Namespace, label_names: list[str]
) -> tuple[torch.nn.Module, Any, str | None]:
    """The model and image processor for `--model`; returns them and the base model's Hub id (or None)."""
    num_labels = len(label_names)
    label_kwargs = label_mappings(label_names)  # num_labels follows from id2label
    if args.model in MODEL_PRESETS:
        overrides: dict[str, Any] = {"num_labels": num_labels, **label_kwargs}
        if args.drop_path_rate is not None:
            overrides["drop_path_rate"] = args.drop_path_rate
        image_size = args.image_size or (DIGITS_IMAGE_SIZE if args.model == DEMO_MODEL else 224)
        overrides["image_size"] = image_size
        if args.model == DEMO_MODEL:
            config = DWNetConfig(**{**DEMO_MODEL_CONFIG, **overrides})
        else:
            config = dwnet_preset_config(args.model, **overrides)
        return DWNetForImageClassification(config), dwnet_image_processor(image_size=image_size), None

    config = load_pretrained_config(args.model, MODEL_PRESETS, args.trust_remote_code)
    warn_if_head_resized(args.model, getattr(config, "num_labels", 0), num_labels, "classification head is")
    extra: dict[str, Any] = {}
    if args.drop_path_rate is not None:
        extra["drop_path_rate"] = args.drop_path_rate
    model = AutoModelForImageClassification.from_pretrained(
        args.model,
        ignore_mismatched_sizes=True,
        trust_remote_code=args.trust_remote_code,
        **label_kwargs,
        **extra,
    )
    try:
        processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    except Exception:
        size = args.image_size or getattr(config, "image_size", 224)
        logger.warning(f"{args.model} has no image processor; using the DWNet one at {size} pixels.")
        processor = dwnet_image_processor(image_size=size)
    else:
        if args.image_size:
            processor = _resized_processor(processor, args.image_size)
    if args.image_size and hasattr(model.config, "image_size"):
        model.config.image_size = args.image_size
    return model, processor, base_model_id(args.model)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute block activations in the backward pass (non-reentrant, so it also works under DDP)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _resized_processor(processor: Any, image_size: int) -> Any:
    size = processor.to_dict().get("size", {})
    square = {"height": image_size, "width": image_size}
    processor.size = {"shortest_edge": image_size} if "shortest_edge" in size else square
    if processor.to_dict().get("crop_size"):
        processor.crop_size = {"height": image_size, "width": image_size}
    return processor


class ImageClassificationTask(Task):
    name: ClassVar[str] = "image-classification"
    primary_metric: ClassVar[str] = "accuracy"
    pipeline_task: ClassVar[str] = "image-classification"
    card_tags: ClassVar[list[str]] = ["image-classification", "vision"]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("image classification")
        group.add_argument("--label-column", help="Column holding the labels (default: detected).")
        group.add_argument("--label-smoothing", type=float, default=0.1, help="Default: %(default)s.")
        group.add_argument("--mixup", type=float, default=0.0, help="MixUp alpha (0: off; 0.8 is usual).")
        group.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha (0: off; 1.0 is usual).")
        group.add_argument(
            "--crop-scale",
            type=float,
            nargs=2,
            default=(0.08, 1.0),
            metavar=("MIN", "MAX"),
            help="Area range of RandomResizedCrop (default: 0.08 1.0).",
        )
        group.add_argument(
            "--hflip", action=argparse.BooleanOptionalAction, default=True, help="Random horizontal flips."
        )
        group.add_argument(
            "--auto-augment",
            choices=["none", "trivial", "randaugment", "autoaugment"],
            default="none",
            help="Automatic augmentation policy (default: %(default)s).",
        )
        group.add_argument("--color-jitter", type=float, default=0.0, help="ColorJitter strength (0: off).")
        group.add_argument("--random-erasing", type=float, default=0.0, help="RandomErasing probability (0: off).")

    @classmethod
    def demo_defaults(cls) -> dict[str, Any]:
        # Digits: no flips (a mirrored 3 is not a 3), mild crops. 8 epochs (352 steps): 99.4-100% validation accuracy
        # over seeds 42, 1 and 7, in about half a minute of training on 2 idle CPU cores.
        return {
            "model": DEMO_MODEL,
            "num_epochs": 8,
            "per_device_train_batch_size": 32,
            "learning_rate": 2e-3,
            "weight_decay": 0.05,
            "warmup_ratio": 0.05,
            "label_smoothing": 0.1,
            "crop_scale": (0.7, 1.0),
            "hflip": False,
            "num_workers": 0,
            "overwrite_output_dir": True,  # `make demo` can be run again
        }

    def setup(self, accelerator: Accelerator) -> None:
        args = self.args
        if args.dataset is None:
            dsd, name, hub_id, kind = digits_dataset(), DIGITS_DATASET_NAME, None, "sklearn-digits"
        else:
            source = load_dataset_source(args.dataset, args.dataset_config, args.dataset_revision)
            dsd, name, hub_id, kind = source.dataset, source.name, source.hub_id, source.kind
        reference = dsd[args.train_split] if args.train_split in dsd else next(iter(dsd.values()))
        image_column = find_image_column(reference, args.image_column)
        label_column = find_column(
            reference, args.label_column, datasets.ClassLabel, LABEL_COLUMN_NAMES, "label", "--label-column"
        )
        if image_column == label_column:
            raise DataError(f"--image-column and --label-column are both {image_column!r}.")
        # Splits without both columns (e.g. an unlabelled test split) are left out.
        dsd = datasets.DatasetDict(
            {
                split: rows.select_columns([image_column, label_column]).rename_columns(
                    {image_column: "image", label_column: "label"}
                )
                for split, rows in dsd.items()
                if image_column in rows.column_names and label_column in rows.column_names
            }
        )
        dsd = _encode_labels(undecoded_images(dsd, "image"))
        self.label_names = list(next(iter(dsd.values())).features["label"].names)
        if len(self.label_names) < 2:
            raise DataError(
                f"The label column has {len(self.label_names)} class(es) ({self.label_names}); classification "
                "needs at least 2."
            )
        splits = prepare_splits(dsd, args, ["image"], stratify_by_column="label")
        train_rows, eval_rows, validation_name = splits.train, splits.validation, splits.validation_split
        self.test_rows = splits.test if splits.test is not None else eval_rows

        self.model, self.processor, self.base_model = build_classification_model(args, self.label_names)
        if args.gradient_checkpointing:
            enable_activation_checkpointing(self.model)
        train_transform = classification_train_transform(
            self.processor,
            crop_scale=args.crop_scale,
            hflip=args.hflip,
            auto_augment=args.auto_augment,
            color_jitter=args.color_jitter,
            random_erasing=args.random_erasing,
        )
        num_labels = len(self.label_names)
        self.train_dataset = ExampleDataset(
            train_rows, ClassificationExample(train_transform, splits.train_split, num_labels), seed=args.seed
        )
        self.eval_dataset = ExampleDataset(
            eval_rows, ClassificationExample(eval_transform(self.processor), validation_name, num_labels)
        )
        self.mixing = batch_mixing(num_labels, args.mixup, args.cutmix)
        self.metric = load_metric("accuracy")
        self.dataset_info = DatasetInfo(
            name=name,
            hub_id=hub_id,
            kind=kind,
            train_split=splits.train_split,
            train_rows=len(train_rows),
            validation_split=splits.validation_split,
            validation=splits.validation_description,
            validation_rows=len(eval_rows),
            details={"classes": num_labels, "label names": self.label_names},
        )

    def prepare_train_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.mixing is None:
            return batch
        pixel_values, labels = self.mixing(batch["pixel_values"], batch["labels"])
        return {**batch, "pixel_values": pixel_values, "labels": labels}

    def training_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(pixel_values=batch["pixel_values"]).logits
        return F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.args.label_smoothing)

    def eval_outputs(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = model(pixel_values=batch["pixel_values"]).logits.float()
        labels = batch["labels"]
        return {
            "ranked": logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices,
            "labels": labels,
            "loss": F.cross_entropy(logits, labels, reduction="none"),
        }

    def new_evaluator(self) -> Evaluator:
        return ClassificationEvaluator(self.metric)

    def hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "label_smoothing": args.label_smoothing,
            "mixup_alpha": args.mixup,
            "cutmix_alpha": args.cutmix,
            "random_resized_crop_scale": list(args.crop_scale),
            "horizontal_flip": args.hflip,
            "auto_augment": args.auto_augment,
            "color_jitter": args.color_jitter,
            "random_erasing": args.random_erasing,
        }

    def predict_examples(self, model_dir: Path, count: int) -> list[str]:
        from transformers import pipeline

        rows = self.test_rows.select(range(min(count, len(self.test_rows))))
        images = [decode_image(row["image"], index, "test") for index, row in enumerate(rows)]
        classifier = pipeline(self.pipeline_task, model=str(model_dir), device="cpu")
        lines = []
        for index, (row, predictions) in enumerate(zip(rows, classifier(images, top_k=3))):
            ranked = ", ".join(f"{p['label']} ({p['score']:.1%})" for p in predictions)
            truth = self.label_names[row["label"]]
            mark = "ok " if predictions[0]["label"] == truth else "MISS"
            lines.append(f"  [{mark}] held-out image {index}: true {truth!r} -> {ranked}")
        return lines

"""Semantic segmentation: UperNet + DWNet (or any transformers semantic-segmentation model) on datasets of images and
annotation maps, with mmsegmentation's training recipe (random rescale/crop/flip/photometric distortion, AdamW,
polynomial decay with linear warm-up) and its evaluation (whole images at the processor's scale, logits resized
to the original annotation, mean IoU over the whole set)."""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
from transformers import UperNetForSemanticSegmentation
from transformers.image_utils import SizeDict

from ...metrics import load_metric
from ...models.dwnet import DOWNSTREAM_FLAVOUR, DWNetConfig
from ...models.upernet_dwnet import (
    ORIGINAL_HEAD_DROPOUT,
    UPERNET_DWNET_PRESETS,
    add_original_head_dropout,
    upernet_dwnet_config,
    upernet_dwnet_image_processor,
    upernet_dwnet_preset_config,
)
from ..data import ExampleDataset, load_dataset_source, prepare_splits, undecoded_images
from ..errors import DataError, FinetuneError
from ..images import decode_image
from ..segmentation_data import (
    SegmentationExample,
    collate_segmentation,
    count_classes,
    dataset_label_names,
    find_segmentation_columns,
    read_id2label_file,
    undecoded_annotations,
)
from ..segmentation_transforms import SegmentationEvalTransform, SegmentationTrainTransform
from .base import DatasetInfo, Evaluator, Task, add_sync_batch_norm_argument, sync_batch_norm
from .model_loading import base_model_id, label_mappings, load_pretrained_config, warn_if_head_resized
from .image_classification import enable_activation_checkpointing

logger = logging.getLogger(__name__)

# A small UperNet-DWNet for CPU runs: 1.9M parameters (UperNet-DWNet-T has 56M), a few steps per second at 64x64.
DEMO_MODEL = "upernet-dwnet-demo"
DEMO_BACKBONE_CONFIG: dict[str, Any] = {"embed_dim": 32, "depths": [1, 1, 2, 1], "mixer": "static"}
DEMO_HEAD_CONFIG: dict[str, Any] = {"hidden_size": 64, "auxiliary_channels": 32}
MODEL_PRESETS = (DEMO_MODEL, *UPERNET_DWNET_PRESETS)
# The original training resolution: 512x512 crops of images rescaled around (2048, 512) (long, short side).
ORIGINAL_CROP_SIZE = 512
TEST_SCALE_PER_CROP = 4  # the long side limit of the test scale, in crop sizes (2048 = 4 x 512)
AREAS = ("area_intersect", "area_pred_label", "area_label")
REDUCED_ZERO_LABEL = 255  # where `reduce_labels` sends 0, in mmseg and in transformers' image processors


def _size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size in pixels, got {text}")
    return value


def _ratio_range(values: list[float]) -> tuple[float, float]:
    low, high = values
    if not 0 < low <= high:
        raise FinetuneError(f"--ratio-range must be two numbers 0 < MIN <= MAX, got {low} {high}.")
    return low, high


def _is_generic(names: dict[int, str]) -> bool:
    return all(name == f"LABEL_{index}" for index, name in names.items())


def _set_scale(processor: Any, scale: tuple[int, int]) -> None:
    """Make the processor resize keeping the aspect ratio within (long, short) sides (mmseg's `img_scale`)."""
    processor.size = SizeDict(longest_edge=int(scale[0]), shortest_edge=int(scale[1]))


def build_segmentation_model(
    args: argparse.Namespace, label_names: list[str]
) -> tuple[torch.nn.Module, Any, str | None]:
    """The model and image processor for `--model`; returns them and the base model's Hub id (or None)."""
    labels = label_mappings(label_names)
    if args.model in MODEL_PRESETS:
        backbone_overrides = {} if args.drop_path_rate is None else {"drop_path_rate": args.drop_path_rate}
        common = {"id2label": labels["id2label"], "loss_ignore_index": args.ignore_index}
        if args.model == DEMO_MODEL:
            backbone = DWNetConfig(
                **{**DEMO_BACKBONE_CONFIG, **DOWNSTREAM_FLAVOUR, "drop_path_rate": 0.0, **backbone_overrides}
            )
            config = upernet_dwnet_config(backbone, num_labels=len(label_names), **DEMO_HEAD_CONFIG, **common)
        else:
            config = upernet_dwnet_preset_config(
                args.model, num_labels=len(label_names), backbone_overrides=backbone_overrides, **common
            )
        processor = upernet_dwnet_image_processor(do_reduce_labels=args.reduce_labels)
        short = min(args.crop_size)
        _set_scale(processor, args.resize_scale or (TEST_SCALE_PER_CROP * short, short))
        return UperNetForSemanticSegmentation(config), processor, None

    config = load_pretrained_config(args.model, MODEL_PRESETS, args.trust_remote_code)
    warn_if_head_resized(args.model, config.num_labels, len(label_names), "classifier layers are")
    config.id2label, config.label2id = labels["id2label"], labels["label2id"]
    # UperNet calls it `loss_ignore_index`; Segformer, BEiT, DPT, MobileViT, ... `semantic_loss_ignore_index`.
    ignore_attributes = [name for name in ("loss_ignore_index", "semantic_loss_ignore_index") if hasattr(config, name)]
    for name in ignore_attributes:
        setattr(config, name, args.ignore_index)
    if not ignore_attributes:
        logger.warning(
            f"The config of {args.model} names no loss ignore index: its loss may not ignore --ignore-index "
            f"{args.ignore_index} (the value of unlabelled pixels and of the crop padding)."
        )
    if args.drop_path_rate is not None:  # the backbone's (UperNet) or the model's own (Segformer, BEiT, ...)
        candidates = (getattr(config, "backbone_config", None), config)
        owner = next((candidate for candidate in candidates if hasattr(candidate, "drop_path_rate")), None)
        if owner is None:
            raise FinetuneError(f"--drop-path-rate: the config of {args.model} has no drop_path_rate.")
        owner.drop_path_rate = args.drop_path_rate
    model = AutoModelForSemanticSegmentation.from_pretrained(
        args.model, config=config, ignore_mismatched_sizes=True, trust_remote_code=args.trust_remote_code
    )
    try:
        processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    except Exception:
        logger.warning(f"{args.model} has no image processor; using the original DWNet ADE20K test pipeline.")
        processor = upernet_dwnet_image_processor()
    if hasattr(processor, "do_reduce_labels"):
        processor.do_reduce_labels = args.reduce_labels
    if args.resize_scale:
        _set_scale(processor, args.resize_scale)
    return model, processor, base_model_id(args.model)


def _backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "backbone", model)


class SegmentationEvaluator(Evaluator):
    """Sums the per-class areas counted on each process; the `mean_iou` module turns the totals into metrics."""

    def __init__(self, metric: Any, num_labels: int) -> None:
        self.metric = metric
        self.totals = torch.zeros(len(AREAS), num_labels, dtype=torch.long)
        self.loss_sum = 0.0
        self.count = 0

    def add(self, gathered: dict[str, torch.Tensor]) -> None:
        self.totals += torch.stack([gathered[name].sum(0).cpu() for name in AREAS])
        self.loss_sum += float(gathered["loss_sum"].double().sum())
        self.count += int(gathered["loss_sum"].numel())

    def compute(self) -> dict[str, Any]:
        if self.count == 0:
            raise DataError("The evaluation set is empty: nothing to compute metrics on.")
        intersect, pred_label, label = self.totals
        if int(label.sum()) == 0:
            raise DataError(
                "Every pixel of the evaluation set is the ignore index: there is nothing to evaluate. Check "
                "--ignore-index and --reduce-labels."
            )
        results = self.metric.compute_from_areas(intersect, pred_label + label - intersect, pred_label, label)
        per_class = {key: results.pop(key) for key in ("per_category_iou", "per_category_accuracy")}
        results["loss"] = self.loss_sum / int(label.sum())
        results["samples"] = self.count
        # JSON-friendly: classes absent from predictions and references have no IoU (None, not NaN).
        for key, values in per_class.items():
            results[key] = [None if np.isnan(value) else float(value) for value in values]
        return results


class SemanticSegmentationTask(Task):
    name: ClassVar[str] = "semantic-segmentation"
    primary_metric: ClassVar[str] = "mean_iou"
    pipeline_task: ClassVar[str] = "image-segmentation"
    card_tags: ClassVar[list[str]] = ["image-segmentation", "semantic-segmentation", "vision"]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("semantic segmentation")
        group.add_argument(
            "--annotation-column", help="Column holding the annotation maps (default: detected, e.g. annotation)."
        )
        group.add_argument(
            "--id2label-file",
            help="JSON file of the class names ({\"0\": \"wall\", ...} or a list). Default: id2label.json of the "
            "dataset, ADE20K's names for ADE20K, the model's, or numbers up to the largest label found.",
        )
        group.add_argument(
            "--reduce-labels",
            action=argparse.BooleanOptionalAction,
            default=False,
            help="Annotations where 0 means 'unlabelled' (ADE20K): 0 becomes the ignore index, every other value "
            "v becomes v - 1. Default: off.",
        )
        group.add_argument(
            "--ignore-index", type=int, default=REDUCED_ZERO_LABEL, help="Annotation value of pixels without a class (no loss, not "
            "evaluated); also pads the crops. Default: %(default)s."
        )
        group.add_argument(
            "--crop-size",
            type=_size,
            nargs="+",
            default=[ORIGINAL_CROP_SIZE],
            metavar="SIZE",
            help="Training crop: SIZE or HEIGHT WIDTH (default: %(default)s). Presets also evaluate at 4xSIZE by "
            "SIZE (long by short side), like the original 2048x512 for 512.",
        )
        group.add_argument(
            "--resize-scale",
            type=_size,
            nargs=2,
            metavar=("LONG", "SHORT"),
            help="Keep-ratio resize of evaluation (saved in the image processor) and centre of the training "
            "rescale: the image fits LONG x SHORT sides. Default: the model's processor (or 4xcrop by crop).",
        )
        group.add_argument(
            "--ratio-range",
            type=float,
            nargs=2,
            default=(0.5, 2.0),
            metavar=("MIN", "MAX"),
            help="Random rescale range of training, relative to the resize scale (default: 0.5 2.0).",
        )
        group.add_argument(
            "--cat-max-ratio",
            type=float,
            default=0.75,
            help="Redraw a training crop (up to 10 times) while one class covers this much of it (1: off; "
            "default: %(default)s).",
        )
        group.add_argument(
            "--hflip", action=argparse.BooleanOptionalAction, default=True, help="Random horizontal flips."
        )
        group.add_argument(
            "--photometric-distortion",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="mmseg's random brightness/contrast/saturation/hue changes (default: on).",
        )
        group.add_argument(
            "--head-dropout",
            type=float,
            default=ORIGINAL_HEAD_DROPOUT,
            help="Dropout2d before the UperNet classifiers in training, as the original (default: %(default)s).",
        )
        add_sync_batch_norm_argument(group)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        # The original schedule: AdamW (lr 6e-5, weight decay 0.01), polynomial decay (power 1) after a linear
        # warm-up of 1500 of 160k iterations, 2 images per GPU on 8 GPUs.
        return {
            "learning_rate": 6e-5,
            "weight_decay": 0.01,
            "lr_scheduler_type": "polynomial",
            "warmup_ratio": 0.01,
            "per_device_train_batch_size": 2,
        }

    def setup(self, accelerator: Accelerator) -> None:
        args = self.args
        if args.image_size is not None:
            raise FinetuneError("--image-size is for classification; segmentation uses --crop-size and --resize-scale.")
        if len(args.crop_size) > 2:
            raise FinetuneError(f"--crop-size takes SIZE or HEIGHT WIDTH, got {len(args.crop_size)} numbers.")
        args.crop_size = tuple(args.crop_size * 2 if len(args.crop_size) == 1 else args.crop_size)
        args.ratio_range = _ratio_range(list(args.ratio_range))
        if not 0 <= args.head_dropout < 1:
            raise FinetuneError(f"--head-dropout must be in [0, 1), got {args.head_dropout}.")
        if args.reduce_labels and args.ignore_index != REDUCED_ZERO_LABEL:
            raise FinetuneError(
                f"--reduce-labels maps 0 to {REDUCED_ZERO_LABEL}, as mmseg and transformers' image processors do (the "
                f"saved processor will too), so --ignore-index must be {REDUCED_ZERO_LABEL} with it, not "
                f"{args.ignore_index}. Drop --ignore-index, or relabel the data and leave out --reduce-labels."
            )
        source = load_dataset_source(args.dataset, args.dataset_config, args.dataset_revision)
        dsd = source.dataset
        reference = dsd[args.train_split] if args.train_split in dsd else next(iter(dsd.values()))
        image_column, annotation_column = find_segmentation_columns(
            reference, args.image_column, args.annotation_column
        )
        # Splits without both columns (e.g. a test split without annotations) are left out.
        dsd = datasets.DatasetDict(
            {
                split: rows.select_columns([image_column, annotation_column]).rename_columns(
                    {image_column: "image", annotation_column: "annotation"}
                )
                for split, rows in dsd.items()
                if image_column in rows.column_names and annotation_column in rows.column_names
            }
        )
        dsd, annotation_files = undecoded_annotations(undecoded_images(dsd, "image"))
        splits = prepare_splits(dsd, args, ["image", "annotation"] if annotation_files else ["image"])
        self.test_rows = splits.test if splits.test is not None else splits.validation
        self.test_split = "test" if splits.test is not None else splits.validation_split

        self.label_names, names_source = self._label_names(source, splits)
        num_labels = len(self.label_names)
        if 0 <= args.ignore_index < num_labels:
            raise FinetuneError(
                f"--ignore-index {args.ignore_index} is one of the {num_labels} classes (0..{num_labels - 1}); use a "
                "value outside them (255 is usual)."
            )
        logger.info(f"{num_labels} classes, names from {names_source}.")

        self.model, self.processor, self.base_model = build_segmentation_model(args, self.label_names)
        upernet = isinstance(self.model, UperNetForSemanticSegmentation)
        if args.head_dropout > 0 and upernet:  # other models have their own heads (and dropout)
            add_original_head_dropout(self.model, args.head_dropout)
        if args.gradient_checkpointing:
            enable_activation_checkpointing(_backbone_of(self.model))
        self.model = sync_batch_norm(self.model, accelerator, args.sync_batch_norm)
        # SyncBatchNorm (several CUDA processes) pools the statistics of every process; plain BatchNorm does not.
        pools_to_1x1 = upernet and 1 in self.model.config.pool_scales
        plain_batch_norm = any(isinstance(module, torch.nn.BatchNorm2d) for module in self.model.modules())
        if pools_to_1x1 and plain_batch_norm and args.per_device_train_batch_size < 2:
            raise FinetuneError(
                "UperNet's pooling module applies BatchNorm to 1x1 features, which needs at least 2 images per "
                "process in training (or --sync-batch-norm on several GPUs): use --per-device-train-batch-size 2 or "
                "more (the original used 2)."
            )

        train_transform = SegmentationTrainTransform(
            self.processor,
            crop_size=args.crop_size,
            ratio_range=args.ratio_range,
            cat_max_ratio=args.cat_max_ratio,
            hflip=args.hflip,
            photometric_distortion=args.photometric_distortion,
            ignore_index=args.ignore_index,
        )
        example = {"num_labels": num_labels, "ignore_index": args.ignore_index, "reduce_labels": args.reduce_labels}
        self.train_dataset = ExampleDataset(
            splits.train, SegmentationExample(train_transform, splits.train_split, **example), seed=args.seed
        )
        self.eval_dataset = ExampleDataset(
            splits.validation,
            SegmentationExample(SegmentationEvalTransform(self.processor), splits.validation_split, **example),
        )
        self.metric = load_metric("mean_iou")
        self.dataset_info = DatasetInfo(
            name=source.name,
            hub_id=source.hub_id,
            kind=source.kind,
            train_split=splits.train_split,
            train_rows=len(splits.train),
            validation_split=splits.validation_split,
            validation=splits.validation_description,
            validation_rows=len(splits.validation),
            details={
                "classes": num_labels,
                "ignore index": args.ignore_index,
                "reduce labels": args.reduce_labels,
                "label names": self.label_names,
            },
        )

    def _label_names(self, source: Any, splits: Any) -> tuple[list[str], str]:
        """Class names from --id2label-file, the dataset, or the model; else numbers up to the largest label."""
        args = self.args
        if args.id2label_file:
            return read_id2label_file(args.id2label_file), args.id2label_file
        shipped = dataset_label_names(source.name, source.hub_id, args.dataset_revision)
        if shipped is not None:
            return shipped
        logger.info("No class names given (--id2label-file) or shipped with the dataset: counting the classes.")
        num_labels = count_classes(
            {splits.train_split: splits.train, splits.validation_split: splits.validation},
            args.ignore_index,
            args.reduce_labels,
            args.num_workers,
        )
        if args.model not in MODEL_PRESETS:
            config = AutoConfig.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
            names = {int(index): name for index, name in config.id2label.items()}
            if len(names) == num_labels and not _is_generic(names):
                return [names[index] for index in range(num_labels)], f"the id2label of {args.model}"
        return [str(index) for index in range(num_labels)], f"the largest label found ({num_labels - 1})"

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_segmentation(examples)

    def training_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        # UperNet's own loss: cross-entropy ignoring `loss_ignore_index` plus the weighted auxiliary head's.
        labels = batch["labels"]
        loss = model(pixel_values=batch["pixel_values"], labels=labels).loss
        # Without a labelled pixel in the batch the mean cross-entropy is 0 / 0 = NaN (with zero gradients): count
        # it as 0, as mmseg's loss does, so that the logged training loss stays a number.
        return torch.where((labels != self.args.ignore_index).any(), loss, torch.zeros_like(loss))

    def eval_outputs(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per image: the per-class areas of the prediction at the annotation's size, and the summed loss there.
        Images of one size go through the model together; no image is padded, so each is predicted whole."""
        images, labels = list(batch["pixel_values"]), list(batch["labels"])
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_size[tuple(image.shape)].append(index)
        rows: list[dict[str, torch.Tensor]] = [{} for _ in images]
        num_labels, ignore_index = len(self.label_names), self.args.ignore_index
        for indices in by_size.values():
            logits = model(pixel_values=torch.stack([images[i] for i in indices])).logits
            for position, index in enumerate(indices):
                label = labels[index]
                upsampled = F.interpolate(
                    logits[position : position + 1].float(), size=label.shape[-2:], mode="bilinear", align_corners=False
                )
                loss_sum = F.cross_entropy(upsampled, label[None], ignore_index=ignore_index, reduction="sum")
                areas = self.metric.intersect_and_union(upsampled[0].argmax(0), label, num_labels, ignore_index)
                rows[index] = {
                    "area_intersect": areas[0], "area_pred_label": areas[2], "area_label": areas[3],
                    "loss_sum": loss_sum,
                }  # fmt: skip
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

    def new_evaluator(self) -> Evaluator:
        return SegmentationEvaluator(self.metric, len(self.label_names))

    def hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "crop_size": list(args.crop_size),
            "resize_scale": self.processor.to_dict().get("size"),
            "ratio_range": list(args.ratio_range),
            "cat_max_ratio": args.cat_max_ratio,
            "horizontal_flip": args.hflip,
            "photometric_distortion": args.photometric_distortion,
            "head_dropout": args.head_dropout,
            "ignore_index": args.ignore_index,
            "reduce_labels": args.reduce_labels,
        }

    def predict_examples(self, model_dir: Path, count: int) -> list[str]:
        from transformers import pipeline

        rows = self.test_rows.select(range(min(count, len(self.test_rows))))
        segmenter = pipeline(self.pipeline_task, model=str(model_dir), device="cpu")
        args = self.args
        reader = SegmentationExample(
            None, self.test_split, len(self.label_names), args.ignore_index, args.reduce_labels
        )
        lines = []
        for index, row in enumerate(rows):
            image = decode_image(row["image"], index, self.test_split)
            found = sorted(
                ((np.asarray(r["mask"]) > 0).mean(), r["label"]) for r in segmenter(image)
            )[::-1]
            shown = ", ".join(f"{label} {share:.0%}" for share, label in found[:5])
            if row["annotation"] is None:  # e.g. ADE20K's test split: images without annotations
                lines.append(f"  held-out image {index}: predicted {shown} | not annotated")
                continue
            annotation = reader.labels(row, index)
            labelled = annotation[annotation != args.ignore_index]
            values, counts = np.unique(labelled, return_counts=True)
            truth = sorted(zip(counts / max(labelled.size, 1), (self.label_names[v] for v in values)))[::-1]
            expected = ", ".join(f"{label} {share:.0%}" for share, label in truth[:5])
            lines.append(f"  held-out image {index}: predicted {shown} | annotated {expected}")
        return lines

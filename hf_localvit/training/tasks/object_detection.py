"""Object detection (and instance segmentation when the data has masks) with Cascade Mask R-CNN: COCO-style Hub
datasets, mmdetection's multi-scale box-aware augmentation, and COCO mAP from the local `evaluate` module.

Data: an image column and an objects column (`bbox` in COCO x, y, w, h pixels or x1, y1, x2, y2 with
`--box-format xyxy`, `category`, optional `segmentation` / `area` / `iscrowd`). With a `segmentation` field the mask
heads are trained and mask AP reported; without one (or with `--ignore-masks`) only boxes are trained: the mask heads
are frozen and keep their weights. Filtering rules are in `detection_data`.

Batch norm: the box heads (and the DWNet backbone's output norms) use BatchNorm, synchronised across GPUs as in the
original (SyncBN; `--no-sync-batch-norm` to turn it off). The box-head norms see the 512 sampled RoIs of each image, so
they are well estimated even at one image per GPU; the backbone's output norms see the images only, so below 2 images
per GPU without SyncBN their statistics are noisy.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForObjectDetection
from transformers.image_utils import SizeDict

from ...metrics import load_metric
from ...models.cascade_mask_rcnn import (
    CASCADE_MASK_RCNN_PRESETS,
    CascadeMaskRCNNConfig,
    CascadeMaskRCNNForInstanceSegmentation,
    CascadeMaskRCNNImageProcessor,
    cascade_mask_rcnn_preset_config,
)
from ...models.dwnet import DOWNSTREAM_FLAVOUR, DWNetConfig
from ..data import (
    DatasetSource,
    ExampleDataset,
    check_not_empty,
    find_image_column,
    load_dataset_source,
    prepare_splits,
    undecoded_images,
)
from ..detection_data import (
    BOX_FORMATS,
    Categories,
    ObjectFields,
    as_object_columns,
    decode_rles,
    drop_rows_without_objects,
    encode_masks,
    find_categories,
    find_object_fields,
    parse_annotations,
    scan_annotations,
    segmentation_to_rle,
)
from ..detection_transforms import (
    DetectionCollator,
    detection_eval_transform,
    detection_train_transform,
    make_sample,
    multiscale_short_sides,
    processor_scale,
)
from ..errors import DataError, FinetuneError
from ..images import decode_image
from .base import DatasetInfo, Evaluator, Task, add_sync_batch_norm_argument, sync_batch_norm
from .model_loading import base_model_id, label_mappings, load_pretrained_config, warn_if_head_resized

logger = logging.getLogger(__name__)

# A small Cascade Mask R-CNN for CPU runs and tests: a 4-block DWNet (embed_dim 16) and narrow heads, with fewer
# proposals and sampled RoIs than the paper's settings. Its backbone outputs have no BatchNorm: at the one or two images
# per step of a CPU run, batch statistics over so few images made the detector train erratically (box mAP 0.06-0.4 over
# seeds on the generated shapes, against 0.2-0.6 without).
DEMO_MODEL = "cascade-mask-rcnn-dwnet-demo"
DEMO_BACKBONE_CONFIG: dict[str, Any] = {
    **DOWNSTREAM_FLAVOUR,
    "embed_dim": 16,
    "depths": [1, 1, 1, 1],
    "mixer": "static",
    "drop_path_rate": 0.0,
    "backbone_output_norm": "none",
}
DEMO_MODEL_CONFIG: dict[str, Any] = {
    "fpn_out_channels": 32,
    "rpn_feat_channels": 32,
    "box_head_num_convs": 1,
    "box_head_conv_channels": 32,
    "box_head_fc_channels": 128,
    "mask_head_num_convs": 2,
    "mask_head_channels": 32,
    "rpn_batch_size_per_image": 128,
    "roi_batch_size_per_image": 128,
    "rpn_pre_nms_top_k_train": 500,
    "rpn_post_nms_top_k_train": 250,
    "rpn_pre_nms_top_k_test": 300,
    "rpn_post_nms_top_k_test": 150,
}
DEMO_IMAGE_SIZE = 320  # evaluation short side of the demo preset (the paper's presets: 800)
MODEL_PRESETS = (DEMO_MODEL, *CASCADE_MASK_RCNN_PRESETS)
LONG_TO_SHORT = 1333 / 800  # mmdetection's img_scale=(1333, 800)
SHORT_SIDE_STEP = 32
MIN_SCALE_FRACTION = 0.6  # the 3x recipe draws short sides from 480..800 = 0.6..1 x the test scale


def _resized_processor(processor: Any, short_side: int) -> Any:
    processor.size = SizeDict(shortest_edge=short_side, longest_edge=int(round(short_side * LONG_TO_SHORT)))
    return processor


def build_detection_model(args: argparse.Namespace, names: list[str]) -> tuple[torch.nn.Module, Any, str | None]:
    """The detector and image processor for `--model`; returns them and the base model's Hub id (or None)."""
    label_kwargs = label_mappings(names)
    backbone_overrides = {} if args.drop_path_rate is None else {"drop_path_rate": args.drop_path_rate}
    if args.model in MODEL_PRESETS:
        if args.model == DEMO_MODEL:
            backbone = DWNetConfig(**{**DEMO_BACKBONE_CONFIG, **backbone_overrides})
            config = CascadeMaskRCNNConfig(backbone_config=backbone, **DEMO_MODEL_CONFIG, **label_kwargs)
        else:
            config = cascade_mask_rcnn_preset_config(args.model, backbone_overrides, **label_kwargs)
        short_side = args.image_size or (DEMO_IMAGE_SIZE if args.model == DEMO_MODEL else 800)
        processor = _resized_processor(CascadeMaskRCNNImageProcessor(), short_side)
        return CascadeMaskRCNNForInstanceSegmentation(config), processor, None

    config = load_pretrained_config(args.model, MODEL_PRESETS, args.trust_remote_code)
    if not isinstance(config, CascadeMaskRCNNConfig):
        raise FinetuneError(
            f"--model {args.model!r} is a {config.model_type!r} model; --task object-detection fine-tunes Cascade "
            f"Mask R-CNN: give a preset ({', '.join(MODEL_PRESETS)}) or a Cascade Mask R-CNN folder or Hub id."
        )
    warn_if_head_resized(
        args.model, config.num_labels, len(names), "class-specific layers (box classifiers and regressors, mask "
        "predictors) are"
    )
    config.id2label, config.label2id = label_kwargs["id2label"], label_kwargs["label2id"]
    for name, value in backbone_overrides.items():
        setattr(config.backbone_config, name, value)
    model = AutoModelForObjectDetection.from_pretrained(
        args.model, config=config, ignore_mismatched_sizes=True, trust_remote_code=args.trust_remote_code
    )
    try:
        processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    except Exception:
        logger.warning(f"{args.model} has no image processor; using mmdetection's test scale (1333x800).")
        processor = CascadeMaskRCNNImageProcessor()
    if args.image_size:
        processor = _resized_processor(processor, args.image_size)
    return model, processor, base_model_id(args.model)


class DetectionExample:
    """Row -> model inputs. Training: the augmented image, its x1y1x2y2 `boxes`, `class_labels` and (with masks)
    `masks`, crowd objects left out. Evaluation: the processor's image, the original size and the `reference` (ground
    truth in original-image pixels, masks as RLE, `image_id` = the row's position in the evaluation set).
    `row_numbers` (when rows were left out of the split) maps positions back to the split's row numbers, so that
    errors name the row the annotation scan and the user see."""

    def __init__(
        self,
        fields: ObjectFields,
        categories: Categories,
        box_format: str,
        split: str,
        transform: Any,
        training: bool,
        use_masks: bool,
        row_numbers: list[int] | None = None,
    ) -> None:
        self.fields = fields
        self.categories = categories
        self.box_format = box_format
        self.split = split
        self.transform = transform
        self.training = training
        self.use_masks = use_masks
        self.row_numbers = row_numbers

    def _rle(self, k: int, segmentation: Any, box: Any, height: int, width: int, index: int) -> dict[str, Any]:
        try:
            return segmentation_to_rle(segmentation, box, height, width)
        except (ValueError, TypeError, KeyError) as error:
            raise DataError(
                f"Row {index} of split '{self.split}': the segmentation of kept object {k} cannot be read ({error}). "
                "Give polygons, COCO RLE or a 2-D mask per object, or pass --ignore-masks."
            ) from None

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        number = self.row_numbers[index] if self.row_numbers is not None else index  # for error messages
        image = decode_image(row["image"], number, self.split)
        width, height = image.size
        objects = parse_annotations(
            row[self.fields.column], width, height, self.fields, self.categories, self.box_format, self.split, number
        )
        rles = None
        if self.use_masks:
            segmentations = objects.segmentations or [None] * len(objects)
            rles = [
                self._rle(k, segmentation, box, height, width, number)
                for k, (segmentation, box) in enumerate(zip(segmentations, objects.boxes))
            ]
        if not self.training:
            reference = {
                "image_id": index,
                "height": height,
                "width": width,
                "boxes": objects.boxes.tolist(),
                "labels": objects.labels.tolist(),
                "iscrowd": objects.iscrowd.astype(int).tolist(),
                "area": None if objects.area is None else objects.area.tolist(),
                "masks": rles,
            }
            return {"pixel_values": self.transform(image), "original_size": (height, width), "reference": reference}
        keep = ~objects.iscrowd
        masks = None
        if rles is not None:
            masks = torch.from_numpy(decode_rles([rle for rle, ok in zip(rles, keep) if ok], height, width))
        sample = self.transform(
            make_sample(image, torch.from_numpy(objects.boxes[keep]), torch.from_numpy(objects.labels[keep]), masks)
        )
        example = {
            "pixel_values": sample["image"].as_subclass(torch.Tensor),
            "boxes": sample["boxes"].as_subclass(torch.Tensor),
            "class_labels": sample["labels"],
        }
        if masks is not None:
            example["masks"] = sample["masks"].as_subclass(torch.Tensor)
        return example


class DetectionEvaluator(Evaluator):
    """Feeds the gathered per-image predictions and references to the COCO mAP metric."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.count = 0

    def add(self, gathered: list[dict[str, Any]]) -> None:
        self.metric.add_batch(
            predictions=[item["prediction"] for item in gathered], references=[item["reference"] for item in gathered]
        )
        self.count += len(gathered)

    def compute(self) -> dict[str, Any]:
        if self.count == 0:
            raise DataError("The evaluation set is empty: nothing to compute metrics on.")
        results = self.metric.compute()
        results["samples"] = self.count
        return results


class ObjectDetectionTask(Task):
    name: ClassVar[str] = "object-detection"
    primary_metric: ClassVar[str] = "map"
    pipeline_task: ClassVar[str] = "object-detection"
    card_tags: ClassVar[list[str]] = ["object-detection", "instance-segmentation", "cascade-mask-rcnn", "vision"]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "object detection",
            f"--model: a Cascade Mask R-CNN preset (random initialisation: {', '.join(MODEL_PRESETS)}; the demo one "
            "is small enough for a CPU), or a folder or Hub id of a Cascade Mask R-CNN. --image-size: the evaluation "
            f"and inference short side (800 for the paper's presets, {DEMO_IMAGE_SIZE} for the demo one).",
        )
        group.add_argument("--objects-column", help="Column of the per-image objects (default: detected).")
        group.add_argument(
            "--box-format",
            choices=BOX_FORMATS,
            default="xywh",
            help="How the dataset's boxes are written, in pixels: COCO's x, y, width, height (xywh, the default) or "
            "x1, y1, x2, y2 (xyxy).",
        )
        group.add_argument(
            "--train-short-sides",
            type=int,
            nargs=2,
            metavar=("MIN", "MAX"),
            help="Multi-scale training: each image's short side is drawn from MIN, MIN+32, ..., MAX (default: 0.6 "
            "to 1 x the evaluation short side, i.e. 480..800 as the original 3x recipe).",
        )
        group.add_argument(
            "--max-long-side",
            type=int,
            help="Cap on the long side in training (default: the processor's, 1333 at short side 800).",
        )
        group.add_argument(
            "--hflip", action=argparse.BooleanOptionalAction, default=True, help="Random horizontal flips."
        )
        group.add_argument(
            "--ignore-masks",
            action="store_true",
            help="Train boxes only even if the dataset has segmentations (the mask heads are frozen).",
        )
        add_sync_batch_norm_argument(group)
        group.add_argument(
            "--predict-threshold",
            type=float,
            default=0.5,
            help="Score threshold of the detections --predict-examples prints (default: %(default)s).",
        )

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        # The original's optimisation (Swin-style mmdetection 3x): AdamW lr 1e-4, weight decay 0.05, 2 images per
        # GPU, 36 epochs with the rate x0.1 after epochs 27 and 33, linear warm-up, no gradient clipping.
        return {
            "learning_rate": 1e-4,
            "weight_decay": 0.05,
            "lr_scheduler_type": "step",
            "warmup_ratio": 0.01,
            "num_epochs": 36,
            "per_device_train_batch_size": 2,
            "max_grad_norm": 0.0,
        }

    def _load_annotated_splits(self) -> tuple[DatasetSource, datasets.DatasetDict, ObjectFields]:
        """The dataset with only its image (renamed `image`, undecoded), objects and size columns; splits without
        images or objects (e.g. an unannotated test split) are left out."""
        args = self.args
        source = load_dataset_source(args.dataset, args.dataset_config, args.dataset_revision)
        splits = source.dataset
        reference = splits[args.train_split] if args.train_split in splits else next(iter(splits.values()))
        fields = find_object_fields(reference, args.objects_column, use_masks=not args.ignore_masks)
        image_column = find_image_column(reference, args.image_column, exclude=(fields.column,))
        dsd = datasets.DatasetDict(
            {
                split: rows.select_columns(
                    [image_column, fields.column] + [c for c in ("width", "height") if c in rows.column_names]
                ).rename_columns({image_column: "image"} if image_column != "image" else {})
                for split, rows in source.dataset.items()
                if image_column in rows.column_names and fields.column in rows.column_names
            }
        )
        return source, undecoded_images(dsd, "image"), fields

    def _scales(self) -> tuple[list[int], int]:
        """The training short sides and long-side cap, from the options and the processor's test scale."""
        args = self.args
        try:
            short_side, long_side = processor_scale(self.processor)
            low, high = args.train_short_sides or (int(round(MIN_SCALE_FRACTION * short_side)), short_side)
            short_sides = multiscale_short_sides(low, high, SHORT_SIDE_STEP)
        except ValueError as error:
            raise FinetuneError(f"{error}. Check --train-short-sides, or the model's image processor.") from None
        return short_sides, args.max_long_side or long_side

    def setup(self, accelerator: Accelerator) -> None:
        args = self.args
        if args.gradient_checkpointing:
            raise FinetuneError("--gradient-checkpointing is not supported by Cascade Mask R-CNN; leave it out.")
        source, dsd, fields = self._load_annotated_splits()
        self.fields, self.categories = fields, find_categories(dsd, fields)
        self.label_names = self.categories.names
        self.use_masks = fields.segmentation is not None

        splits = prepare_splits(dsd, args, ["image"])
        reports = [
            scan_annotations(rows, fields, self.categories, args.box_format, split)
            for rows, split in ((splits.train, splits.train_split), (splits.validation, splits.validation_split))
        ]
        for report in reports:
            report.log()
        train_rows = drop_rows_without_objects(splits.train, reports[0])
        kept_rows = [row for row, count in enumerate(reports[0].objects) if count]
        check_not_empty(train_rows, f"{splits.train_split} (after leaving out the images without objects)")
        eval_rows = splits.validation
        self.test_rows = splits.test if splits.test is not None else eval_rows

        self.model, self.processor, self.base_model = build_detection_model(args, self.label_names)
        if not self.use_masks:
            logger.info("The dataset has no instance masks: training boxes only; the mask heads are frozen.")
            self.model.roi_heads.mask_heads.requires_grad_(False)
        self.model = sync_batch_norm(self.model, accelerator, args.sync_batch_norm)

        self.short_sides, self.max_long_side = self._scales()
        common = {"fields": fields, "categories": self.categories, "box_format": args.box_format}
        train_transform = detection_train_transform(self.processor, self.short_sides, self.max_long_side, args.hflip)
        self.train_dataset = ExampleDataset(
            train_rows,
            DetectionExample(**common, split=splits.train_split, transform=train_transform, training=True,
                             use_masks=self.use_masks,
                             row_numbers=kept_rows if len(train_rows) < len(splits.train) else None),  # fmt: skip
            seed=args.seed,
        )
        eval_transform = detection_eval_transform(self.processor)
        self.eval_dataset = ExampleDataset(
            eval_rows,
            DetectionExample(**common, split=splits.validation_split, transform=eval_transform, training=False,
                             use_masks=self.use_masks),  # fmt: skip
        )
        self.collator = DetectionCollator(getattr(self.processor, "size_divisor", None) or 32)
        self.metric = load_metric("coco_map")
        self.dataset_info = DatasetInfo(
            name=source.name,
            hub_id=source.hub_id,
            kind=source.kind,
            train_split=splits.train_split,
            train_rows=len(train_rows),
            validation_split=splits.validation_split,
            validation=splits.validation_description,
            validation_rows=len(eval_rows),
            details={
                "categories": len(self.label_names),
                "instance masks": "yes" if self.use_masks else "no (boxes only)",
                "images without objects left out of training": len(reports[0].empty_rows),
                "label names": self.label_names,
            },
        )

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collator(examples)

    def training_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], labels=batch["labels"]).loss

    def eval_outputs(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Per image, plain Python (gathered with `gather_object`): the detections in original-image pixels (masks
        as RLE) and the reference."""
        sizes = batch["original_sizes"]
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], original_sizes=sizes)
        if self.use_masks:
            results = self.processor.post_process_instance_segmentation(outputs, threshold=None, target_sizes=sizes)
        else:
            results = self.processor.post_process_object_detection(outputs, threshold=None, target_sizes=sizes)
        per_image = []
        for result, reference in zip(results, batch["references"]):
            prediction = {
                "image_id": reference["image_id"],
                "boxes": result["boxes"].float().cpu().tolist(),
                "scores": result["scores"].float().cpu().tolist(),
                "labels": result["labels"].cpu().tolist(),
                "masks": encode_masks(result["masks"].cpu().numpy()) if self.use_masks else None,
            }
            per_image.append({"prediction": prediction, "reference": reference})
        return per_image

    def new_evaluator(self) -> Evaluator:
        return DetectionEvaluator(self.metric)

    def hyperparameters(self) -> dict[str, Any]:
        short_side, long_side = processor_scale(self.processor)
        return {
            "box_format": self.args.box_format,
            "train_short_sides": self.short_sides,
            "train_max_long_side": self.max_long_side,
            "eval_scale": f"short side {short_side}, long side <= {long_side}",
            "horizontal_flip": self.args.hflip,
            "instance_masks": self.use_masks,
            "sync_batch_norm": self.args.sync_batch_norm,
        }

    def predict_examples(self, model_dir: Path, count: int) -> list[str]:
        from transformers import pipeline

        # transformers' pipeline checks a static list of model names and logs an error for registered models
        quiet = logging.getLogger("transformers.pipelines.base")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            detector = pipeline(self.pipeline_task, model=str(model_dir), device="cpu")
        finally:
            quiet.setLevel(level)
        rows = self.test_rows.select(range(min(count, len(self.test_rows))))
        lines = []
        for index, row in enumerate(rows):
            image = decode_image(row["image"], index, "test")
            truth = [
                self.label_names[self.categories.encode(value, "test", index)]
                for value in as_object_columns(row[self.fields.column]).get(self.fields.category) or []
            ]
            found = [
                f"{d['label']} {d['score']:.0%} at ({d['box']['xmin']}, {d['box']['ymin']}, {d['box']['xmax']}, "
                f"{d['box']['ymax']})"
                for d in detector(image, threshold=self.args.predict_threshold)
            ]
            lines.append(
                f"  held-out image {index}: true {', '.join(truth) or 'nothing'} -> "
                + ("; ".join(found) or f"nothing above {self.args.predict_threshold:g}")
            )
        return lines

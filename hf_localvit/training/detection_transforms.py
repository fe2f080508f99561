"""Detection preprocessing: box-aware training augmentation (torchvision transforms v2 on `tv_tensors`), evaluation
images exactly as the model's image processor (and so `pipeline`) prepares them, and the collate that pads a batch
as the processor does and writes the DETR-format `labels` the model takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

from ..models.cascade_mask_rcnn.losses_cascade_mask_rcnn import MIN_GT_BOX_SIDE
from .transforms import ProcessorTransform, processor_interpolation, to_normalized_tensor


def multiscale_short_sides(low: int, high: int, step: int) -> list[int]:
    """The short sides a multi-scale schedule samples from: `low`, `low + step`, ... up to `high` (included)."""
    if not 0 < low <= high:
        raise ValueError(f"the short-side range must satisfy 0 < MIN <= MAX, got {low} {high}")
    sides = list(range(low, high + 1, max(step, 1)))
    return sides if sides[-1] == high else [*sides, high]


def processor_scale(processor: Any) -> tuple[int, int]:
    """(short side, long side cap) of a keep-ratio image processor (`shortest_edge`, `longest_edge`)."""
    size = processor.size
    shortest = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    longest = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    if not shortest or not longest:
        raise ValueError(
            f"The image processor resizes to {size}; detection expects a keep-ratio processor with 'shortest_edge' "
            "and 'longest_edge' (as mmdetection's img_scale=(1333, 800))."
        )
    return int(shortest), int(longest)


def detection_train_transform(
    processor: Any, short_sides: Sequence[int], max_long_side: int, hflip: bool = True
) -> v2.Compose:
    """mmdetection's multi-scale training pipeline on a sample dict (`image`, `boxes` `BoundingBoxes`, `labels`,
    optional `masks` `Mask`): keep-ratio resize with the short side drawn from `short_sides` and the long side at most
    `max_long_side` (bilinear without antialiasing, as the processor), random horizontal flip, boxes clamped to the
    image and those under one pixel removed with their labels and masks, then the processor's normalisation."""
    steps: list[torch.nn.Module] = [
        v2.RandomShortestSize(
            list(short_sides), max_size=max_long_side, interpolation=processor_interpolation(processor), antialias=False
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=MIN_GT_BOX_SIDE),  # finds `labels` in the sample dict
    ]
    steps += to_normalized_tensor(processor)
    return v2.Compose(steps)


def make_sample(
    image: Any, boxes: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None
) -> dict[str, Any]:
    """The sample dict the training transform takes: x1y1x2y2 pixel boxes on `image`'s canvas."""
    canvas = tv_tensors.Image(v2.functional.pil_to_tensor(image)) if not torch.is_tensor(image) else image
    sample = {
        "image": tv_tensors.Image(canvas),
        "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4), format="XYXY", canvas_size=tuple(canvas.shape[-2:])),
        "labels": labels,
    }
    if masks is not None:
        sample["masks"] = tv_tensors.Mask(masks)
    return sample


def detection_eval_transform(processor: Any) -> ProcessorTransform:
    """The image processor itself on one image (resize and normalise, not padded: the collate pads the batch), so
    evaluation sees exactly what `pipeline` gives the model."""
    return ProcessorTransform(processor, do_pad=False)


def pad_images(images: Sequence[torch.Tensor], size_divisor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (C, h, w) images bottom/right to the batch's largest size rounded up to `size_divisor` (the
    processor's `Pad`): `pixel_values` and `pixel_mask` (1 on each image)."""
    divisor = max(int(size_divisor or 1), 1)
    height = -(-max(image.shape[-2] for image in images) // divisor) * divisor
    width = -(-max(image.shape[-1] for image in images) // divisor) * divisor
    pixel_values = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.long)
    for index, image in enumerate(images):
        h, w = image.shape[-2:]
        pixel_values[index, :, :h, :w] = image
        pixel_mask[index, :h, :w] = 1
    return pixel_values, pixel_mask


class DetectionCollator:
    """Examples -> `pixel_values`, `pixel_mask`, and for training DETR-format `labels` (per image `class_labels`,
    `(cx, cy, w, h)` `boxes` normalised by the padded size, `masks` padded to it); for evaluation `original_sizes`
    and the per-image `references` (ground truth in original-image coordinates)."""

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        pixel_values, pixel_mask = pad_images([example["pixel_values"] for example in examples], self.size_divisor)
        batch: dict[str, Any] = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        height, width = pixel_values.shape[-2:]
        if "boxes" in examples[0]:
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            labels = []
            for example in examples:
                boxes = example["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
                target = {"class_labels": example["class_labels"], "boxes": box_convert(boxes, "xyxy", "cxcywh") / scale}
                masks = example.get("masks")
                if masks is not None:
                    masks = masks.as_subclass(torch.Tensor)
                    target["masks"] = F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))
                labels.append(target)
            batch["labels"] = labels
        if "reference" in examples[0]:
            batch["original_sizes"] = torch.tensor([example["original_size"] for example in examples], dtype=torch.long)
            batch["references"] = [example["reference"] for example in examples]
        return batch

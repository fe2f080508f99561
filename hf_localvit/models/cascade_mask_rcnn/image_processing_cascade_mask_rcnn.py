"""Image processor of Cascade Mask R-CNN: mmdetection's test pipeline in front, exact post-processing behind.

Preprocessing (mmdetection's `Resize(img_scale=(1333, 800), keep_ratio=True)`, `Normalize`, `Pad(size_divisor=32)`):
the image is scaled by `min(1333 / long side, 800 / short side)` with sizes rounded as mmcv does
(`int(side * scale + 0.5)`), bilinearly without antialiasing (OpenCV's `INTER_LINEAR`), normalised with ImageNet's
mean/std on 0-255 values, and the batch is zero-padded bottom/right to a multiple of 32. `pixel_mask` marks each
image's valid region and `original_sizes` its size before resizing.

Annotations (COCO detection format) are converted as `DetrImageProcessor` does (the `labels` the model takes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.models.detr.image_processing_detr import DetrImageProcessor, DetrImageProcessorKwargs

from .ops_cascade_mask_rcnn import paste_masks

# mmdetection's `img_norm_cfg` for ImageNet-pretrained backbones, on 0-255 RGB values.
MMDET_IMAGENET_MEAN = [123.675, 116.28, 103.53]
MMDET_IMAGENET_STD = [58.395, 57.12, 57.375]
INSTANCES_ONLY = "Cascade Mask R-CNN predicts instances; use post_process_instance_segmentation."


class CascadeMaskRCNNImageProcessorKwargs(DetrImageProcessorKwargs, total=False):
    r"""
    size_divisor (`int`, *optional*, defaults to 32):
        The padded batch's height and width are rounded up to a multiple of this.
    """

    size_divisor: int


class _NotProvided:
    """Hides an inherited method: `hasattr` is False, so transformers' pipelines do not pick it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        raise AttributeError(f"{owner.__name__ if owner else 'This processor'} has no {self.name}: {self.reason}")


def mmcv_rescaled_size(height: int, width: int, long_edge: int, short_edge: int) -> tuple[int, int]:
    """mmcv's `rescale_size` for a `(long_edge, short_edge)` scale: `(new_height, new_width)`."""
    scale = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


class CascadeMaskRCNNImageProcessor(DetrImageProcessor):
    r"""
    Constructs a Cascade Mask R-CNN image processor (mmdetection's test pipeline).

    `size={"shortest_edge": 800, "longest_edge": 1333}` is read as mmdetection's `img_scale=(1333, 800)` with
    `keep_ratio=True`: the image is scaled by `min(1333 / long side, 800 / short side)`. Outputs `pixel_values`,
    `pixel_mask` (1 on each image's valid region) and `original_sizes` (height, width before resizing).
    """

    valid_kwargs = CascadeMaskRCNNImageProcessorKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = MMDET_IMAGENET_MEAN
    image_std = MMDET_IMAGENET_STD
    do_rescale = False
    rescale_factor = 1.0
    do_normalize = True
    do_pad = True
    size_divisor = 32
    model_input_names = ["pixel_values", "pixel_mask", "original_sizes"]

    # DETR's semantic/panoptic post-processing reads DETR outputs; this model has neither.
    post_process_semantic_segmentation = _NotProvided(INSTANCES_ONLY)
    post_process_panoptic_segmentation = _NotProvided(INSTANCES_ONLY)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("size", {"shortest_edge": 800, "longest_edge": 1333})
        kwargs.setdefault("do_convert_annotations", True)
        super().__init__(**kwargs)

    # -------------------------------------------------------------------------------------------- preprocessing
    def resize(self, image: torch.Tensor, size: SizeDict, resample=None, **kwargs) -> torch.Tensor:
        """Keep-ratio resize with mmcv's size rule (`shortest_edge`/`longest_edge`), bilinear without antialiasing;
        `{"height", "width"}` resizes to exactly that size."""
        if size.shortest_edge and size.longest_edge:
            new_height, new_width = mmcv_rescaled_size(*image.shape[-2:], size.longest_edge, size.shortest_edge)
        elif size.height and size.width:
            new_height, new_width = size.height, size.width
        else:
            raise ValueError(f"size must have 'shortest_edge' and 'longest_edge', or 'height' and 'width'; got {size}.")
        if (new_height, new_width) == tuple(image.shape[-2:]):
            return image
        return super(DetrImageProcessor, self).resize(
            image, size=SizeDict(height=new_height, width=new_width), resample=resample, antialias=False
        )

    def pad(self, image, padded_size, annotation=None, update_bboxes=True, fill=0):
        """Pad bottom/right to `padded_size` rounded up to a multiple of `size_divisor` (mmdetection's `Pad`)."""
        divisor = self.size_divisor or 1
        padded_size = tuple(int(math.ceil(side / divisor) * divisor) for side in padded_size)
        return super().pad(image, padded_size, annotation=annotation, update_bboxes=update_bboxes, fill=fill)

    def _preprocess(self, images, annotations, *args, **kwargs) -> BatchFeature:
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        encoded = super()._preprocess(images, annotations, *args, **kwargs)
        return_tensors = kwargs.get("return_tensors")
        if return_tensors is not None:
            encoded["original_sizes"] = torch.tensor(original_sizes, dtype=torch.long)
        else:
            encoded["original_sizes"] = [list(size) for size in original_sizes]
        return encoded

    # ------------------------------------------------------------------------------------------ post-processing
    @staticmethod
    def _scales(outputs, target_sizes, batch_size: int) -> list[torch.Tensor | None]:
        """Per image, (w, h, w, h) = valid size / target size as float32 (mmdetection's `scale_factor`), or None."""
        if target_sizes is None:
            return [None] * batch_size
        if len(target_sizes) != batch_size:
            raise ValueError(
                f"target_sizes has {len(target_sizes)} entries for {batch_size} images: give one (height, width) each."
            )
        image_sizes = outputs.image_sizes
        scales = []
        for (valid_h, valid_w), target in zip(image_sizes.tolist(), target_sizes):
            target_h, target_w = (int(v) for v in (target.tolist() if torch.is_tensor(target) else target))
            if target_h <= 0 or target_w <= 0:
                raise ValueError(f"target size must be a positive (height, width), got {(target_h, target_w)}.")
            scales.append(
                torch.tensor(
                    [valid_w / target_w, valid_h / target_h, valid_w / target_w, valid_h / target_h], dtype=torch.float32
                )
            )
        return scales

    def post_process_object_detection(self, outputs, threshold: float | None = 0.5, target_sizes=None):
        """Detections per image as `{"scores", "labels", "boxes"}`; boxes (x1, y1, x2, y2) in pixels of
        `target_sizes[i]` (the original image; mapped from the valid region as mmdetection divides by its
        `scale_factor`), or of the model input when `target_sizes` is None. Keeps scores above `threshold`
        (the model already applied `config.box_score_threshold`)."""
        if outputs.pred_boxes is None:
            raise ValueError("The outputs hold no detections: run the model in eval mode (model.eval()).")
        batch_size = len(outputs.pred_boxes)
        results = []
        for boxes, scores, labels, scale in zip(
            outputs.pred_boxes, outputs.scores, outputs.labels, self._scales(outputs, target_sizes, batch_size)
        ):
            keep = scores > threshold if threshold is not None else torch.ones_like(scores, dtype=torch.bool)
            boxes = boxes[keep]
            if scale is not None:
                boxes = boxes / scale.to(boxes)
            results.append({"scores": scores[keep], "labels": labels[keep], "boxes": boxes})
        return results

    def post_process_instance_segmentation(
        self,
        outputs,
        threshold: float | None = 0.5,
        mask_threshold: float = 0.5,
        target_sizes=None,
        return_binary_maps: bool = True,
        **kwargs,
    ) -> list[dict[str, Any]]:
        """Instances per image: `scores`, `labels`, `boxes` (as `post_process_object_detection`), `masks`
        ((k, height, width) bool at the target size: mmdetection's `_do_paste_mask` then `>= mask_threshold`), and
        for transformers' image-segmentation pipeline a `segmentation` map ((height, width) int, -1 = background;
        where instances overlap the higher score wins) with `segments_info` (`id`, `label_id`, `score`,
        `was_fused`). Other keyword arguments of DETR's signature (e.g. `overlap_mask_area_threshold`) are ignored."""
        if outputs.pred_masks is None:
            raise ValueError("The outputs hold no masks: run the model in eval mode (model.eval()).")
        detections = self.post_process_object_detection(outputs, threshold=threshold, target_sizes=target_sizes)
        batch_size = len(detections)
        scales = self._scales(outputs, target_sizes, batch_size)
        results = []
        for index, (detection, scale) in enumerate(zip(detections, scales)):
            scores = outputs.scores[index]
            keep = scores > threshold if threshold is not None else torch.ones_like(scores, dtype=torch.bool)
            mask_probabilities = outputs.pred_masks[index][keep]
            if scale is not None:
                height, width = (int(v) for v in (torch.as_tensor(target_sizes[index]).tolist()))
                # mmdetection pastes at `(det_bboxes * scale_factor) / scale_factor`; same float32 arithmetic here
                paste_boxes = detection["boxes"] * scale.to(detection["boxes"]) / scale.to(detection["boxes"])
            else:
                height, width = (int(v) for v in outputs.image_sizes[index].tolist())
                paste_boxes = detection["boxes"]
            masks = paste_masks(mask_probabilities, paste_boxes, height, width, threshold=mask_threshold)
            segmentation = torch.full((height, width), -1, dtype=torch.int32, device=masks.device)
            segments_info = []
            order = torch.argsort(detection["scores"], stable=True)  # low to high: the best is painted last
            for instance in order.tolist():
                segmentation[masks[instance]] = instance
            for instance in range(masks.shape[0]):
                segments_info.append(
                    {
                        "id": instance,
                        "label_id": int(detection["labels"][instance]),
                        "score": float(detection["scores"][instance]),
                        "was_fused": False,
                    }
                )
            result = {**detection, "segmentation": segmentation, "segments_info": segments_info}
            if return_binary_maps:
                result["masks"] = masks
            results.append(result)
        return results


__all__ = ["CascadeMaskRCNNImageProcessor", "MMDET_IMAGENET_MEAN", "MMDET_IMAGENET_STD", "mmcv_rescaled_size"]

"""Joint image/annotation transforms for semantic segmentation (torchvision transforms v2 with `tv_tensors.Mask`).

Training follows the mmsegmentation pipeline of the original DWNet ADE20K models: random rescale of the processor's
resize scale by a ratio in [0.5, 2.0], random crop (retried while one class fills more than 75% of it), horizontal
flip, photometric distortion, normalisation, and padding to the crop size (the image with 0 after normalisation, the
annotation with the ignore index). Annotations are always resampled with NEAREST, so they keep their class values.
Evaluation preprocesses the image exactly as the saved image processor (and therefore `pipeline`) does and leaves
the annotation at its original size: the logits are resized to it before the metric, as mmsegmentation evaluates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from ..models.upernet_dwnet import keep_ratio_size
from .transforms import eval_transform, processor_interpolation, to_normalized_tensor


def resized_size(size: dict[str, int], height: int, width: int, ratio: float = 1.0) -> tuple[int, int]:
    """The output size of an image processor's resize rule (`size`), with the rule's scale multiplied by `ratio`
    (mmseg's `int(scale * ratio)`): keep-ratio within `longest_edge` x `shortest_edge` (mmcv's rescale), shortest
    edge only, or a fixed height and width."""
    if size.get("shortest_edge") and size.get("longest_edge"):
        return keep_ratio_size(height, width, int(size["longest_edge"] * ratio), int(size["shortest_edge"] * ratio))
    if size.get("height") and size.get("width"):
        return int(size["height"] * ratio), int(size["width"] * ratio)
    if size.get("shortest_edge"):
        scale = int(size["shortest_edge"] * ratio) / min(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)
    raise ValueError(
        f"Unsupported image processor size {size}: expected shortest_edge and longest_edge, height and width, or "
        "shortest_edge."
    )


def processor_size(processor: Any) -> dict[str, int] | None:
    """The processor's resize rule as a plain dict, or None when it does not resize."""
    config = processor.to_dict()
    if not config.get("do_resize", True):
        return None
    return {key: int(value) for key, value in (config.get("size") or {}).items() if value}


def _first(flat_inputs: list[Any], kind: type) -> Any:
    return next(item for item in flat_inputs if isinstance(item, kind))


class RandomRescale(v2.Transform):
    """Resize to the processor's rule at a random fraction `ratio_range` of its scale (mmseg's `Resize` with
    `ratio_range`); without a rule (`size=None`), the image's own size is scaled. Masks are resampled with NEAREST.
    Bilinear resampling does not antialias, as OpenCV's in the original pipeline."""

    def __init__(
        self,
        size: dict[str, int] | None,
        ratio_range: Sequence[float] = (0.5, 2.0),
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ) -> None:
        super().__init__()
        self.size = size
        self.ratio_range = tuple(ratio_range)
        self.interpolation = interpolation

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.functional.get_size(_first(flat_inputs, tv_tensors.Image))
        low, high = self.ratio_range
        ratio = low + float(torch.rand(())) * (high - low)
        if self.size is None:
            return {"size": [max(int(height * ratio), 1), max(int(width * ratio), 1)]}
        return {"size": [max(side, 1) for side in resized_size(self.size, height, width, ratio)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(
            v2.functional.resize, inpt, params["size"], interpolation=self.interpolation, antialias=False
        )


class RandomSegmentationCrop(v2.Transform):
    """mmseg's `RandomCrop`: a random window of `size` (or the whole side where the image is smaller; `PadTo`
    fills up later), drawn again (up to 10 times) while one class covers `cat_max_ratio` or more of the window's
    labelled pixels, so crops are not all sky or wall."""

    def __init__(self, size: tuple[int, int], cat_max_ratio: float = 0.75, ignore_index: int = 255) -> None:
        super().__init__()
        self.size = size
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        mask = _first(flat_inputs, tv_tensors.Mask)
        height, width = mask.shape[-2:]
        crop_height, crop_width = min(self.size[0], height), min(self.size[1], width)
        for _ in range(10):
            top = int(torch.randint(0, height - crop_height + 1, ()))
            left = int(torch.randint(0, width - crop_width + 1, ()))
            if self.cat_max_ratio >= 1.0:
                break
            window = mask[..., top : top + crop_height, left : left + crop_width]
            _, counts = torch.unique(window[window != self.ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum():
                break
        return {"top": top, "left": left, "height": crop_height, "width": crop_width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.crop, inpt, **params)


class PhotometricDistortion(v2.Transform):
    """mmseg's `PhotoMetricDistortion` on uint8 images, each step with probability 0.5: brightness + U(-32, 32),
    contrast x U(0.5, 1.5) (before or after the colour steps, at random), saturation x U(0.5, 1.5), hue shift of up to
    18 of 180 degrees. Masks pass through."""

    _transformed_types = (tv_tensors.Image,)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def maybe(low: float, high: float) -> float | None:
            value = low + float(torch.rand(())) * (high - low)
            return value if float(torch.rand(())) < 0.5 else None

        return {
            "brightness": maybe(-32.0, 32.0),
            "contrast_first": float(torch.rand(())) < 0.5,
            "contrast": maybe(0.5, 1.5),
            "saturation": maybe(0.5, 1.5),
            "hue": maybe(-18.0, 18.0),
        }

    @staticmethod
    def _affine(image: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        return (image.float() * alpha + beta).clamp(0, 255).to(torch.uint8)  # truncates, as mmseg's astype(uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        image = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            image = self._affine(image, 1.0, params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            image = self._affine(image, params["contrast"], 0.0)
        if params["saturation"] is not None:
            image = v2.functional.adjust_saturation(image, params["saturation"])
        if params["hue"] is not None:
            image = v2.functional.adjust_hue(image, int(params["hue"]) / 180.0)
        if not params["contrast_first"] and params["contrast"] is not None:
            image = self._affine(image, params["contrast"], 0.0)
        return tv_tensors.wrap(image, like=inpt)


class PadTo(v2.Transform):
    """Pad at the bottom and right up to `size` (mmseg's `Pad` after a crop): images with 0, masks with
    `ignore_index`, so the padding counts in no loss."""

    def __init__(self, size: tuple[int, int], ignore_index: int = 255) -> None:
        super().__init__()
        self.size = size
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _first(flat_inputs, tv_tensors.Mask).shape[-2:]
        return {"padding": [0, 0, max(self.size[1] - width, 0), max(self.size[0] - height, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
        return self._call_kernel(v2.functional.pad, inpt, params["padding"], fill=fill)


def _as_tv_tensors(image: Image.Image, annotation: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    return tv_tensors.Image(v2.functional.pil_to_tensor(image)), tv_tensors.Mask(torch.from_numpy(annotation))


class SegmentationTrainTransform:
    """(PIL image, annotation array) -> (normalised image tensor, int64 label map), both `crop_size`."""

    def __init__(
        self,
        processor: Any,
        crop_size: tuple[int, int],
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        hflip: bool = True,
        photometric_distortion: bool = True,
        ignore_index: int = 255,
    ) -> None:
        steps: list[torch.nn.Module] = [
            RandomRescale(processor_size(processor), ratio_range, processor_interpolation(processor)),
            RandomSegmentationCrop(crop_size, cat_max_ratio, ignore_index),
        ]
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if photometric_distortion:
            steps.append(PhotometricDistortion())
        self.geometry = v2.Compose(steps)
        self.normalize = v2.Compose(to_normalized_tensor(processor))  # images only
        self.pad = PadTo(crop_size, ignore_index)

    def __call__(self, image: Image.Image, annotation: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.geometry(*_as_tv_tensors(image, annotation))
        image, mask = self.pad(self.normalize(image), mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


class SegmentationEvalTransform:
    """(PIL image, annotation array) -> (the processor's pixel values, the annotation at its original size)."""

    def __init__(self, processor: Any) -> None:
        self.image_transform = eval_transform(processor)

    def __call__(self, image: Image.Image, annotation: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = self.image_transform(image)
        return pixel_values.as_subclass(torch.Tensor), torch.from_numpy(annotation).long()


__all__ = [
    "PadTo",
    "PhotometricDistortion",
    "RandomRescale",
    "RandomSegmentationCrop",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "processor_size",
    "resized_size",
]

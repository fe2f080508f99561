"""torchvision transforms v2 built from a model's image processor, so training and evaluation preprocess images
exactly as the saved processor (and therefore `pipeline`) will at inference."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from transformers.image_utils import PILImageResampling

_INTERPOLATION = {
    PILImageResampling.NEAREST: InterpolationMode.NEAREST,
    PILImageResampling.BILINEAR: InterpolationMode.BILINEAR,
    PILImageResampling.BICUBIC: InterpolationMode.BICUBIC,
    PILImageResampling.LANCZOS: InterpolationMode.LANCZOS,
    PILImageResampling.BOX: InterpolationMode.BOX,
    PILImageResampling.HAMMING: InterpolationMode.HAMMING,
}


def _plain(value: Any) -> Any:
    """transformers keeps sizes as `SizeDict` objects; turn those into plain dicts without the unset keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: item for key, item in dataclasses.asdict(value).items() if item is not None}
    return value


def _get(processor: Any, name: str, default: Any = None) -> Any:
    value = _plain(getattr(processor, name, default))
    return default if value is None else value


def processor_interpolation(processor: Any) -> InterpolationMode:
    resample = _get(processor, "resample", PILImageResampling.BILINEAR)
    if isinstance(resample, InterpolationMode):
        return resample
    return _INTERPOLATION.get(PILImageResampling(int(resample)), InterpolationMode.BILINEAR)


def _size_pair(size: Any) -> tuple[int, int] | None:
    if isinstance(size, dict) and size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    return None


class ProcessorCenterCrop(torch.nn.Module):
    """Centre crop with the image processors' offsets (`int((size - crop) / 2)`), which can differ by a pixel from
    `v2.CenterCrop`'s rounding; pads with zeros when the image is smaller than the crop, as they do."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Any) -> Any:
        height, width = v2.functional.get_size(image)
        crop_height, crop_width = self.size
        if crop_height > height or crop_width > width:
            pad_left = max(crop_width - width, 0) // 2
            pad_top = max(crop_height - height, 0) // 2
            padding = [pad_left, pad_top, max(crop_width - width, 0) - pad_left, max(crop_height - height, 0) - pad_top]
            image = v2.functional.pad(image, padding, fill=0)
            height, width = v2.functional.get_size(image)
        top, left = int((height - crop_height) / 2.0), int((width - crop_width) / 2.0)
        return v2.functional.crop(image, top, left, crop_height, crop_width)


def processor_geometry(processor: Any) -> list[torch.nn.Module] | None:
    """The resize/crop steps of `processor` as v2 transforms, or None for a processor this does not understand."""
    interpolation = processor_interpolation(processor)
    size = _get(processor, "size", {})
    steps: list[torch.nn.Module] = []
    if _get(processor, "do_resize", True):
        shortest_edge = size.get("shortest_edge") if isinstance(size, dict) else None
        crop_pct = getattr(processor, "crop_pct", None)
        if shortest_edge and crop_pct is not None:  # ConvNeXt-style (the DWNet processor)
            if shortest_edge < 384:
                steps += [
                    v2.Resize(int(shortest_edge / crop_pct), interpolation=interpolation, antialias=True),
                    ProcessorCenterCrop((shortest_edge, shortest_edge)),
                ]
            else:
                steps.append(v2.Resize((shortest_edge, shortest_edge), interpolation=interpolation, antialias=True))
        elif shortest_edge and not size.get("longest_edge"):
            steps.append(v2.Resize(int(shortest_edge), interpolation=interpolation, antialias=True))
        elif _size_pair(size):
            steps.append(v2.Resize(_size_pair(size), interpolation=interpolation, antialias=True))
        else:
            return None
    if _get(processor, "do_center_crop", False):
        crop = _size_pair(_get(processor, "crop_size", {}))
        if crop is None:
            return None
        steps.append(ProcessorCenterCrop(crop))
    return steps


def processor_output_size(processor: Any) -> tuple[int, int]:
    """Height and width of the images the processor produces (the model's training resolution)."""
    if _get(processor, "do_center_crop", False) and _size_pair(_get(processor, "crop_size", {})):
        return _size_pair(_get(processor, "crop_size"))
    size = _get(processor, "size", {})
    if _size_pair(size):
        return _size_pair(size)
    if isinstance(size, dict) and size.get("shortest_edge"):
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError(f"Cannot tell the output size of image processor {type(processor).__name__} (size={size}).")


class Multiply(torch.nn.Module):
    """Multiply a tensor image by a constant (a rescale factor other than 1/255); picklable for data workers."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.factor


def to_normalized_tensor(processor: Any) -> list[torch.nn.Module]:
    """PIL image to a float tensor, rescaled and normalised as the processor does."""
    steps: list[torch.nn.Module] = [v2.ToImage()]
    if _get(processor, "do_rescale", True):
        steps.append(v2.ToDtype(torch.float32, scale=True))
        factor = float(_get(processor, "rescale_factor", 1 / 255))
        if abs(factor * 255 - 1) > 1e-6:
            steps.append(Multiply(factor * 255))
    else:
        steps.append(v2.ToDtype(torch.float32, scale=False))
    if _get(processor, "do_normalize", True):
        steps.append(v2.Normalize(mean=list(processor.image_mean), std=list(processor.image_std)))
    return steps


def _resizes_with_pil(processor: Any) -> bool:
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:  # older transformers: slow processors resize with PIL
        return True
    return isinstance(processor, PilBackend)


class ProcessorTransform:
    """Fallback evaluation transform: run the image processor itself on one image (with `processor_kwargs`, e.g.
    `do_pad=False` for detection, whose collate pads the batch)."""

    def __init__(self, processor: Any, **processor_kwargs: Any) -> None:
        self.processor = processor
        self.processor_kwargs = processor_kwargs

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt", **self.processor_kwargs)["pixel_values"][0]


def eval_transform(processor: Any) -> Any:
    """Evaluation transform equal to `processor` on a PIL RGB image: v2 resize/crop/normalise, or the processor
    itself when its resize rule is not one of the known ones."""
    geometry = processor_geometry(processor)
    if geometry is None:
        return ProcessorTransform(processor)
    if not _resizes_with_pil(processor):
        geometry = [v2.ToImage()] + geometry  # torchvision-backend processors resize uint8 tensors, not PIL images
    return v2.Compose(geometry + to_normalized_tensor(processor))


def classification_train_transform(
    processor: Any,
    crop_scale: Sequence[float] = (0.08, 1.0),
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    auto_augment: str = "none",
    color_jitter: float = 0.0,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """Training augmentation at the processor's output size with its interpolation and normalisation."""
    interpolation = processor_interpolation(processor)
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(
            processor_output_size(processor),
            scale=tuple(crop_scale),
            ratio=tuple(crop_ratio),
            interpolation=interpolation,
            antialias=True,
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if auto_augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    elif auto_augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=interpolation))
    elif auto_augment == "autoaugment":
        steps.append(v2.AutoAugment(interpolation=interpolation))
    elif auto_augment != "none":
        raise ValueError(f"Unknown auto augmentation {auto_augment!r}: use none, trivial, randaugment or autoaugment.")
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps += to_normalized_tensor(processor)
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing))
    return v2.Compose(steps)


def batch_mixing(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> Any | None:
    """v2 `MixUp` and/or `CutMix` (one picked at random per batch when both are on), or None when both are off."""
    mixers = []
    if mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

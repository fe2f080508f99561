"""The original DWNet evaluation transform, expressed with an existing transformers image processor."""

from __future__ import annotations

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

ORIGINAL_CROP_PCT = 0.875


def dwnet_image_processor(image_size: int = 224, crop_pct: float = ORIGINAL_CROP_PCT) -> ConvNextImageProcessorPil:
    """Shorter side to `int(image_size / crop_pct)` (256 for 224) with PIL bicubic, centre crop `image_size`,
    scale to [0, 1], ImageNet mean/std: the original timm evaluation transform.

    ConvNeXt's processor applies `crop_pct` exactly this way for sizes below 384; the PIL backend resizes with PIL
    like the original's torchvision `Resize` on PIL images.
    """
    return ConvNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_pct=crop_pct,
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )

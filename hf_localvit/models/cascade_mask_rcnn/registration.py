"""Register Cascade Mask R-CNN with transformers' Auto classes (config, detection/segmentation models, processor)."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageSegmentation,
    AutoModelForInstanceSegmentation,
    AutoModelForObjectDetection,
)

from .configuration_cascade_mask_rcnn import CascadeMaskRCNNConfig
from .image_processing_cascade_mask_rcnn import CascadeMaskRCNNImageProcessor
from .modeling_cascade_mask_rcnn import CascadeMaskRCNNForInstanceSegmentation


def register_cascade_mask_rcnn_auto_classes() -> None:
    """Map `model_type="cascade_mask_rcnn"` to our classes (idempotent): `AutoConfig`, `AutoModelForObjectDetection`
    `AutoModelForInstanceSegmentation` and `AutoModelForImageSegmentation` (so `pipeline("object-detection", ...)`
    and `pipeline("image-segmentation", ..., subtask="instance")` load a folder) and `AutoImageProcessor`."""
    AutoConfig.register(CascadeMaskRCNNConfig.model_type, CascadeMaskRCNNConfig, exist_ok=True)
    AutoModelForObjectDetection.register(CascadeMaskRCNNConfig, CascadeMaskRCNNForInstanceSegmentation, exist_ok=True)
    for auto_class in (AutoModelForInstanceSegmentation, AutoModelForImageSegmentation):
        auto_class.register(CascadeMaskRCNNConfig, CascadeMaskRCNNForInstanceSegmentation, exist_ok=True)
    AutoImageProcessor.register(
        CascadeMaskRCNNConfig, image_processor_classes={"torchvision": CascadeMaskRCNNImageProcessor}, exist_ok=True
    )

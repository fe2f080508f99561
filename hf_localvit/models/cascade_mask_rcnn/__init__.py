"""Cascade Mask R-CNN (mmdetection 2.x semantics) with any `AutoBackbone`, DWNet-T by default."""

from .configuration_cascade_mask_rcnn import (
    CASCADE_MASK_RCNN_PRESETS,
    COCO_CLASSES,
    COCO_ID2LABEL,
    CascadeMaskRCNNConfig,
    cascade_mask_rcnn_preset_config,
)
from .image_processing_cascade_mask_rcnn import CascadeMaskRCNNImageProcessor
from .modeling_cascade_mask_rcnn import (
    CascadeMaskRCNNForInstanceSegmentation,
    CascadeMaskRCNNOutput,
    CascadeMaskRCNNPreTrainedModel,
)
from .registration import register_cascade_mask_rcnn_auto_classes

__all__ = [
    "CASCADE_MASK_RCNN_PRESETS",
    "COCO_CLASSES",
    "COCO_ID2LABEL",
    "CascadeMaskRCNNConfig",
    "CascadeMaskRCNNForInstanceSegmentation",
    "CascadeMaskRCNNImageProcessor",
    "CascadeMaskRCNNOutput",
    "CascadeMaskRCNNPreTrainedModel",
    "cascade_mask_rcnn_preset_config",
    "register_cascade_mask_rcnn_auto_classes",
]

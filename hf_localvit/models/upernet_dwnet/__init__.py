"""UperNet + DWNet semantic segmentation: transformers' `UperNetForSemanticSegmentation` with a `DWNetBackbone`,
the original ADE20K presets, test-time image processor and class names. `heads.py` says how transformers' heads
relate to mmsegmentation's (identical at inference)."""

from .ade20k import ADE20K_CLASSES, ade20k_id2label
from .configuration_upernet_dwnet import (
    ADE20K_NUM_LABELS,
    SEGMENTATION_DROP_PATH_RATE,
    UPERNET_DWNET_PRESETS,
    UPERNET_HEAD_DEFAULTS,
    upernet_dwnet_config,
    upernet_dwnet_preset_config,
    upernet_preset_for_backbone,
)
from .heads import ORIGINAL_HEAD_DROPOUT, add_original_head_dropout
from .image_processing_upernet_dwnet import (
    DWNetSegmentationImageProcessor,
    keep_ratio_size,
    upernet_dwnet_image_processor,
)
from .registration import register_upernet_dwnet

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_NUM_LABELS",
    "DWNetSegmentationImageProcessor",
    "ORIGINAL_HEAD_DROPOUT",
    "SEGMENTATION_DROP_PATH_RATE",
    "UPERNET_DWNET_PRESETS",
    "UPERNET_HEAD_DEFAULTS",
    "add_original_head_dropout",
    "ade20k_id2label",
    "keep_ratio_size",
    "register_upernet_dwnet",
    "upernet_dwnet_config",
    "upernet_dwnet_image_processor",
    "upernet_dwnet_preset_config",
    "upernet_preset_for_backbone",
]

"""hf-localvit: the DWNet family (Han et al., ICLR 2022) as Hugging Face transformers models.

Importing this package registers every config and model with the transformers Auto classes.
"""

from .auto_registration import register_auto_classes
from .compat import patch_auto_backbone_local_loading
from .models.dwnet import (
    DOWNSTREAM_FLAVOUR,
    DWNET_PRESETS,
    DWNetBackbone,
    DWNetConfig,
    DWNetForImageClassification,
    DWNetModel,
    DWNetPreTrainedModel,
    dwnet_image_processor,
    dwnet_preset_config,
)

register_auto_classes()
patch_auto_backbone_local_loading()

__version__ = "0.1.0"

__all__ = [
    "DOWNSTREAM_FLAVOUR",
    "DWNET_PRESETS",
    "DWNetBackbone",
    "DWNetConfig",
    "DWNetForImageClassification",
    "DWNetModel",
    "DWNetPreTrainedModel",
    "dwnet_image_processor",
    "dwnet_preset_config",
]

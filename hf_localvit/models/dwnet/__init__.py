"""DWNet: configuration, models and preprocessing."""

from .configuration_dwnet import DOWNSTREAM_FLAVOUR, DWNET_PRESETS, DWNetConfig, dwnet_preset_config
from .modeling_dwnet import DWNetBackbone, DWNetForImageClassification, DWNetModel, DWNetPreTrainedModel
from .preprocessing_dwnet import dwnet_image_processor

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

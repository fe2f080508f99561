"""Register hf-localvit's configs and models with transformers' Auto classes (local and remote-code)."""

from __future__ import annotations

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
)

from .models.dwnet import DWNetBackbone, DWNetConfig, DWNetForImageClassification, DWNetModel
from .models.cascade_mask_rcnn import register_cascade_mask_rcnn_auto_classes
from .models.upernet_dwnet import register_upernet_dwnet


def register_auto_classes() -> None:
    """Map `model_type="dwnet"` to our classes, and mark them for remote code so `save_pretrained` writes the
    code files and `auto_map` that `trust_remote_code=True` needs."""
    AutoConfig.register(DWNetConfig.model_type, DWNetConfig, exist_ok=True)
    for auto_class, model_class in (
        (AutoModel, DWNetModel),
        (AutoModelForImageClassification, DWNetForImageClassification),
        (AutoBackbone, DWNetBackbone),
    ):
        auto_class.register(DWNetConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)
    DWNetConfig.register_for_auto_class()
    register_upernet_dwnet()
    register_cascade_mask_rcnn_auto_classes()

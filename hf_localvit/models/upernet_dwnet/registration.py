"""Make converted UperNet-DWNet folders loadable by the Auto classes and `pipeline`.

`UperNetForSemanticSegmentation` and `AutoModelForSemanticSegmentation` need nothing beyond the DWNet registration
(`model_type="dwnet"` with `AutoConfig` / `AutoBackbone`) that `import hf_localvit` already does. The image
processor does: `AutoImageProcessor` resolves `"image_processor_type": "DWNetSegmentationImageProcessor"` only among
registered classes, and registration is keyed by a config class. It is keyed by `DWNetConfig` (no DWNet model
has another image processor registered, and the classifiers' `preprocessor_config.json` names its own class), so
the built-in UperNet mapping (Segformer's processor) is left untouched.
"""

from __future__ import annotations

from transformers import AutoImageProcessor

from ..dwnet import DWNetConfig
from .image_processing_upernet_dwnet import DWNetSegmentationImageProcessor


def register_upernet_dwnet() -> None:
    """Register `DWNetSegmentationImageProcessor` with `AutoImageProcessor` (idempotent)."""
    AutoImageProcessor.register(
        DWNetConfig, image_processor_classes={"torchvision": DWNetSegmentationImageProcessor}, exist_ok=True
    )

"""UperNet + DWNet: transformers' `UperNetConfig` with a downstream-flavour `DWNetConfig` backbone, and the presets
of the original work's four ADE20K models.

No config or model class is added: `UperNetForSemanticSegmentation` builds the DWNet backbone through
`AutoBackbone.from_config`, which works once `hf_localvit` is imported (it registers `model_type="dwnet"`).
"""

from __future__ import annotations

from typing import Any

from transformers import UperNetConfig

from ..dwnet import DWNetConfig, dwnet_preset_config
from .ade20k import ade20k_id2label

ADE20K_NUM_LABELS = 150

# The original `configs/_base_/models/upernet_dwnet.py` + `configs/dwnet/upernet_*_ade20k.py`: UPerHead with 512
# channels and pool scales (1, 2, 3, 6) on all four stages; FCN auxiliary head (one 3x3 conv, 256 channels, no
# concat) on stage 3 with loss weight 0.4; ignore index 255; backbone stochastic depth 0.3 for all four models.
UPERNET_HEAD_DEFAULTS: dict[str, Any] = {
    "hidden_size": 512,
    "pool_scales": [1, 2, 3, 6],
    "use_auxiliary_head": True,
    "auxiliary_loss_weight": 0.4,
    "auxiliary_in_channels": None,
    "auxiliary_channels": 256,
    "auxiliary_num_convs": 1,
    "auxiliary_concat_input": False,
    "loss_ignore_index": 255,
}
SEGMENTATION_DROP_PATH_RATE = 0.3

# preset -> (DWNet backbone preset, ADE20K single-scale mIoU of the original work)
UPERNET_DWNET_PRESETS: dict[str, dict[str, Any]] = {
    "upernet-dwnet-tiny": {"backbone": "dwnet-tiny", "ade20k_miou": 45.5},
    "upernet-dynamic-dwnet-tiny": {"backbone": "dynamic-dwnet-tiny", "ade20k_miou": 45.7},
    "upernet-dwnet-base": {"backbone": "dwnet-base", "ade20k_miou": 48.3},
    "upernet-dynamic-dwnet-base": {"backbone": "dynamic-dwnet-base", "ade20k_miou": 48.0},
}


def upernet_dwnet_config(
    backbone_config: DWNetConfig, num_labels: int = ADE20K_NUM_LABELS, **overrides: Any
) -> UperNetConfig:
    """An `UperNetConfig` around `backbone_config` with the original head settings (`UPERNET_HEAD_DEFAULTS`).

    `num_labels=150` gets the ADE20K class names as `id2label` unless `id2label` is given; other counts get
    `LABEL_i` unless `id2label` is given. Any `UperNetConfig` field can be overridden.
    """
    if not isinstance(backbone_config, DWNetConfig):
        raise TypeError(f"backbone_config must be a DWNetConfig, got {type(backbone_config).__name__}.")
    if len(backbone_config.out_features) != len(backbone_config.depths):
        raise ValueError(
            f"UperNet needs every DWNet stage as a feature map; the backbone returns {backbone_config.out_features}. "
            "Use dwnet_preset_config(name, downstream=True) or out_features=['stage1', ..., 'stage4']."
        )
    kwargs = {**UPERNET_HEAD_DEFAULTS, **overrides}
    id2label = kwargs.pop("id2label", None)
    if id2label is None:
        id2label = (
            ade20k_id2label() if num_labels == ADE20K_NUM_LABELS else {i: f"LABEL_{i}" for i in range(num_labels)}
        )
    id2label = {int(index): name for index, name in id2label.items()}
    if len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels is {num_labels}.")
    return UperNetConfig(
        backbone_config=backbone_config,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        **kwargs,
    )


def upernet_dwnet_preset_config(name: str, num_labels: int = ADE20K_NUM_LABELS, **overrides: Any) -> UperNetConfig:
    """The config of a named preset (`upernet-dwnet-tiny`, ...): ADE20K's 150 classes by default.

    `backbone_overrides={...}` changes DWNet fields (e.g. `drop_path_rate`); other keyword arguments go to
    `UperNetConfig` (e.g. `id2label`, `hidden_size`).
    """
    if name not in UPERNET_DWNET_PRESETS:
        available = ", ".join(UPERNET_DWNET_PRESETS)
        raise ValueError(f"Unknown UperNet-DWNet preset {name!r}. Available presets: {available}.")
    backbone_overrides = {"drop_path_rate": SEGMENTATION_DROP_PATH_RATE, **overrides.pop("backbone_overrides", {})}
    backbone = dwnet_preset_config(UPERNET_DWNET_PRESETS[name]["backbone"], downstream=True, **backbone_overrides)
    return upernet_dwnet_config(backbone, num_labels=num_labels, **overrides)


def upernet_preset_for_backbone(backbone_preset: str | None) -> str | None:
    """The UperNet preset whose backbone is the DWNet preset `backbone_preset`, if any."""
    return next((name for name, p in UPERNET_DWNET_PRESETS.items() if p["backbone"] == backbone_preset), None)


__all__ = [
    "ADE20K_NUM_LABELS",
    "SEGMENTATION_DROP_PATH_RATE",
    "UPERNET_DWNET_PRESETS",
    "UPERNET_HEAD_DEFAULTS",
    "upernet_dwnet_config",
    "upernet_dwnet_preset_config",
    "upernet_preset_for_backbone",
]

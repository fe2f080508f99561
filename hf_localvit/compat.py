"""Narrow workarounds for transformers behaviour that breaks documented use of our models.

`AutoBackbone.from_pretrained` (transformers 5.x) first asks the Hub whether the name is a repository and treats
anything else as a timm model name. A local folder is never a Hub repository, and offline the question cannot be
asked, so `AutoBackbone.from_pretrained("./dwnet-backbone")` fails with a repo-id validation error. We route local
folders, and every name when `HF_HUB_OFFLINE` is set, straight to the regular Auto loading; all other names keep
transformers' own behaviour.
"""

from __future__ import annotations

import os

from huggingface_hub import constants
from transformers import AutoBackbone
from transformers.models.auto.auto_factory import _BaseAutoModelClass

_PATCH_MARKER = "_hf_localvit_local_folder_fix"


def _load_locally(name_or_path: object) -> bool:
    return os.path.isdir(str(name_or_path)) or constants.HF_HUB_OFFLINE


def patch_auto_backbone_local_loading() -> None:
    """Make `AutoBackbone.from_pretrained` accept local folders and cached ids offline (idempotent)."""
    original = AutoBackbone.from_pretrained.__func__
    if getattr(original, _PATCH_MARKER, False):
        return

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if _load_locally(pretrained_model_name_or_path):
            kwargs.pop("use_timm_backbone", None)
            return _BaseAutoModelClass.from_pretrained.__func__(
                cls, str(pretrained_model_name_or_path), *model_args, **kwargs
            )
        return original(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    setattr(from_pretrained, _PATCH_MARKER, True)
    from_pretrained.__doc__ = original.__doc__
    AutoBackbone.from_pretrained = classmethod(from_pretrained)

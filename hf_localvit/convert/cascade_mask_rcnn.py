"""Convert mmdetection Cascade Mask R-CNN + DWNet checkpoints (the paper's COCO models) to transformers.

    python conversion/convert_cascade_mask_rcnn_dwnet_to_hf.py --checkpoint cascade_mask_rcnn_dwnet_tiny.pth \
        --output-dir cascade-mask-rcnn-dwnet-tiny-coco [--push-to-hub USER/REPO]

Keys: `backbone.*` (converted by the DWNet rules), `neck.*`, `rpn_head.*`, `roi_head.bbox_head.{i}.*`,
`roi_head.mask_head.{i}.*`. The architecture (widths, depths, mixer, head sizes, classes) is read off the keys and
shapes; every key must map to exactly one model weight of the same shape or nothing is written.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..models.cascade_mask_rcnn import (
    COCO_ID2LABEL,
    CascadeMaskRCNNConfig,
    CascadeMaskRCNNForInstanceSegmentation,
    CascadeMaskRCNNImageProcessor,
)
from ..models.dwnet import DWNET_PRESETS
from .cli_common import converter_parser, run_converter
from .checkpoint_io import atomic_output_dir, load_original_checkpoint, resolve_checkpoint_path
from .dwnet import (
    BACKBONE_RULES,
    DWNET_RULES,
    RESHAPABLE,
    build_config,
    infer_dwnet_architecture,
    split_downstream_backbone,
)
from .key_mapping import ConversionError, RenameRule, load_strictly, match_shapes, rename_state_dict

BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
BOX = r"roi_head\.bbox_head\.(\d+)\."
MASK = r"roi_head\.mask_head\.(\d+)\."
# mmdetection key (outside the backbone) -> our key.
HEAD_RULES = [
    RenameRule(r"neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)", r"neck.fpn.inner_blocks.\1.0.\2"),
    RenameRule(r"neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)", r"neck.fpn.layer_blocks.\1.0.\2"),
    RenameRule(r"rpn_head\.rpn_conv\.(weight|bias)", r"rpn_head.conv.\1"),
    RenameRule(r"rpn_head\.rpn_cls\.(weight|bias)", r"rpn_head.objectness_logits.\1"),
    RenameRule(r"rpn_head\.rpn_reg\.(weight|bias)", r"rpn_head.box_deltas.\1"),
    RenameRule(BOX + r"shared_convs\.(\d+)\.conv\.(weight|bias)", r"roi_heads.box_heads.\1.convs.\2.conv.\3"),
    RenameRule(BOX + r"shared_convs\.(\d+)\.bn\." + BN, r"roi_heads.box_heads.\1.convs.\2.norm.\3"),
    RenameRule(BOX + r"shared_fcs\.(\d+)\.(weight|bias)", r"roi_heads.box_heads.\1.fcs.\2.\3"),
    RenameRule(BOX + r"fc_cls\.(weight|bias)", r"roi_heads.box_heads.\1.classifier.\2"),
    RenameRule(BOX + r"fc_reg\.(weight|bias)", r"roi_heads.box_heads.\1.regressor.\2"),
    RenameRule(MASK + r"convs\.(\d+)\.conv\.(weight|bias)", r"roi_heads.mask_heads.\1.convs.\2.conv.\3"),
    RenameRule(MASK + r"upsample\.(weight|bias)", r"roi_heads.mask_heads.\1.upsample.\2"),
    RenameRule(MASK + r"conv_logits\.(weight|bias)", r"roi_heads.mask_heads.\1.mask_logits.\2"),
]
HEAD_PREFIXES = ("neck.", "rpn_head.", "roi_head.")
# Parts of other mmdetection heads this converter does not model: named in the error instead of "unexpected key".
UNSUPPORTED = {
    r"roi_head\.bbox_head\.\d+\.(cls|reg)_(convs|fcs)\..*": "separate cls/reg branches (only shared convs/fcs are supported)",
    r"roi_head\.semantic_head\..*": "an HTC semantic head",
    r"neck\.fpn_convs\.[4-9]\..*": "FPN extra levels made by convs (add_extra_convs); only max-pooled levels are supported",
    r"roi_head\.mask_head\.\d+\.convs\.\d+\.bn\..*": "normalised mask-head convs",
}


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m[1]) for key in state_dict if (m := re.match(pattern, key))})


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ConversionError(f"Missing key {key!r}: the checkpoint is not a complete Cascade Mask R-CNN.")
    return tuple(state_dict[key].shape)


def _one_value(values: list, what: str):
    if len(set(values)) != 1:
        raise ConversionError(f"The cascade stages disagree on {what} ({values}); only identical stages are supported.")
    return values[0]


def infer_head_config_kwargs(state_dict: Mapping[str, torch.Tensor], backbone_channels: list[int]) -> dict:
    """Read the neck, RPN and cascade head sizes off an mmdetection state dict."""
    for pattern, what in UNSUPPORTED.items():
        found = [key for key in state_dict if re.fullmatch(pattern, key)]
        if found:
            raise ConversionError(f"The checkpoint has {what} (e.g. {found[0]!r}); this converter cannot map it.")
    laterals = _indices(state_dict, r"neck\.lateral_convs\.(\d+)\.")
    if not laterals:
        raise ConversionError("No 'neck.lateral_convs.*' keys: this is not an mmdetection FPN checkpoint.")
    fpn_channels, first_in = _shape(state_dict, "neck.lateral_convs.0.conv.weight")[:2]
    lateral_inputs = [_shape(state_dict, f"neck.lateral_convs.{i}.conv.weight")[1] for i in laterals]
    if lateral_inputs != list(backbone_channels):
        raise ConversionError(
            f"The FPN takes {lateral_inputs} channels but the backbone gives {list(backbone_channels)}: the neck does "
            "not belong to this backbone."
        )
    rpn_feat = _shape(state_dict, "rpn_head.rpn_conv.weight")[0]
    anchors = _shape(state_dict, "rpn_head.rpn_cls.weight")[0]
    if _shape(state_dict, "rpn_head.rpn_reg.weight")[0] != 4 * anchors:
        raise ConversionError(
            "rpn_head.rpn_cls has {anchors} outputs but rpn_reg {regs}: only a sigmoid RPN (one logit per anchor) is "
            "supported.".format(anchors=anchors, regs=_shape(state_dict, "rpn_head.rpn_reg.weight")[0])
        )
    stages = _indices(state_dict, BOX)
    if _indices(state_dict, MASK) != stages:
        raise ConversionError(f"Box heads {stages} and mask heads {_indices(state_dict, MASK)} do not pair up.")
    if stages != list(range(len(stages))) or len(stages) != 3:
        raise ConversionError(
            f"Found cascade stages {stages}; the IoU thresholds and box-coder stds of the checkpoint are only known "
            "for the 3-stage Cascade R-CNN of the paper."
        )
    convs, conv_channels, norms, fcs, fc_channels, classes, agnostic, roi_sizes = ([] for _ in range(8))
    mask_convs, mask_channels, mask_agnostic = [], [], []
    for stage in stages:
        prefix = f"roi_head.bbox_head.{stage}."
        stage_convs = _indices(state_dict, re.escape(prefix) + r"shared_convs\.(\d+)\.")
        stage_fcs = _indices(state_dict, re.escape(prefix) + r"shared_fcs\.(\d+)\.")
        convs.append(len(stage_convs))
        fcs.append(len(stage_fcs))
        channels = _shape(state_dict, f"{prefix}shared_convs.0.conv.weight")[0] if stage_convs else fpn_channels
        conv_channels.append(channels)
        norms.append("batch_norm" if f"{prefix}shared_convs.0.bn.weight" in state_dict else "none")
        if not stage_fcs:
            raise ConversionError(f"{prefix}shared_fcs is missing: box heads without fcs are not supported.")
        fc_out, fc_in = _shape(state_dict, f"{prefix}shared_fcs.0.weight")
        fc_channels.append(fc_out)
        side = int(round((fc_in / channels) ** 0.5))
        if side * side * channels != fc_in:
            raise ConversionError(f"{prefix}shared_fcs.0 takes {fc_in} inputs, not a square RoI of {channels} channels.")
        roi_sizes.append(side)
        num_classes = _shape(state_dict, f"{prefix}fc_cls.weight")[0] - 1
        classes.append(num_classes)
        regression = _shape(state_dict, f"{prefix}fc_reg.weight")[0]
        if regression not in (4, 4 * num_classes):
            raise ConversionError(f"{prefix}fc_reg has {regression} outputs for {num_classes} classes.")
        agnostic.append(regression == 4)
        mask_prefix = f"roi_head.mask_head.{stage}."
        mask_convs.append(len(_indices(state_dict, re.escape(mask_prefix) + r"convs\.(\d+)\.")))
        mask_channels.append(_shape(state_dict, f"{mask_prefix}upsample.weight")[0])
        logits = _shape(state_dict, f"{mask_prefix}conv_logits.weight")[0]
        if logits not in (1, num_classes):
            raise ConversionError(f"{mask_prefix}conv_logits has {logits} maps for {num_classes} classes.")
        mask_agnostic.append(logits == 1)
    num_classes = _one_value(classes, "the number of classes")
    kwargs = {
        "fpn_out_channels": fpn_channels,
        "num_fpn_levels": len(laterals) + 1,
        "rpn_feat_channels": rpn_feat,
        "box_head_num_convs": _one_value(convs, "box-head convs"),
        "box_head_conv_channels": _one_value(conv_channels, "box-head conv channels"),
        "box_head_norm": _one_value(norms, "box-head norms"),
        "box_head_num_fcs": _one_value(fcs, "box-head fcs"),
        "box_head_fc_channels": _one_value(fc_channels, "box-head fc channels"),
        "box_roi_size": _one_value(roi_sizes, "the RoI size"),
        "box_reg_class_agnostic": _one_value(agnostic, "class-agnostic regression"),
        "mask_head_num_convs": _one_value(mask_convs, "mask-head convs"),
        "mask_head_channels": _one_value(mask_channels, "mask-head channels"),
        "mask_class_agnostic": _one_value(mask_agnostic, "class-agnostic masks"),
    }
    if anchors != 3:
        raise ConversionError(
            f"The RPN predicts {anchors} anchors per position; the paper's config has 3 (ratios 0.5/1/2, scale 8). "
            "Other anchor setups cannot be read off the checkpoint."
        )
    if num_classes == len(COCO_ID2LABEL):
        kwargs["id2label"] = dict(COCO_ID2LABEL)
    else:
        kwargs["num_labels"] = num_classes
    return kwargs


def _backbone_channels(backbone_config) -> list[int]:
    stages = backbone_config.stage_names
    return [backbone_config.hidden_sizes[stages.index(name) - 1] for name in backbone_config.out_features]


def convert_cascade_mask_rcnn_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_name: str | None = None
) -> CascadeMaskRCNNForInstanceSegmentation:
    """Build `CascadeMaskRCNNForInstanceSegmentation` for an mmdetection state dict and load it strictly."""
    backbone_state, is_downstream = split_downstream_backbone(state_dict)
    if not is_downstream:
        raise ConversionError(
            "No 'backbone.*' keys: this is not a whole mmdetection detector checkpoint (for an ImageNet DWNet "
            "checkpoint use convert_dwnet_to_hf.py)."
        )
    if not any(key.startswith("roi_head.") for key in state_dict):
        raise ConversionError("No 'roi_head.*' keys: this checkpoint has no Cascade R-CNN heads.")
    backbone_config = build_config(infer_dwnet_architecture(backbone_state, is_downstream=True), model_name)
    head_state = {key: value for key, value in state_dict.items() if not key.startswith("backbone.")}
    config = CascadeMaskRCNNConfig(
        backbone_config=backbone_config,
        **infer_head_config_kwargs(head_state, _backbone_channels(backbone_config)),
    )
    model = CascadeMaskRCNNForInstanceSegmentation(config)

    backbone_renamed, backbone_unmatched = rename_state_dict(backbone_state, DWNET_RULES + BACKBONE_RULES)
    head_renamed, head_unmatched = rename_state_dict(head_state, HEAD_RULES)
    renamed = {f"backbone.{key}": value for key, value in backbone_renamed.items()}
    renamed.update(head_renamed)
    unmatched = [f"backbone.{key}" for key in backbone_unmatched] + head_unmatched
    renamed = match_shapes(
        model,
        renamed,
        reshape_allowed=lambda key: key.startswith("backbone.") and bool(RESHAPABLE.fullmatch(key[len("backbone.") :])),
    )
    load_strictly(model, renamed, unmatched)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def convert_cascade_mask_rcnn_checkpoint(
    checkpoint: str,
    output_dir: str | Path,
    model_name: str | None = None,
    allow_unsafe_pickle: bool = False,
    overwrite: bool = False,
) -> CascadeMaskRCNNForInstanceSegmentation:
    """Convert `checkpoint` (path or URL) and write `config.json`, `model.safetensors` and
    `preprocessor_config.json` into `output_dir`, all or nothing."""
    path = resolve_checkpoint_path(checkpoint)
    state_dict = load_original_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    model = convert_cascade_mask_rcnn_state_dict(state_dict, model_name=model_name)
    with atomic_output_dir(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        CascadeMaskRCNNImageProcessor().save_pretrained(staging)
    return model


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    # --model-name names the DWNet preset the backbone must match (e.g. dwnet-tiny).
    return converter_parser(prog, __doc__, "mmdetection", DWNET_PRESETS)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    def convert():
        return convert_cascade_mask_rcnn_checkpoint(
            args.checkpoint,
            args.output_dir,
            model_name=args.model_name,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
        )

    return run_converter(args, convert, describe=lambda model: type(model).__name__)


__all__ = [
    "HEAD_RULES",
    "build_parser",
    "convert_cascade_mask_rcnn_checkpoint",
    "convert_cascade_mask_rcnn_state_dict",
    "infer_head_config_kwargs",
    "main",
]

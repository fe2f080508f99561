"""Convert original DWNet checkpoints (classification trainer, or the backbone of mmdet/mmseg ones) to transformers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.dwnet import (
    DOWNSTREAM_FLAVOUR,
    DWNET_PRESETS,
    DWNetBackbone,
    DWNetConfig,
    DWNetForImageClassification,
    dwnet_image_processor,
)
from .checkpoint_io import atomic_output_dir, load_original_checkpoint, resolve_checkpoint_path
from .key_mapping import ConversionError, RenameRule, load_strictly, match_shapes, rename_state_dict

BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
OUR_BLOCK = r"encoder.stages.\1.layers.\2."
MIXING = OUR_BLOCK + "spatial_mixing."

# Original key (after any `backbone.` prefix) -> our key. Order matters: the first match wins.
DWNET_RULES = [
    RenameRule(r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.\1"),
    RenameRule(r"patch_embed\.norm\.(weight|bias)", r"embeddings.norm.\1"),
    RenameRule(BLOCK + r"attn2conv\.conv0\.weight", MIXING + "input_projection.weight"),
    RenameRule(BLOCK + r"attn2conv\.bn0\.(\w+)", MIXING + r"input_norm.\3"),
    # static depth-wise conv, and the dynamic conv's per-channel bias
    RenameRule(BLOCK + r"attn2conv\.conv\.(weight|bias)", MIXING + r"depthwise.\3"),
    # dynamic (homogeneous) kernel predictor
    RenameRule(BLOCK + r"attn2conv\.conv\.conv1\.weight", MIXING + "depthwise.reduce.weight"),
    RenameRule(BLOCK + r"attn2conv\.conv\.bn\.(\w+)", MIXING + r"depthwise.reduce_norm.\3"),
    RenameRule(BLOCK + r"attn2conv\.conv\.conv2\.(weight|bias)", MIXING + r"depthwise.expand.\3"),
    # inhomogeneous kernel predictor (nn.Sequential indices)
    RenameRule(BLOCK + r"attn2conv\.conv\.conv1\.0\.(weight|bias)", MIXING + r"depthwise.reduce.\3"),
    RenameRule(BLOCK + r"attn2conv\.conv\.conv1\.1\.(\w+)", MIXING + r"depthwise.reduce_norm.\3"),
    RenameRule(BLOCK + r"attn2conv\.conv\.conv2\.0\.(weight|bias)", MIXING + r"depthwise.expand.\3"),
    RenameRule(BLOCK + r"attn2conv\.bn\.(\w+)", MIXING + r"depthwise_norm.\3"),
    RenameRule(BLOCK + r"attn2conv\.conv2\.weight", MIXING + "output_projection.weight"),
    RenameRule(BLOCK + r"attn2conv\.bn2\.(\w+)", MIXING + r"output_norm.\3"),
    RenameRule(BLOCK + r"mlp\.fc([12])\.(weight|bias)", OUR_BLOCK + r"mlp.fc\3.\4"),
    RenameRule(BLOCK + r"bn\.(\w+)", OUR_BLOCK + r"mlp_norm.\3"),
    RenameRule(r"layers\.(\d+)\.downsample\.reduction\.weight", r"encoder.stages.\1.downsample.reduction.weight"),
    RenameRule(r"layers\.(\d+)\.downsample\.norm\.(weight|bias)", r"encoder.stages.\1.downsample.norm.\2"),
]
CLASSIFIER_RULES = [
    RenameRule(r"norm\.(weight|bias)", r"layernorm.\1"),
    RenameRule(r"head\.(weight|bias)", r"classifier.\1"),
]
# mmdet/mmseg backbones put a BatchNorm on each output stage: norm0 -> stage1, ...
BACKBONE_RULES = [
    RenameRule(r"norm(\d+)\.(\w+)", lambda match: f"hidden_states_norms.stage{int(match[1]) + 1}.{match[2]}"),
]
DOWNSTREAM_PREFIX = "backbone."
# Linear weights of the original become 1x1 convs here: only these keys may be reshaped.
RESHAPABLE = re.compile(r".*(mlp\.fc[12]\.weight|downsample\.reduction\.weight)")


@dataclass
class DWNetCheckpointInfo:
    """What the keys and shapes of an original checkpoint say about its architecture."""

    config_kwargs: dict
    is_downstream: bool
    preset_name: str | None


def split_downstream_backbone(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """The backbone part of an mmdet/mmseg checkpoint with the `backbone.` prefix removed, and whether it had one."""
    if any(key.startswith(DOWNSTREAM_PREFIX) for key in state_dict):
        return {k[len(DOWNSTREAM_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(DOWNSTREAM_PREFIX)}, True
    return dict(state_dict), False


def infer_inhomogeneous_kernel_size(widths: list[int], outputs: list[int]) -> int:
    """Each stage predicts `groups * k * k` values with `groups` dividing the stage width: the odd `k` (the paper
    uses 7) that explains every stage at once."""
    for kernel_size in (7, 5, 3, 9, 11, 13, 1):
        area = kernel_size**2
        if all(count % area == 0 and width % (count // area) == 0 for width, count in zip(widths, outputs)):
            return kernel_size
    raise ConversionError(
        f"Cannot read the kernel size of the inhomogeneous mixer: stage widths {widths}, predicted values {outputs}."
    )


def infer_dwnet_architecture(state_dict: Mapping[str, torch.Tensor], is_downstream: bool) -> DWNetCheckpointInfo:
    """Read embed dim, depths, mixer, kernel size, MLP ratio, reduction, groups and labels off the keys."""
    if "patch_embed.proj.weight" not in state_dict:
        raise ConversionError(
            "No 'patch_embed.proj.weight' key: this is not a DWNet checkpoint (first keys: "
            f"{', '.join(list(state_dict)[:5])})."
        )
    stem = state_dict["patch_embed.proj.weight"]
    embed_dim, num_channels, patch_size = stem.shape[0], stem.shape[1], stem.shape[-1]
    depths: dict[int, int] = {}
    for key in state_dict:
        match = re.match(BLOCK, key)
        if match:
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths or sorted(depths) != list(range(len(depths))):
        raise ConversionError(f"Could not read the stages from the keys (found stages {sorted(depths)}).")
    depth_list = [depths[stage] for stage in range(len(depths))]
    prefix = "layers.0.blocks.0.attn2conv.conv."
    fc1 = state_dict["layers.0.blocks.0.mlp.fc1.weight"]
    kwargs: dict = {
        "num_channels": num_channels,
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depths": depth_list,
        "mlp_ratio": fc1.shape[0] / fc1.shape[1],
    }
    if prefix + "weight" in state_dict:
        kwargs.update(mixer="static", kernel_size=state_dict[prefix + "weight"].shape[-1])
    elif prefix + "conv1.weight" in state_dict:
        reduced = state_dict[prefix + "conv1.weight"].shape[0]
        kernel_area = state_dict[prefix + "conv2.weight"].shape[0] // embed_dim
        kwargs.update(mixer="dynamic", dynamic_reduction=embed_dim // reduced, kernel_size=math.isqrt(kernel_area))
    elif prefix + "conv1.0.weight" in state_dict:
        reduced = state_dict[prefix + "conv1.0.weight"].shape[0]
        widths = [embed_dim * 2**index for index in range(len(depth_list))]
        outputs = [
            state_dict[f"layers.{stage}.blocks.0.attn2conv.conv.conv2.0.weight"].shape[0] for stage in range(len(widths))
        ]
        kernel_size = infer_inhomogeneous_kernel_size(widths, outputs)
        group_channels = [width // (count // kernel_size**2) for width, count in zip(widths, outputs)]
        kwargs.update(
            mixer="inhomogeneous",
            dynamic_reduction=embed_dim // reduced,
            kernel_size=kernel_size,
            inhomogeneous_group_channels=group_channels,
        )
    else:
        raise ConversionError(f"Unknown spatial mixer: none of the known keys under '{prefix}' are present.")
    if "head.weight" in state_dict:
        kwargs["num_labels"] = state_dict["head.weight"].shape[0]
    if is_downstream:
        kwargs.update(DOWNSTREAM_FLAVOUR)
        stages = sorted(int(m[1]) for key in state_dict if (m := re.fullmatch(r"norm(\d+)\.weight", key)))
        kwargs["out_features"] = [f"stage{stage + 1}" for stage in stages] or DOWNSTREAM_FLAVOUR["out_features"]
    preset_name = next(
        (
            name
            for name, preset in DWNET_PRESETS.items()
            if all(kwargs.get(key) == value for key, value in preset.items() if key != "drop_path_rate")
        ),
        None,
    )
    return DWNetCheckpointInfo(config_kwargs=kwargs, is_downstream=is_downstream, preset_name=preset_name)


def build_config(info: DWNetCheckpointInfo, model_name: str | None) -> DWNetConfig:
    """The config read off the checkpoint; with `model_name` the preset is used and must agree with the keys."""
    kwargs = dict(info.config_kwargs)
    if model_name is not None:
        if model_name not in DWNET_PRESETS:
            raise ConversionError(f"Unknown --model-name {model_name!r}. Choose one of {', '.join(DWNET_PRESETS)}.")
        preset = DWNET_PRESETS[model_name]
        conflicts = {
            key: (value, kwargs[key])
            for key, value in preset.items()
            if key in kwargs and key != "drop_path_rate" and kwargs[key] != value
        }
        if conflicts:
            details = "; ".join(f"{key}: preset {a!r}, checkpoint {b!r}" for key, (a, b) in conflicts.items())
            raise ConversionError(f"The checkpoint is not a {model_name}: {details}.")
        kwargs = {**preset, **kwargs}
    elif info.preset_name is not None:
        kwargs = {**DWNET_PRESETS[info.preset_name], **kwargs}
    return DWNetConfig(**kwargs)


def convert_dwnet_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_name: str | None = None, backbone_only: bool = False
) -> DWNetForImageClassification | DWNetBackbone:
    """Build the transformers model for an original state dict and load it strictly."""
    backbone_state, is_downstream = split_downstream_backbone(state_dict)
    if is_downstream and not backbone_only:
        raise ConversionError(
            "This is a detection/segmentation checkpoint (keys start with 'backbone.'). Pass --backbone-only to "
            "convert its DWNet backbone, or use the UperNet / Cascade Mask R-CNN converters for the whole model."
        )
    info = infer_dwnet_architecture(backbone_state, is_downstream)
    config = build_config(info, model_name)
    if backbone_only:
        model = DWNetBackbone(config)
        rules = DWNET_RULES + (BACKBONE_RULES if is_downstream else [])
        # A classification checkpoint has a final norm and head that a backbone does not use.
        unused = [] if is_downstream else [r"norm\.(weight|bias)", r"head\.(weight|bias)"]
        renamed, unmatched = rename_state_dict(backbone_state, rules, ignore=unused)
    else:
        model = DWNetForImageClassification(config)
        renamed, unmatched = rename_state_dict(backbone_state, DWNET_RULES + CLASSIFIER_RULES)
        renamed = {(key if key.startswith("classifier.") else f"dwnet.{key}"): value for key, value in renamed.items()}
    renamed = match_shapes(model, renamed, reshape_allowed=lambda key: bool(RESHAPABLE.fullmatch(key)))
    load_strictly(model, renamed, unmatched)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def convert_dwnet_checkpoint(
    checkpoint: str,
    output_dir: str | Path,
    model_name: str | None = None,
    backbone_only: bool = False,
    allow_unsafe_pickle: bool = False,
    overwrite: bool = False,
) -> DWNetForImageClassification | DWNetBackbone:
    """Convert `checkpoint` (path or URL) and write `config.json`, `model.safetensors`, the remote code and, for
    classifiers, `preprocessor_config.json` into `output_dir` — all or nothing."""
    path = resolve_checkpoint_path(checkpoint)
    state_dict = load_original_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    model = convert_dwnet_state_dict(state_dict, model_name=model_name, backbone_only=backbone_only)
    with atomic_output_dir(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        if not backbone_only:
            dwnet_image_processor(image_size=model.config.image_size).save_pretrained(staging)
    return model

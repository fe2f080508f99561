"""Convert mmsegmentation UperNet + DWNet checkpoints (`backbone.*`, `decode_head.*`, `auxiliary_head.*`) to
transformers' `UperNetForSemanticSegmentation` with a downstream-flavour `DWNetBackbone`.

    python conversion/convert_upernet_dwnet_to_hf.py --checkpoint upernet_dwnet_tiny.pth --output-dir upernet-dwnet-tiny
    python conversion/convert_upernet_dwnet_to_hf.py --checkpoint https://.../upernet_dynamic_dwnet_base.pth \\
        --output-dir upernet-dynamic-dwnet-base --model-name upernet-dynamic-dwnet-base \\
        --push-to-hub org/upernet-dynamic-dwnet-base

The backbone keys go through the DWNet converter's rules; the heads map one to one onto transformers' UperNet
(mmcv `ConvModule` `conv`/`bn` -> `conv`/`batch_norm`, `conv_seg` -> `classifier`). Architecture (widths, depths,
mixer, head channels, number of classes, auxiliary head layout) is read off the keys and shapes; the load is strict.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import UperNetConfig, UperNetForSemanticSegmentation

from ..models.dwnet import DWNET_PRESETS
from ..models.upernet_dwnet import (
    ADE20K_NUM_LABELS,
    SEGMENTATION_DROP_PATH_RATE,
    UPERNET_DWNET_PRESETS,
    UPERNET_HEAD_DEFAULTS,
    ade20k_id2label,
    register_upernet_dwnet,
    upernet_dwnet_config,
    upernet_dwnet_image_processor,
    upernet_preset_for_backbone,
)
from .cli_common import converter_parser, run_converter
from .checkpoint_io import atomic_output_dir, load_original_checkpoint, resolve_checkpoint_path
from .dwnet import (
    BACKBONE_RULES,
    DOWNSTREAM_PREFIX,
    DWNET_RULES,
    RESHAPABLE,
    build_config,
    infer_dwnet_architecture,
    split_downstream_backbone,
)
from .key_mapping import ConversionError, RenameRule, load_strictly, match_shapes, rename_state_dict

DECODE_PREFIX = "decode_head."
AUXILIARY_PREFIX = "auxiliary_head."
# mmcv ConvModules (conv without bias + BatchNorm + ReLU) of UPerHead and FCNHead, by their original names; the
# transformers modules have the same names and indices (`psp_modules.<i>.1` is the ConvModule after the pooling).
DECODE_CONV_MODULES = r"decode_head\.(psp_modules\.\d+\.1|bottleneck|lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck)"
AUXILIARY_CONV_MODULES = r"auxiliary_head\.(convs\.\d+|conv_cat)"
UPERNET_HEAD_RULES = [
    RenameRule(r"(decode_head|auxiliary_head)\.conv_seg\.(weight|bias)", r"\1.classifier.\2"),
    RenameRule(DECODE_CONV_MODULES + r"\.conv\.weight", r"decode_head.\1.conv.weight"),
    RenameRule(DECODE_CONV_MODULES + r"\.bn\.(\w+)", r"decode_head.\1.batch_norm.\2"),
    RenameRule(AUXILIARY_CONV_MODULES + r"\.conv\.weight", r"auxiliary_head.\1.conv.weight"),
    RenameRule(AUXILIARY_CONV_MODULES + r"\.bn\.(\w+)", r"auxiliary_head.\1.batch_norm.\2"),
]
# transformers' FCN auxiliary head reads backbone feature map 2 (stage 3) with 3x3 convs, like the original config.
AUXILIARY_IN_INDEX = 2
AUXILIARY_KERNEL_SIZE = 3


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m[1]) for key in state_dict if (m := re.fullmatch(pattern, key))})


def infer_upernet_heads(
    state_dict: Mapping[str, torch.Tensor], stage_widths: Sequence[int], pool_scales: Sequence[int] | None = None
) -> dict:
    """`UperNetConfig` keyword arguments read off the `decode_head.*` / `auxiliary_head.*` keys and shapes."""
    classifier = state_dict.get(DECODE_PREFIX + "conv_seg.weight")
    if classifier is None:
        raise ConversionError(
            "No 'decode_head.conv_seg.weight' key: this is not an mmsegmentation segmentor checkpoint. For a DWNet "
            "backbone alone use conversion/convert_dwnet_to_hf.py (--backbone-only)."
        )
    if DECODE_PREFIX + "fpn_bottleneck.conv.weight" not in state_dict or not _indices(
        state_dict, r"decode_head\.psp_modules\.(\d+)\.1\.conv\.weight"
    ):
        raise ConversionError(
            "The decode head is not mmsegmentation's UPerHead (no 'decode_head.psp_modules.*' / "
            "'decode_head.fpn_bottleneck.*' keys); only UperNet checkpoints can be converted."
        )
    num_labels, channels = classifier.shape[0], classifier.shape[1]
    num_pools = len(_indices(state_dict, r"decode_head\.psp_modules\.(\d+)\.1\.conv\.weight"))
    if pool_scales is None:
        pool_scales = UPERNET_HEAD_DEFAULTS["pool_scales"]
        if num_pools != len(pool_scales):
            raise ConversionError(
                f"The checkpoint's pyramid pooling module has {num_pools} branches, not the usual "
                f"{len(pool_scales)} ({tuple(pool_scales)}). Pooling scales have no weights, so give them with "
                "--pool-scales (as in the original config's decode_head.pool_scales)."
            )
    elif num_pools != len(pool_scales):
        raise ConversionError(
            f"--pool-scales {tuple(pool_scales)} has {len(pool_scales)} entries; the checkpoint has {num_pools} "
            "pooling branches."
        )
    kwargs: dict = {"num_labels": num_labels, "hidden_size": channels, "pool_scales": list(pool_scales)}

    aux_classifier = state_dict.get(AUXILIARY_PREFIX + "conv_seg.weight")
    if aux_classifier is None:
        if any(key.startswith(AUXILIARY_PREFIX) for key in state_dict):
            raise ConversionError(
                "The auxiliary head has no 'auxiliary_head.conv_seg.weight': the checkpoint is incomplete."
            )
        kwargs["use_auxiliary_head"] = False
        return kwargs
    if aux_classifier.shape[0] != num_labels:
        raise ConversionError(
            f"The auxiliary head predicts {aux_classifier.shape[0]} classes but the decode head {num_labels}."
        )
    aux_channels = aux_classifier.shape[1]
    conv_indices = _indices(state_dict, r"auxiliary_head\.convs\.(\d+)\.conv\.weight")
    if conv_indices != list(range(len(conv_indices))):
        raise ConversionError(f"The auxiliary head's convs are not numbered 0..n-1 (found {conv_indices}).")
    if conv_indices:
        first = state_dict[AUXILIARY_PREFIX + "convs.0.conv.weight"]
        aux_in_channels, kernel_size = first.shape[1], first.shape[-1]
        if kernel_size != AUXILIARY_KERNEL_SIZE:
            raise ConversionError(
                f"The auxiliary FCN head uses {kernel_size}x{kernel_size} convs; transformers' UperNet FCN head "
                f"only builds {AUXILIARY_KERNEL_SIZE}x{AUXILIARY_KERNEL_SIZE} ones."
            )
    else:
        aux_in_channels = aux_channels
    expected_in = stage_widths[AUXILIARY_IN_INDEX]
    if aux_in_channels != expected_in:
        raise ConversionError(
            f"The auxiliary head reads a {aux_in_channels}-channel feature map, but transformers' UperNet FCN head "
            f"always reads backbone stage {AUXILIARY_IN_INDEX + 1} ({expected_in} channels here): the original must "
            f"have used auxiliary_head.in_index={AUXILIARY_IN_INDEX}, which this checkpoint does not."
        )
    kwargs.update(
        use_auxiliary_head=True,
        auxiliary_channels=aux_channels,
        auxiliary_num_convs=len(conv_indices),
        auxiliary_concat_input=AUXILIARY_PREFIX + "conv_cat.conv.weight" in state_dict,
        auxiliary_in_channels=None,
    )
    return kwargs


def _label_names(num_labels: int, classes: Sequence[str] | None) -> dict[int, str]:
    """The checkpoint's own class names (mmcv `meta.CLASSES`) when they fit, else ADE20K's for 150 classes."""
    if classes is not None and len(classes) == num_labels:
        return {index: str(name).strip() for index, name in enumerate(classes)}
    if num_labels == ADE20K_NUM_LABELS:
        return ade20k_id2label()
    return {index: f"LABEL_{index}" for index in range(num_labels)}


def build_upernet_config(
    state_dict: Mapping[str, torch.Tensor],
    model_name: str | None = None,
    pool_scales: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> UperNetConfig:
    """The `UperNetConfig` (with its DWNet backbone config) described by an mmseg UperNet state dict."""
    backbone_state, has_backbone = split_downstream_backbone(state_dict)
    if not has_backbone:
        raise ConversionError(
            "No 'backbone.*' keys: this is not an mmsegmentation checkpoint (first keys: "
            f"{', '.join(list(state_dict)[:5])}). For ImageNet DWNet checkpoints use conversion/convert_dwnet_to_hf.py."
        )
    info = infer_dwnet_architecture(backbone_state, is_downstream=True)
    backbone_preset = None
    if model_name is not None:
        if model_name not in UPERNET_DWNET_PRESETS:
            choices = ", ".join(UPERNET_DWNET_PRESETS)
            raise ConversionError(f"Unknown --model-name {model_name!r}. Choose one of {choices}.")
        backbone_preset = UPERNET_DWNET_PRESETS[model_name]["backbone"]
    try:
        backbone_config = build_config(info, backbone_preset)
    except ConversionError as error:
        raise ConversionError(f"The backbone is not the one of {model_name}. {error}") from error
    if len(backbone_config.out_features) != len(backbone_config.depths):
        raise ConversionError(
            f"The backbone has output norms for {backbone_config.out_features} only; UperNet needs all "
            f"{len(backbone_config.depths)} stages (backbone.norm0 .. backbone.norm{len(backbone_config.depths) - 1})."
        )
    # Stochastic depth of all four original segmentation configs (the ImageNet presets use other rates).
    backbone_config.drop_path_rate = SEGMENTATION_DROP_PATH_RATE
    heads = infer_upernet_heads(state_dict, backbone_config.hidden_sizes, pool_scales)
    if model_name is not None:
        for key in ("hidden_size", "auxiliary_channels"):
            if heads.get(key, UPERNET_HEAD_DEFAULTS[key]) != UPERNET_HEAD_DEFAULTS[key]:
                raise ConversionError(
                    f"The checkpoint is not a {model_name}: {key} is {heads[key]}, the preset has "
                    f"{UPERNET_HEAD_DEFAULTS[key]}."
                )
    num_labels = heads.pop("num_labels")
    id2label = _label_names(num_labels, classes)
    return upernet_dwnet_config(backbone_config, num_labels=num_labels, id2label=id2label, **heads)


def convert_upernet_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_name: str | None = None,
    pool_scales: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> UperNetForSemanticSegmentation:
    """Build `UperNetForSemanticSegmentation` for an original mmseg state dict and load it strictly."""
    config = build_upernet_config(state_dict, model_name=model_name, pool_scales=pool_scales, classes=classes)
    backbone_state, _ = split_downstream_backbone(state_dict)
    renamed_backbone, unmatched_backbone = rename_state_dict(backbone_state, DWNET_RULES + BACKBONE_RULES)
    head_state = {key: value for key, value in state_dict.items() if not key.startswith(DOWNSTREAM_PREFIX)}
    renamed_heads, unmatched_heads = rename_state_dict(head_state, UPERNET_HEAD_RULES)
    renamed = {f"backbone.{key}": value for key, value in renamed_backbone.items()} | renamed_heads
    unmatched = [DOWNSTREAM_PREFIX + key for key in unmatched_backbone] + unmatched_heads

    model = UperNetForSemanticSegmentation(config)
    renamed = match_shapes(
        model, renamed, reshape_allowed=lambda key: key.startswith("backbone.") and bool(RESHAPABLE.fullmatch(key))
    )
    load_strictly(model, renamed, unmatched)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def read_checkpoint_classes(path: Path) -> tuple[str, ...] | None:
    """The class names mmcv stores in `meta.CLASSES`, if the file has them (read without loading the tensors)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be memory-mapped; the names are optional
        return None
    classes = checkpoint.get("meta", {}).get("CLASSES") if isinstance(checkpoint, dict) else None
    if isinstance(classes, (list, tuple)) and all(isinstance(name, str) for name in classes):
        return tuple(classes)
    return None


def convert_upernet_checkpoint(
    checkpoint: str,
    output_dir: str | Path,
    model_name: str | None = None,
    pool_scales: Sequence[int] | None = None,
    do_reduce_labels: bool | None = None,
    allow_unsafe_pickle: bool = False,
    overwrite: bool = False,
) -> UperNetForSemanticSegmentation:
    """Convert `checkpoint` (path or URL) and write `config.json`, `model.safetensors` and
    `preprocessor_config.json` (the original test pipeline) into `output_dir` — all or nothing.

    `do_reduce_labels` (for annotations given to the image processor) defaults to True for 150 classes (ADE20K's
    `reduce_zero_label=True`) and False otherwise.
    """
    register_upernet_dwnet()
    path = resolve_checkpoint_path(checkpoint)
    state_dict = load_original_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    classes = read_checkpoint_classes(path)
    model = convert_upernet_state_dict(state_dict, model_name=model_name, pool_scales=pool_scales, classes=classes)
    if do_reduce_labels is None:
        do_reduce_labels = model.config.num_labels == ADE20K_NUM_LABELS
    with atomic_output_dir(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        upernet_dwnet_image_processor(do_reduce_labels=do_reduce_labels).save_pretrained(staging)
    return model


def _matching_backbone_preset(config: UperNetConfig) -> str | None:
    """The DWNet preset the converted backbone is (drop path aside), for the summary line."""
    backbone = config.backbone_config
    return next(
        (
            name
            for name, preset in DWNET_PRESETS.items()
            if all(getattr(backbone, key) == value for key, value in preset.items() if key != "drop_path_rate")
        ),
        None,
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = converter_parser(prog, __doc__, "mmsegmentation", UPERNET_DWNET_PRESETS)
    parser.add_argument(
        "--pool-scales",
        type=int,
        nargs="+",
        metavar="SCALE",
        help="UPerHead pooling scales, only if the original config did not use the default 1 2 3 6.",
    )
    reduce = parser.add_mutually_exclusive_group()
    reduce.add_argument(
        "--reduce-labels",
        dest="do_reduce_labels",
        action="store_true",
        default=None,
        help="The image processor maps annotation 0 to 255 and i to i-1 (default for 150 classes: ADE20K).",
    )
    reduce.add_argument(
        "--no-reduce-labels", dest="do_reduce_labels", action="store_false", help="Annotations start at class 0."
    )
    return parser


def describe_upernet(model: UperNetForSemanticSegmentation) -> str:
    config = model.config
    preset = upernet_preset_for_backbone(_matching_backbone_preset(config))
    return (
        f"UperNetForSemanticSegmentation ({config.num_labels} classes, {config.backbone_config.mixer} DWNet"
        f"{', preset ' + preset if preset else ''})"
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    def convert():
        return convert_upernet_checkpoint(
            args.checkpoint,
            args.output_dir,
            model_name=args.model_name,
            pool_scales=args.pool_scales,
            do_reduce_labels=args.do_reduce_labels,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
        )

    return run_converter(args, convert, describe=describe_upernet)

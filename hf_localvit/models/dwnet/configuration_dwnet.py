"""DWNet model configuration and the named presets of the paper's six ImageNet models."""

from __future__ import annotations

from typing import Any

from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

MIXER_TYPES = ("static", "dynamic", "inhomogeneous")
BACKBONE_OUTPUT_NORMS = ("none", "batch_norm")
# Channels per kernel group of the inhomogeneous mixer when none are given: 32 groups in every stage,
# which is what the released tiny (3, 6, 12, 24) and base (4, 8, 16, 32) models use.
DEFAULT_INHOMOGENEOUS_GROUPS = 32


class DWNetConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a DWNet model ("On the Connection between Local Attention and Dynamic Depth-wise Convolution",
    Han et al., ICLR 2022): Swin's hierarchy with each local window attention replaced by a depth-wise convolution.

    Args:
        num_channels: Channels of the input image.
        patch_size: Side of the non-overlapping patches of the stem convolution.
        embed_dim: Width of the first stage; stage `i` has `embed_dim * 2**i` channels.
        depths: Number of blocks in each stage.
        kernel_size: Side of the depth-wise kernel (odd).
        mlp_ratio: Hidden width of the MLP relative to the stage width.
        mixer: Spatial mixer: `"static"` (learned depth-wise conv), `"dynamic"` (one kernel per image and channel,
            predicted from the global average) or `"inhomogeneous"` (one kernel per position and channel group).
        dynamic_reduction: Channel reduction of the kernel-predicting bottleneck of the dynamic mixers.
        inhomogeneous_group_channels: Per stage, how many consecutive channels share one predicted kernel in the
            inhomogeneous mixer (the original's `INHOMO_HEADS`). Defaults to 32 groups per stage.
        hidden_act: Activation of the MLP.
        drop_path_rate: Stochastic depth rate, increased linearly over the blocks from 0.
        layer_norm_eps: Epsilon of the LayerNorms (stem, patch merging, final norm).
        batch_norm_eps: Epsilon of the BatchNorms (mixer and MLP norms, downstream output norms).
        pad_to_kernel_multiple: Downstream flavour: zero-pad each block's input right/bottom to a multiple of
            `kernel_size` before the spatial mixer and crop after it, as the detection/segmentation checkpoints did.
        backbone_output_norm: Norm applied by `DWNetBackbone` to each output feature map: `"batch_norm"` (the
            downstream checkpoints' `norm0..3`) or `"none"`.
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        image_size: Resolution the model was trained at (informational; any size is accepted).
        out_features / out_indices: Stages returned by `DWNetBackbone` (`stem`, `stage1` ... `stage4`).
    """

    model_type = "dwnet"
    attribute_map = {"num_hidden_layers": "num_stages"}

    num_channels: int = 3
    patch_size: int = 4
    embed_dim: int = 96
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    kernel_size: int = 7
    mlp_ratio: float = 4.0
    mixer: str = "static"
    dynamic_reduction: int = 4
    inhomogeneous_group_channels: list[int] | tuple[int, ...] | None = None
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    pad_to_kernel_multiple: bool = False
    backbone_output_norm: str = "none"
    initializer_range: float = 0.02
    image_size: int = 224
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.depths = list(self.depths)
        self._validate()
        if self.inhomogeneous_group_channels is None:
            self.inhomogeneous_group_channels = [
                max(1, width // DEFAULT_INHOMOGENEOUS_GROUPS) for width in self.hidden_sizes
            ]
        self.inhomogeneous_group_channels = list(self.inhomogeneous_group_channels)
        self._validate_inhomogeneous_groups()
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def hidden_sizes(self) -> list[int]:
        """Channel width of each stage."""
        return [self.embed_dim * 2**index for index in range(len(self.depths))]

    @property
    def hidden_size(self) -> int:
        return self.hidden_sizes[-1]

    def _validate(self) -> None:
        def fail(field: str, problem: str, fix: str) -> None:
            raise ValueError(f"DWNetConfig.{field}: {problem}. {fix}")

        if not self.depths or any(not isinstance(d, int) or d < 1 for d in self.depths):
            fail("depths", f"got {self.depths!r}", "Give a non-empty list of positive block counts, e.g. [2, 2, 6, 2].")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            fail("kernel_size", f"got {self.kernel_size!r}", "Use a positive odd size (7 in the paper) so the padding is symmetric.")
        if not isinstance(self.patch_size, int) or self.patch_size < 1:
            fail("patch_size", f"got {self.patch_size!r}", "Use a positive integer (4 in the paper).")
        if not isinstance(self.num_channels, int) or self.num_channels < 1:
            fail("num_channels", f"got {self.num_channels!r}", "Use a positive integer (3 for RGB).")
        if self.mixer not in MIXER_TYPES:
            fail("mixer", f"unknown mixer {self.mixer!r}", f"Choose one of {', '.join(MIXER_TYPES)}.")
        if self.backbone_output_norm not in BACKBONE_OUTPUT_NORMS:
            fail(
                "backbone_output_norm",
                f"unknown norm {self.backbone_output_norm!r}",
                f"Choose one of {', '.join(BACKBONE_OUTPUT_NORMS)}.",
            )
        if not isinstance(self.embed_dim, int) or self.embed_dim < 1:
            fail("embed_dim", f"got {self.embed_dim!r}", "Use a positive integer (96 for tiny, 128 for base).")
        if not isinstance(self.dynamic_reduction, int) or self.dynamic_reduction < 1:
            fail("dynamic_reduction", f"got {self.dynamic_reduction!r}", "Use a positive integer (4 in the paper).")
        if self.mixer != "static" and self.embed_dim % self.dynamic_reduction != 0:
            fail(
                "embed_dim",
                f"{self.embed_dim} is not divisible by dynamic_reduction={self.dynamic_reduction}",
                "The dynamic mixers' bottleneck needs embed_dim / dynamic_reduction channels; pick a multiple.",
            )
        if self.mlp_ratio <= 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            fail("mlp_ratio", f"got {self.mlp_ratio!r}", "Use a positive ratio (4.0 in the paper).")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail("drop_path_rate", f"got {self.drop_path_rate!r}", "Use a probability in [0, 1).")

    def _validate_inhomogeneous_groups(self) -> None:
        group_channels = self.inhomogeneous_group_channels
        if len(group_channels) != len(self.depths):
            raise ValueError(
                f"DWNetConfig.inhomogeneous_group_channels: got {len(group_channels)} values for {len(self.depths)} "
                "stages. Give one value per stage."
            )
        for stage, (width, per_group) in enumerate(zip(self.hidden_sizes, group_channels)):
            if not isinstance(per_group, int) or per_group < 1 or width % per_group != 0:
                raise ValueError(
                    f"DWNetConfig.inhomogeneous_group_channels: stage {stage} has {width} channels, which "
                    f"{per_group!r} channels per group does not divide. Use a divisor of the stage width."
                )


# The paper's ImageNet-1K models. Parameter counts (1000 classes) match the original checkpoints.
DWNET_PRESETS: dict[str, dict[str, Any]] = {
    "dwnet-tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "mixer": "static", "drop_path_rate": 0.2},
    "dwnet-base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "mixer": "static", "drop_path_rate": 0.5},
    "dynamic-dwnet-tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "mixer": "dynamic", "drop_path_rate": 0.2},
    "dynamic-dwnet-base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "mixer": "dynamic", "drop_path_rate": 0.5},
    "i-dynamic-dwnet-tiny": {
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "mixer": "inhomogeneous",
        "inhomogeneous_group_channels": [3, 6, 12, 24],
        "drop_path_rate": 0.2,
    },
    "i-dynamic-dwnet-base": {
        "embed_dim": 128,
        "depths": [2, 2, 18, 2],
        "mixer": "inhomogeneous",
        "inhomogeneous_group_channels": [4, 8, 16, 32],
        "drop_path_rate": 0.5,
    },
}

# What the detection and segmentation checkpoints were trained with: per-block padding to kernel multiples and a
# BatchNorm on each of the four stage outputs.
DOWNSTREAM_FLAVOUR: dict[str, Any] = {
    "pad_to_kernel_multiple": True,
    "backbone_output_norm": "batch_norm",
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}


def dwnet_preset_config(name: str, downstream: bool = False, **overrides: Any) -> DWNetConfig:
    """Build the config of a named preset (`dwnet-tiny`, ...), optionally in the downstream flavour."""
    if name not in DWNET_PRESETS:
        raise ValueError(f"Unknown DWNet preset {name!r}. Available presets: {', '.join(DWNET_PRESETS)}.")
    kwargs = dict(DWNET_PRESETS[name])
    if downstream:
        kwargs.update(DOWNSTREAM_FLAVOUR)
    kwargs.update(overrides)
    return DWNetConfig(**kwargs)


__all__ = ["DWNetConfig", "DWNET_PRESETS", "DOWNSTREAM_FLAVOUR", "dwnet_preset_config"]

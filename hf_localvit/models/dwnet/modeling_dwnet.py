"""PyTorch DWNet: Swin's hierarchy with depth-wise convolutions (static, dynamic, inhomogeneous) as spatial mixers.

Feature maps stay in `(batch, channels, height, width)` from the stem to the head; LayerNorms normalise over the
channel dimension, and every point-wise layer is a 1x1 convolution, so `channels_last` inputs stay channels-last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils.generic import can_return_tuple

from .configuration_dwnet import DWNetConfig
from .fusion_dwnet import fuse_layer
from .ops_dwnet import inhomogeneous_depthwise_conv2d, per_image_depthwise_conv2d


def pad_bottom_right(features: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last two dims of `features` (right and bottom) up to a multiple of `multiple`."""
    height, width = features.shape[-2:]
    pad_height = (multiple - height % multiple) % multiple
    pad_width = (multiple - width % multiple) % multiple
    if pad_height == 0 and pad_width == 0:
        return features
    return F.pad(features, (0, pad_width, 0, pad_height))


@contextlib.contextmanager
def frozen_batch_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Run `module`'s BatchNorms on batch statistics without updating their running statistics."""
    batch_norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in batch_norms]
    for m in batch_norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(batch_norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class DWNetLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dimension of a `(batch, channels, height, width)` map."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.permute(0, 2, 3, 1)
        features = F.layer_norm(features, self.normalized_shape, self.weight, self.bias, self.eps)
        return features.permute(0, 3, 1, 2)


class DWNetEmbeddings(nn.Module):
    """Patch embedding: a `patch_size` strided conv and a LayerNorm; inputs are zero-padded to a patch multiple."""

    def __init__(self, config: DWNetConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = DWNetLayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"Expected pixel_values of shape (batch, {self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}. Run the image processor first or check config.num_channels."
            )
        pixel_values = pad_bottom_right(pixel_values, self.patch_size)
        return self.norm(self.patch_embeddings(pixel_values))


class DWNetDynamicDepthwiseConv(nn.Module):
    """Dynamic (homogeneous) depth-wise conv: one k x k kernel per image and channel, predicted from the image's
    global average by a 1x1 bottleneck, plus a learned per-channel bias."""

    def __init__(self, config: DWNetConfig, dim: int) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        reduced = dim // config.dynamic_reduction
        self.reduce = nn.Conv2d(dim, reduced, kernel_size=1, bias=False)
        self.reduce_norm = nn.BatchNorm2d(reduced, eps=config.batch_norm_eps)
        self.expand = nn.Conv2d(reduced, dim * config.kernel_size**2, kernel_size=1)
        self.bias = nn.Parameter(torch.zeros(dim))

    def predict_kernels(self, features: torch.Tensor) -> torch.Tensor:
        """Kernels of shape `(batch, channels, k, k)`, channel-major as the original reads them."""
        pooled = features.mean(dim=(2, 3), keepdim=True)
        kernels = self.expand(F.relu(self.reduce_norm(self.reduce(pooled))))
        return kernels.reshape(features.shape[0], features.shape[1], self.kernel_size, self.kernel_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        kernels = self.predict_kernels(features)
        return per_image_depthwise_conv2d(features, kernels, self.bias, padding=self.kernel_size // 2)


class DWNetInhomogeneousDepthwiseConv(nn.Module):
    """Inhomogeneous dynamic depth-wise conv: a k x k kernel per position and channel group, predicted by a 1x1
    bottleneck from the features at that position; no bias."""

    def __init__(self, config: DWNetConfig, dim: int, group_channels: int) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        self.groups = dim // group_channels
        reduced = dim // config.dynamic_reduction
        self.reduce = nn.Conv2d(dim, reduced, kernel_size=1)
        self.reduce_norm = nn.BatchNorm2d(reduced, eps=config.batch_norm_eps)
        self.expand = nn.Conv2d(reduced, self.groups * config.kernel_size**2, kernel_size=1)

    def predict_kernels(self, features: torch.Tensor) -> torch.Tensor:
        """Kernels of shape `(batch, groups, k, k, height, width)`."""
        kernels = self.expand(F.relu(self.reduce_norm(self.reduce(features))))
        batch_size, _, height, width = kernels.shape
        return kernels.reshape(batch_size, self.groups, self.kernel_size, self.kernel_size, height, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        kernels = self.predict_kernels(features)
        return inhomogeneous_depthwise_conv2d(features, kernels, padding=(self.kernel_size - 1) // 2)


def build_depthwise_mixer(config: DWNetConfig, dim: int, stage_index: int) -> nn.Module:
    """The k x k depth-wise convolution of the configured kind."""
    if config.mixer == "dynamic":
        return DWNetDynamicDepthwiseConv(config, dim)
    if config.mixer == "inhomogeneous":
        return DWNetInhomogeneousDepthwiseConv(config, dim, config.inhomogeneous_group_channels[stage_index])
    return nn.Conv2d(dim, dim, kernel_size=config.kernel_size, padding=config.kernel_size // 2, groups=dim)


class DWNetSpatialMixing(nn.Module):
    """The branch that replaces window attention: 1x1 conv, BN, ReLU, depth-wise conv, BN, ReLU, 1x1 conv, BN."""

    def __init__(self, config: DWNetConfig, dim: int, stage_index: int) -> None:
        super().__init__()
        self.input_projection = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.input_norm = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)
        self.depthwise = build_depthwise_mixer(config, dim, stage_index)
        self.depthwise_norm = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)
        self.output_projection = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.output_norm = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.input_norm(self.input_projection(features)))
        features = F.relu(self.depthwise_norm(self.depthwise(features)))
        return self.output_norm(self.output_projection(features))


class DWNetMlp(nn.Module):
    """Point-wise MLP (1x1 convs) with `mlp_ratio` expansion."""

    def __init__(self, config: DWNetConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features)))


class DWNetLayer(GradientCheckpointingLayer):
    """One DWNet block: `x = x + mix(x)`, then `x = x + mlp(bn(x))`, with stochastic depth on both branches.

    In the downstream flavour the mixer sees the map zero-padded right/bottom to a kernel multiple and its output is
    cropped back; this changes border values, because the first 1x1 conv + BN + ReLU turns padded zeros non-zero.
    """

    def __init__(self, config: DWNetConfig, dim: int, stage_index: int, drop_path: float) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        self.pad_to_kernel_multiple = config.pad_to_kernel_multiple
        self.spatial_mixing = DWNetSpatialMixing(config, dim, stage_index)
        self.mlp_norm = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)
        self.mlp = DWNetMlp(config, dim)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch._C._current_graph_task_id() != -1:
            # Activation checkpointing re-runs this layer inside backward: its BatchNorm statistics were already
            # updated by the first forward, so the recomputation must not update them a second time.
            with frozen_batch_norm_statistics(self):
                return self.mix_and_mlp(features)
        return self.mix_and_mlp(features)

    def mix_and_mlp(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        mixer_input = pad_bottom_right(features, self.kernel_size) if self.pad_to_kernel_multiple else features
        mixed = self.spatial_mixing(mixer_input)[..., :height, :width]
        features = features + self.drop_path(mixed)
        return features + self.drop_path(self.mlp(self.mlp_norm(features)))


class DWNetPatchMerging(nn.Module):
    """2x downsampling: concatenate each 2x2 neighbourhood (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, 1x1 conv.
    Odd sizes are zero-padded right/bottom."""

    def __init__(self, config: DWNetConfig, dim: int) -> None:
        super().__init__()
        self.norm = DWNetLayerNorm(4 * dim, eps=config.layer_norm_eps)
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, kernel_size=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = pad_bottom_right(features, 2)
        neighbours = [
            features[:, :, 0::2, 0::2],
            features[:, :, 1::2, 0::2],
            features[:, :, 0::2, 1::2],
            features[:, :, 1::2, 1::2],
        ]
        return self.reduction(self.norm(torch.cat(neighbours, dim=1)))


class DWNetStage(nn.Module):
    """The blocks of one resolution, followed by patch merging except in the last stage."""

    def __init__(self, config: DWNetConfig, stage_index: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = config.hidden_sizes[stage_index]
        self.layers = nn.ModuleList(
            [DWNetLayer(config, dim, stage_index, drop_path) for drop_path in drop_paths]
        )
        is_last = stage_index == len(config.depths) - 1
        self.downsample = None if is_last else DWNetPatchMerging(config, dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the stage output (before merging) and the input of the next stage."""
        for layer in self.layers:
            features = layer(features)
        downsampled = self.downsample(features) if self.downsample is not None else features
        return features, downsampled


class DWNetEncoder(nn.Module):
    def __init__(self, config: DWNetConfig) -> None:
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        starts = [sum(config.depths[:index]) for index in range(len(config.depths))]
        self.stages = nn.ModuleList(
            [
                DWNetStage(config, index, rates[start : start + depth])
                for index, (start, depth) in enumerate(zip(starts, config.depths))
            ]
        )

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns the last stage's output and all hidden states (embeddings, then each stage's output)."""
        hidden_states = [embeddings]
        features = embeddings
        stage_output = embeddings
        for stage in self.stages:
            stage_output, features = stage(features)
            hidden_states.append(stage_output)
        return stage_output, tuple(hidden_states)


class DWNetPreTrainedModel(PreTrainedModel):
    config: DWNetConfig
    config_class = DWNetConfig
    base_model_prefix = "dwnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DWNetLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' `init` helpers leave tensors that were loaded from a checkpoint alone; torch's would not
        # (a UperNet or detector re-initialises its backbone's submodules after loading).
        super()._init_weights(module)
        if isinstance(module, DWNetDynamicDepthwiseConv):
            init.zeros_(module.bias)

    def fuse_batch_norms(self) -> DWNetPreTrainedModel:
        """Fold the blocks' BatchNorms into the adjacent convolutions for faster eval-time inference (in place).

        Outputs equal the unfused model's up to float rounding. A fused model can neither train nor be saved: the
        checkpoint format never changes, so save the unfused model and fuse after loading.
        """
        if self.training:
            raise RuntimeError("BatchNorm folding uses the running statistics: call model.eval() before fuse_batch_norms().")
        if not getattr(self, "batch_norms_fused", False):
            for module in self.modules():
                if isinstance(module, DWNetLayer):
                    fuse_layer(module)
            for module in self.modules():
                module.batch_norms_fused = True
        return self

    def train(self, mode: bool = True) -> DWNetPreTrainedModel:
        if mode and getattr(self, "batch_norms_fused", False):
            raise RuntimeError("This model's BatchNorms were folded for inference; reload it to train.")
        return super().train(mode)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config; when the classes are registered for remote code, every DWNet Auto class is
        mapped so the folder also loads with `trust_remote_code=True` where `hf_localvit` is not installed."""
        if getattr(self, "batch_norms_fused", False):
            raise RuntimeError(
                "This model's BatchNorms were folded by fuse_batch_norms(), which changes its weights' layout. "
                "Save the unfused model (reload it) and fuse again after loading."
            )
        if getattr(self, "_auto_class", None) is not None:
            self.config.auto_map = dict(DWNET_AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


DWNET_AUTO_MAP = {
    "AutoConfig": "configuration_dwnet.DWNetConfig",
    "AutoModel": "modeling_dwnet.DWNetModel",
    "AutoModelForImageClassification": "modeling_dwnet.DWNetForImageClassification",
    "AutoBackbone": "modeling_dwnet.DWNetBackbone",
}


class DWNetModel(DWNetPreTrainedModel):
    """DWNet without a head: `last_hidden_state` is the final LayerNorm'd map, `pooler_output` its spatial mean."""

    def __init__(self, config: DWNetConfig) -> None:
        super().__init__(config)
        self.embeddings = DWNetEmbeddings(config)
        self.encoder = DWNetEncoder(config)
        self.layernorm = DWNetLayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values.")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        last_stage_output, hidden_states = self.encoder(self.embeddings(pixel_values))
        last_hidden_state = self.layernorm(last_stage_output)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=(2, 3)),
            hidden_states=hidden_states if output_hidden_states else None,
        )


class DWNetForImageClassification(DWNetPreTrainedModel):
    """DWNet with a linear classifier on the pooled features (ImageNet head)."""

    accepts_loss_kwargs = False

    def __init__(self, config: DWNetConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dwnet = DWNetModel(config)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention:
        """`labels`: class indices (single-label), multi-hot floats (multi-label) or targets (regression), chosen by
        `config.problem_type` or inferred from `num_labels` and the labels' dtype as in transformers."""
        outputs = self.dwnet(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class DWNetBackbone(BackboneMixin, DWNetPreTrainedModel):
    """Multi-scale feature maps of the chosen stages, for detection and segmentation heads.

    With `backbone_output_norm="batch_norm"` (the downstream flavour) each returned map goes through its own
    BatchNorm, as in the original detection/segmentation backbone.
    """

    has_attentions = False

    def __init__(self, config: DWNetConfig) -> None:
        super().__init__(config)
        self.embeddings = DWNetEmbeddings(config)
        self.encoder = DWNetEncoder(config)
        self.num_features = [config.embed_dim] + config.hidden_sizes
        if config.backbone_output_norm == "batch_norm":
            self.hidden_states_norms = nn.ModuleDict(
                {
                    stage: nn.BatchNorm2d(channels, eps=config.batch_norm_eps)
                    for stage, channels in zip(self.out_features, self.channels)
                }
            )
        else:
            self.hidden_states_norms = None
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BackboneOutput:
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        _, hidden_states = self.encoder(self.embeddings(pixel_values))
        feature_maps = []
        for stage, hidden_state in zip(self.stage_names, hidden_states):
            if stage in self.out_features:
                if self.hidden_states_norms is not None:
                    hidden_state = self.hidden_states_norms[stage](hidden_state)
                feature_maps.append(hidden_state)
        return BackboneOutput(
            feature_maps=tuple(feature_maps), hidden_states=hidden_states if output_hidden_states else None
        )


__all__ = [
    "DWNetPreTrainedModel",
    "DWNetModel",
    "DWNetForImageClassification",
    "DWNetBackbone",
]

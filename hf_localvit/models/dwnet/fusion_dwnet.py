"""Exact inference-time folding of DWNet's BatchNorms into the neighbouring convolutions.

In eval mode a BatchNorm is the per-channel affine map `y = a * x + b` with `a = gamma / sqrt(var + eps)` and
`b = beta - a * mean`, so it can be absorbed by the linear layer next to it:

- after a convolution `y = a * (W x + c) + b`: scale the output channels of `W` by `a`, bias `a * c + b`;
- before a 1x1 convolution `W (a * x + b) + c`: scale the input channels of `W` by `a`, bias `c + W b`;
- after the dynamic depth-wise conv, whose kernels are predicted per image: scale the rows of the predictor's last
  layer that produce channel `i`'s kernel by `a_i` and fold `b` into the learned bias.

The inhomogeneous mixer shares one predicted kernel between the channels of a group, so its per-channel BatchNorm
cannot be moved into the kernel without changing that sharing; it stays as it is. Everything else in a block, and
the kernel predictors' own BatchNorms, is folded. The result equals the unfused model up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def batch_norm_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as `(scale, shift)`, computed in float64 for an exact fold."""
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    shift = norm.bias.double() - norm.running_mean.double() * scale
    return scale, shift


def _with_bias(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` itself if it has a bias, else an equal copy with a zero bias (folding needs somewhere to put `b`)."""
    if conv.bias is not None:
        return conv
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight)
        fused.bias.zero_()
    return fused


@torch.no_grad()
def fold_norm_after_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing `norm(conv(x))`."""
    fused = _with_bias(conv)
    scale, shift = batch_norm_affine(norm)
    weight = fused.weight.double() * scale.view(-1, *([1] * (fused.weight.ndim - 1)))
    bias = fused.bias.double() * scale + shift
    fused.weight.copy_(weight.to(fused.weight.dtype))
    fused.bias.copy_(bias.to(fused.bias.dtype))
    return fused


@torch.no_grad()
def fold_norm_before_pointwise_conv(norm: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 conv computing `conv(norm(x))`."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("Only a dense 1x1 convolution can absorb the BatchNorm in front of it.")
    fused = _with_bias(conv)
    scale, shift = batch_norm_affine(norm)
    weight = fused.weight.double()[:, :, 0, 0]
    bias = fused.bias.double() + weight @ shift
    fused.weight.copy_((weight * scale.view(1, -1)).to(fused.weight.dtype)[:, :, None, None])
    fused.bias.copy_(bias.to(fused.bias.dtype))
    return fused


@torch.no_grad()
def fold_norm_into_dynamic_kernels(mixer: nn.Module, norm: nn.BatchNorm2d) -> None:
    """Make a `DWNetDynamicDepthwiseConv` compute `norm(mixer(x))`: its kernels are linear in `expand`'s output
    and channel `i` owns `expand` rows `i*k*k .. (i+1)*k*k - 1` (channel-major)."""
    scale, shift = batch_norm_affine(norm)
    rows_per_channel = mixer.kernel_size**2
    row_scale = scale.repeat_interleave(rows_per_channel)
    mixer.expand.weight.copy_((mixer.expand.weight.double() * row_scale.view(-1, 1, 1, 1)).to(mixer.expand.weight.dtype))
    mixer.expand.bias.copy_((mixer.expand.bias.double() * row_scale).to(mixer.expand.bias.dtype))
    mixer.bias.copy_((mixer.bias.double() * scale + shift).to(mixer.bias.dtype))


def fuse_kernel_predictor(mixer: nn.Module) -> None:
    """Fold the predictor's `reduce -> reduce_norm` pair of a dynamic or inhomogeneous mixer."""
    mixer.reduce = fold_norm_after_conv(mixer.reduce, mixer.reduce_norm)
    mixer.reduce_norm = nn.Identity()


def fuse_spatial_mixing(mixing: nn.Module) -> None:
    """Fold the branch's BatchNorms: input and output projections always; the depth-wise one where possible."""
    mixing.input_projection = fold_norm_after_conv(mixing.input_projection, mixing.input_norm)
    mixing.input_norm = nn.Identity()
    mixing.output_projection = fold_norm_after_conv(mixing.output_projection, mixing.output_norm)
    mixing.output_norm = nn.Identity()
    depthwise = mixing.depthwise
    if isinstance(depthwise, nn.Conv2d):
        mixing.depthwise = fold_norm_after_conv(depthwise, mixing.depthwise_norm)
        mixing.depthwise_norm = nn.Identity()
    else:
        fuse_kernel_predictor(depthwise)
        if hasattr(depthwise, "bias"):  # dynamic (homogeneous): one kernel per channel
            fold_norm_into_dynamic_kernels(depthwise, mixing.depthwise_norm)
            mixing.depthwise_norm = nn.Identity()


def fuse_layer(layer: nn.Module) -> None:
    """Fold every BatchNorm of one `DWNetLayer` that has a linear neighbour, including the one before the MLP."""
    fuse_spatial_mixing(layer.spatial_mixing)
    layer.mlp.fc1 = fold_norm_before_pointwise_conv(layer.mlp_norm, layer.mlp.fc1)
    layer.mlp_norm = nn.Identity()

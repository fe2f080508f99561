"""Reference PyTorch implementations of DWNet's two dynamic depth-wise convolutions.

Both run on any device with autograd and are the numerical reference for faster kernels. When `hf_localvit.ops`
can be imported (it cannot in a saved model folder used through `trust_remote_code` without `hf_localvit`
installed) each op hands CUDA tensors to its Triton kernels instead; `HF_LOCALVIT_OPS=reference|triton|auto`
forces a path (see `hf_localvit.ops`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

_fast_ops_module = None  # `hf_localvit.ops` once imported; False when it cannot be


def _fast_ops(*tensors: torch.Tensor | None):
    """`hf_localvit.ops` if it should run these tensors (CUDA and Triton by default), else None: the reference."""
    global _fast_ops_module
    if _fast_ops_module is None:
        try:
            from hf_localvit import ops as module
        except ImportError:
            module = False
        _fast_ops_module = module
    if _fast_ops_module is False:
        if os.environ.get("HF_LOCALVIT_OPS", "").strip().lower() == "triton":
            raise ImportError("HF_LOCALVIT_OPS=triton needs the `hf_localvit` package (its `hf_localvit.ops`).")
        return None
    return _fast_ops_module if _fast_ops_module.use_triton(*tensors) else None


def per_image_depthwise_conv2d(
    hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Depth-wise convolution with a different kernel for every image of the batch.

    Args:
        hidden_states: `(batch, channels, height, width)`.
        weight: `(batch, channels, k, k)`, the kernels of each image.
        bias: `(channels,)`, shared by all images, or `None`.
        padding: Zero padding on every side.

    The batch is folded into the channel dimension so one grouped convolution covers every image: no Python loop
    over the batch.
    """
    fast_ops = _fast_ops(hidden_states, weight, bias)
    if fast_ops is not None:
        return fast_ops.per_image_depthwise_conv2d(hidden_states, weight, bias, padding)
    batch_size, channels, height, width = hidden_states.shape
    kernel_size = weight.shape[-1]
    folded_bias = bias.repeat(batch_size) if bias is not None else None
    output = F.conv2d(
        hidden_states.reshape(1, batch_size * channels, height, width),
        weight.reshape(batch_size * channels, 1, kernel_size, kernel_size).to(hidden_states.dtype),
        folded_bias.to(hidden_states.dtype) if folded_bias is not None else None,
        padding=padding,
        groups=batch_size * channels,
    )
    return output.reshape(batch_size, channels, output.shape[-2], output.shape[-1])


def inhomogeneous_depthwise_conv2d(hidden_states: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Depth-wise convolution with a different kernel at every position, shared by groups of channels.

    Args:
        hidden_states: `(batch, channels, height, width)`.
        weight: `(batch, groups, k, k, height, width)`; channel `c` uses group `c // (channels // groups)`, so the
            channels of one group are contiguous.
        padding: Zero padding on every side (`(k - 1) // 2` keeps the size).

    `out[b, c, h, w] = sum_{i, j} x_pad[b, c, h + i, w + j] * weight[b, c // (C / G), i, j, h, w]`.

    The k*k kernel taps are accumulated one shifted view at a time, so no unfolded copy of the input is ever built:
    the extra memory is one output-sized temporary, whatever the kernel size.
    """
    fast_ops = _fast_ops(hidden_states, weight)
    if fast_ops is not None:
        return fast_ops.inhomogeneous_depthwise_conv2d(hidden_states, weight, padding)
    batch_size, channels, height, width = hidden_states.shape
    groups, kernel_size = weight.shape[1], weight.shape[2]
    if channels % groups != 0:
        raise ValueError(f"{channels} channels cannot be split into {groups} kernel groups.")
    out_height = height + 2 * padding - kernel_size + 1
    out_width = width + 2 * padding - kernel_size + 1
    if weight.shape[-2:] != (out_height, out_width):
        raise ValueError(
            f"Per-position kernels cover {tuple(weight.shape[-2:])} positions, the output has {(out_height, out_width)}."
        )
    padded = F.pad(hidden_states, (padding, padding, padding, padding))
    padded = padded.reshape(batch_size, groups, channels // groups, height + 2 * padding, width + 2 * padding)
    dtype = torch.promote_types(hidden_states.dtype, weight.dtype)
    output = hidden_states.new_zeros(batch_size, groups, channels // groups, out_height, out_width, dtype=dtype)
    for row in range(kernel_size):
        for col in range(kernel_size):
            window = padded[:, :, :, row : row + out_height, col : col + out_width]
            output = output.addcmul(window, weight[:, :, row, col].unsqueeze(2))
    return output.reshape(batch_size, channels, out_height, out_width)


__all__ = ["per_image_depthwise_conv2d", "inhomogeneous_depthwise_conv2d"]

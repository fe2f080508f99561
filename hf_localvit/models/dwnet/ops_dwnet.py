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

    The k*k kernel taps are accumulated in place one shifted view at a time, forward and backward (an explicit
    backward, `_InhomogeneousDepthwiseConv`), so no unfolded copy of the input is ever built and no per-tap gradient
    the size of the kernels: the extra memory is output-sized, whatever the kernel size.
    """
    fast_ops = _fast_ops(hidden_states, weight)
    if fast_ops is not None:
        return fast_ops.inhomogeneous_depthwise_conv2d(hidden_states, weight, padding)
    channels, height, width = hidden_states.shape[1:]
    groups, kernel_size = weight.shape[1], weight.shape[2]
    if channels % groups != 0:
        raise ValueError(f"{channels} channels cannot be split into {groups} kernel groups.")
    out_height = height + 2 * padding - kernel_size + 1
    out_width = width + 2 * padding - kernel_size + 1
    if weight.shape[-2:] != (out_height, out_width):
        raise ValueError(
            f"Per-position kernels cover {tuple(weight.shape[-2:])} positions, the output has {(out_height, out_width)}."
        )
    return _InhomogeneousDepthwiseConv.apply(hidden_states, weight, padding)


def _padded_groups(hidden_states: torch.Tensor, groups: int, padding: int) -> torch.Tensor:
    """`(batch, groups, channels // groups, height + 2p, width + 2p)`, zero-padded and contiguous."""
    batch_size, channels, height, width = hidden_states.shape
    padded = F.pad(hidden_states.contiguous(), (padding, padding, padding, padding))
    return padded.reshape(batch_size, groups, channels // groups, height + 2 * padding, width + 2 * padding)


def _is_channels_last(tensor: torch.Tensor) -> bool:
    return not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


class _InhomogeneousDepthwiseConv(torch.autograd.Function):
    """The tap loop with its own backward. The taps read the operands k*k times, so they are made contiguous
    (NCHW order) once: on channels-last operands (the model's layout) every tap would be a strided gather over the
    whole kernel tensor. Results come back in the layout of the tensor they belong to."""

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        batch_size, channels = hidden_states.shape[:2]
        groups, kernel_size, out_height, out_width = weight.shape[1], weight.shape[2], *weight.shape[-2:]
        padded = _padded_groups(hidden_states, groups, padding)
        kernels = weight.contiguous()
        dtype = torch.promote_types(hidden_states.dtype, weight.dtype)
        output = padded.new_zeros(batch_size, groups, channels // groups, out_height, out_width, dtype=dtype)
        for row in range(kernel_size):
            for col in range(kernel_size):
                window = padded[:, :, :, row : row + out_height, col : col + out_width]
                output.addcmul_(window, kernels[:, :, row, col].unsqueeze(2))
        ctx.save_for_backward(hidden_states, kernels)
        ctx.padding = padding
        output = output.reshape(batch_size, channels, out_height, out_width)
        return output.contiguous(memory_format=torch.channels_last) if _is_channels_last(hidden_states) else output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        hidden_states, kernels = ctx.saved_tensors
        padding = ctx.padding
        batch_size, channels, height, width = hidden_states.shape
        groups, kernel_size, out_height, out_width = kernels.shape[1], kernels.shape[2], *kernels.shape[-2:]
        grad = grad_output.contiguous().reshape(batch_size, groups, channels // groups, out_height, out_width)
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            padded_size = (height + 2 * padding, width + 2 * padding)
            grad_padded = grad.new_zeros(batch_size, groups, channels // groups, *padded_size)
            for row in range(kernel_size):
                for col in range(kernel_size):
                    target = grad_padded[:, :, :, row : row + out_height, col : col + out_width]
                    target.addcmul_(grad, kernels[:, :, row, col].unsqueeze(2))
            grad_input = grad_padded.reshape(batch_size, channels, *padded_size)
            grad_input = grad_input[:, :, padding : padding + height, padding : padding + width]
            layout = torch.channels_last if _is_channels_last(hidden_states) else torch.contiguous_format
            grad_input = grad_input.to(hidden_states.dtype).contiguous(memory_format=layout)
        if ctx.needs_input_grad[1]:
            padded = _padded_groups(hidden_states, groups, padding)
            grad_weight = torch.empty_like(kernels)
            for row in range(kernel_size):
                for col in range(kernel_size):
                    window = padded[:, :, :, row : row + out_height, col : col + out_width]
                    grad_weight[:, :, row, col] = (grad * window).sum(2)
        return grad_input, grad_weight, None


__all__ = ["per_image_depthwise_conv2d", "inhomogeneous_depthwise_conv2d"]

"""Launchers of the Triton kernels and their registration as `torch.library` custom ops with autograd.

Imported lazily by `hf_localvit.ops` (it imports Triton). CUDA tensors run the compiled kernels; CPU tensors run
the very same kernels through Triton's interpreter (slow: meant for tests), whether or not `TRITON_INTERPRET=1`
was set when this module was imported.

The ops are opaque to `torch.compile` (they have fake implementations, so they trace without graph breaks).

Do not add `from __future__ import annotations` here: `torch.library.custom_op` reads the real annotations.
"""

import functools
from typing import Optional

import torch
import triton

from . import _triton_kernels as kernels

# Elements per program tile (a power of two) and per thread: 1024 and 4 give 8 warps. With 8 elements per thread
# the 7x7 kernels need 130 to 210 registers on sm_90 (the taps of a kernel row are unrolled, their loads hoisted);
# with 4, 80 to 120, and no spills (ptxas, Triton 3.8). To be tuned on a GPU (see the package docstring).
TILE_ELEMENTS = 1024
ELEMENTS_PER_THREAD = 4
# Largest number of output positions one program of the dynamic weight gradient sweeps (per tap); bigger planes
# are split into row chunks whose partial sums are added on the host. Keeps a program's working set cache-sized.
MAX_CHUNK_POSITIONS = 4096
# Channels of one group that an inhomogeneous program covers; wider groups take several blocks.
MAX_GROUP_CHANNEL_BLOCK = 32


def _next_pow2(value: int) -> int:
    return triton.next_power_of_2(max(1, int(value)))


def _tile(channels: int, height: int, width: int, channels_contiguous: bool, max_channels: int = 64) -> tuple[int, int, int]:
    """`(BC, BH, BW)` for a `(channels, height, width)` extent: the contiguous dimension gets the widest side."""
    if channels_contiguous:
        block_c = min(_next_pow2(channels), max_channels, TILE_ELEMENTS)
        block_w = min(_next_pow2(width), max(1, TILE_ELEMENTS // block_c))
        block_h = min(_next_pow2(height), max(1, TILE_ELEMENTS // (block_c * block_w)))
    else:
        block_w = min(_next_pow2(width), 64)
        block_h = min(_next_pow2(height), max(1, TILE_ELEMENTS // block_w))
        block_c = min(_next_pow2(channels), max_channels, max(1, TILE_ELEMENTS // (block_h * block_w)))
    return block_c, block_h, block_w


def _num_warps(block_elements: int) -> int:
    """Warps for a tile: `ELEMENTS_PER_THREAD` elements per thread, 1 to 8 warps."""
    return max(1, min(8, block_elements // (32 * ELEMENTS_PER_THREAD)))


def _is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.stride(1) == 1 and tensor.stride(3) != 1


def _accumulates_in_fp64(dtype: torch.dtype) -> bool:
    return dtype == torch.float64


@functools.lru_cache(maxsize=None)
def _interpreted(kernel):
    """The interpreter's version of a kernel (for CPU tensors), built from the kernel's Python function."""
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(kernel, InterpretedFunction):  # TRITON_INTERPRET=1 was set when the kernels were defined
        return kernel
    return InterpretedFunction(kernel.fn)


def _launch(kernel, grid: tuple[int, ...], device: torch.device, *args, num_warps: int, **constexprs) -> None:
    if device.type == "cpu":
        _interpreted(kernel)[grid](*args, **constexprs)
        return
    with torch.cuda.device(device):
        kernel[grid](*args, num_warps=num_warps, **constexprs)


def _spatial_program_count(height: int, width: int, block_h: int, block_w: int) -> tuple[int, int]:
    return triton.cdiv(height, block_h), triton.cdiv(width, block_w)


# ----------------------------------------------------------------------------------------------------------------
# Dynamic (homogeneous) depth-wise conv: one k x k kernel per image and channel.
# ----------------------------------------------------------------------------------------------------------------


def _dynamic_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int, flip: bool,
                  out_hw: tuple[int, int]) -> torch.Tensor:
    batch, channels, height, width = x.shape
    kernel_size = weight.shape[-1]
    out_h, out_w = out_hw
    channels_last = _is_channels_last(x)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype, memory_format=memory_format)
    block_c, block_h, block_w = _tile(channels, out_h, out_w, channels_last)
    n_cblk = triton.cdiv(channels, block_c)
    n_th, n_tw = _spatial_program_count(out_h, out_w, block_h, block_w)
    grid = (batch * n_cblk * n_th * n_tw,)
    _launch(
        kernels.dynamic_dwconv_fwd_kernel, grid, x.device,
        x, weight, bias if bias is not None else x, out,
        channels, height, width, out_h, out_w, padding,
        *x.stride(), *weight.stride(), *out.stride(),
        n_cblk, n_th, n_tw,
        num_warps=_num_warps(block_c * block_h * block_w),
        K=kernel_size, FLIP=flip, HAS_BIAS=bias is not None, FP64=_accumulates_in_fp64(x.dtype),
        BC=block_c, BH=block_h, BW=block_w,
    )
    return out


def _output_size(size: int, kernel_size: int, padding: int) -> int:
    return size + 2 * padding - kernel_size + 1


def _check_dynamic(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> None:
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[:2] != x.shape[:2] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"Expected hidden states (B, C, H, W) and kernels (B, C, k, k), got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}.")
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f"Expected a bias of shape ({x.shape[1]},), got {tuple(bias.shape)}.")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")


@torch.library.custom_op("hf_localvit::dynamic_depthwise_conv2d", mutates_args=())
def dynamic_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
    """Triton per-image depth-wise conv: `(B, C, H, W)` features, `(B, C, k, k)` kernels, `(C,)` bias or None."""
    _check_dynamic(x, weight, bias, padding)
    kernel_size = weight.shape[-1]
    out_hw = (_output_size(x.shape[2], kernel_size, padding), _output_size(x.shape[3], kernel_size, padding))
    return _dynamic_conv(x, weight, bias.contiguous() if bias is not None else None, padding, False, out_hw)


@dynamic_depthwise_conv2d.register_fake
def _(x, weight, bias, padding):
    kernel_size = weight.shape[-1]
    return x.new_empty(
        (x.shape[0], x.shape[1], _output_size(x.shape[2], kernel_size, padding), _output_size(x.shape[3], kernel_size, padding))
    )


@torch.library.custom_op("hf_localvit::dynamic_depthwise_conv2d_grad_input", mutates_args=())
def dynamic_depthwise_conv2d_grad_input(grad_output: torch.Tensor, weight: torch.Tensor, padding: int, height: int,
                                        width: int) -> torch.Tensor:
    """Gradient of the input: the output gradient correlated with the 180-degree rotated kernels."""
    kernel_size = weight.shape[-1]
    return _dynamic_conv(grad_output, weight, None, kernel_size - 1 - padding, True, (height, width))


@dynamic_depthwise_conv2d_grad_input.register_fake
def _(grad_output, weight, padding, height, width):
    return grad_output.new_empty((grad_output.shape[0], grad_output.shape[1], height, width))


def _rows_per_chunk(batch: int, n_cblk: int, out_h: int, out_w: int, block_h: int, device: torch.device) -> int:
    """Output rows per program of the weight gradient: cache-sized chunks, and enough programs for the GPU."""
    rows = max(block_h, (MAX_CHUNK_POSITIONS // max(1, out_w)) // block_h * block_h)
    if device.type == "cuda":
        wanted_programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        while rows > block_h and batch * n_cblk * triton.cdiv(out_h, rows) < wanted_programs:
            rows = max(block_h, rows // 2 // block_h * block_h)
    return min(rows, triton.cdiv(out_h, block_h) * block_h)


@torch.library.custom_op("hf_localvit::dynamic_depthwise_conv2d_grad_weight", mutates_args=())
def dynamic_depthwise_conv2d_grad_weight(grad_output: torch.Tensor, x: torch.Tensor, kernel_size: int, padding: int,
                                         with_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the kernels `(B, C, k, k)` and of the bias `(C,)` (empty when `with_bias` is False)."""
    batch, channels, height, width = x.shape
    out_h, out_w = grad_output.shape[-2:]
    block_c, block_h, block_w = _tile(channels, out_h, out_w, _is_channels_last(x))
    n_cblk = triton.cdiv(channels, block_c)
    rows = _rows_per_chunk(batch, n_cblk, out_h, out_w, block_h, x.device)
    n_chunks = triton.cdiv(out_h, rows)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_weight = torch.empty((n_chunks, batch, channels, kernel_size * kernel_size), device=x.device, dtype=acc_dtype)
    grad_bias = torch.empty((n_chunks, batch, channels) if with_bias else (0,), device=x.device, dtype=acc_dtype)
    _launch(
        kernels.dynamic_dwconv_bwd_weight_kernel, (batch * n_cblk * n_chunks,), x.device,
        x, grad_output, grad_weight, grad_bias if with_bias else grad_weight,  # never read without a bias
        batch, channels, height, width, out_h, out_w, padding, rows,
        *x.stride(), *grad_output.stride(),
        n_cblk, n_chunks,
        num_warps=_num_warps(block_c * block_h * block_w),
        K=kernel_size, HAS_BIAS=with_bias, FP64=_accumulates_in_fp64(x.dtype),
        BC=block_c, BH=block_h, BW=block_w,
    )
    grad_weight = grad_weight.sum(0) if n_chunks > 1 else grad_weight[0]
    grad_weight = grad_weight.view(batch, channels, kernel_size, kernel_size).to(x.dtype)
    grad_bias = grad_bias.sum((0, 1)).to(x.dtype) if with_bias else grad_bias.to(x.dtype)
    return grad_weight, grad_bias


@dynamic_depthwise_conv2d_grad_weight.register_fake
def _(grad_output, x, kernel_size, padding, with_bias):
    batch, channels = x.shape[:2]
    return (x.new_empty((batch, channels, kernel_size, kernel_size)), x.new_empty((channels,) if with_bias else (0,)))


def _dynamic_setup_context(ctx, inputs, output):
    x, weight, bias, padding = inputs
    ctx.padding = padding
    ctx.has_bias = bias is not None
    ctx.kernel_size = weight.shape[-1]
    ctx.input_hw = tuple(x.shape[-2:])
    saved_x = x if ctx.needs_input_grad[1] else None
    saved_weight = weight if ctx.needs_input_grad[0] else None
    ctx.save_for_backward(saved_x, saved_weight)


def _dynamic_backward(ctx, grad_output):
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = dynamic_depthwise_conv2d_grad_input(grad_output, weight, ctx.padding, *ctx.input_hw)
    need_bias = ctx.has_bias and ctx.needs_input_grad[2]
    if ctx.needs_input_grad[1]:
        grad_weight, grad_b = dynamic_depthwise_conv2d_grad_weight(grad_output, x, ctx.kernel_size, ctx.padding, need_bias)
        if need_bias:
            grad_bias = grad_b
    elif need_bias:
        grad_bias = grad_output.sum((0, 2, 3))
    return grad_x, grad_weight, grad_bias, None


torch.library.register_autograd(
    "hf_localvit::dynamic_depthwise_conv2d", _dynamic_backward, setup_context=_dynamic_setup_context
)


# ----------------------------------------------------------------------------------------------------------------
# Inhomogeneous dynamic depth-wise conv: a k x k kernel per position, shared by groups of contiguous channels.
# ----------------------------------------------------------------------------------------------------------------


def _inhomogeneous_shapes(x: torch.Tensor, weight: torch.Tensor, padding: int) -> tuple[int, int, int, int]:
    channels = x.shape[1]
    groups, kernel_size = weight.shape[1], weight.shape[2]
    if x.ndim != 4 or weight.ndim != 6 or weight.shape[0] != x.shape[0] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"Expected hidden states (B, C, H, W) and kernels (B, G, k, k, H, W), got {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}.")
    if channels % groups != 0:
        raise ValueError(f"{channels} channels cannot be split into {groups} kernel groups.")
    out_h = _output_size(x.shape[2], kernel_size, padding)
    out_w = _output_size(x.shape[3], kernel_size, padding)
    if tuple(weight.shape[-2:]) != (out_h, out_w):
        raise ValueError(
            f"Per-position kernels cover {tuple(weight.shape[-2:])} positions, the output has {(out_h, out_w)}."
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    return groups, kernel_size, out_h, out_w


def _group_tile(channels_per_group: int, height: int, width: int) -> tuple[int, int, int]:
    """`(BC, BH, BW)` of the inhomogeneous kernels: the channels of one group (padded to a power of two, at most
    `MAX_GROUP_CHANNEL_BLOCK`) times a spatial tile, `TILE_ELEMENTS` in all."""
    block_c = min(_next_pow2(channels_per_group), MAX_GROUP_CHANNEL_BLOCK)
    block_w = min(_next_pow2(width), 64, max(1, TILE_ELEMENTS // block_c))
    block_h = min(_next_pow2(height), max(1, TILE_ELEMENTS // (block_c * block_w)))
    return block_c, block_h, block_w


@torch.library.custom_op("hf_localvit::inhomogeneous_depthwise_conv2d", mutates_args=())
def inhomogeneous_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Triton inhomogeneous depth-wise conv: `(B, C, H, W)` features, `(B, G, k, k, H', W')` kernels."""
    groups, kernel_size, out_h, out_w = _inhomogeneous_shapes(x, weight, padding)
    batch, channels, height, width = x.shape
    cpg = channels // groups
    memory_format = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    out = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype, memory_format=memory_format)
    block_c, block_h, block_w = _group_tile(cpg, out_h, out_w)
    n_cblk = triton.cdiv(cpg, block_c)
    n_th, n_tw = _spatial_program_count(out_h, out_w, block_h, block_w)
    _launch(
        kernels.inhomogeneous_dwconv_fwd_kernel, (batch * groups * n_th * n_tw * n_cblk,), x.device,
        x, weight, out,
        channels, cpg, height, width, out_h, out_w, padding,
        *x.stride(), *weight.stride(), *out.stride(),
        groups, n_cblk, n_th, n_tw,
        num_warps=_num_warps(block_c * block_h * block_w),
        K=kernel_size, FP64=_accumulates_in_fp64(x.dtype), BC=block_c, BH=block_h, BW=block_w,
    )
    return out


@inhomogeneous_depthwise_conv2d.register_fake
def _(x, weight, padding):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[-2], weight.shape[-1]))


@torch.library.custom_op("hf_localvit::inhomogeneous_depthwise_conv2d_grad_input", mutates_args=())
def inhomogeneous_depthwise_conv2d_grad_input(grad_output: torch.Tensor, weight: torch.Tensor, padding: int,
                                              height: int, width: int) -> torch.Tensor:
    batch, channels, out_h, out_w = grad_output.shape
    groups, kernel_size = weight.shape[1], weight.shape[2]
    cpg = channels // groups
    memory_format = torch.channels_last if _is_channels_last(grad_output) else torch.contiguous_format
    grad_x = torch.empty((batch, channels, height, width), device=grad_output.device, dtype=grad_output.dtype,
                         memory_format=memory_format)
    block_c, block_h, block_w = _group_tile(cpg, height, width)
    n_cblk = triton.cdiv(cpg, block_c)
    n_th, n_tw = _spatial_program_count(height, width, block_h, block_w)
    _launch(
        kernels.inhomogeneous_dwconv_bwd_input_kernel, (batch * groups * n_th * n_tw * n_cblk,), grad_output.device,
        grad_output, weight, grad_x,
        channels, cpg, height, width, out_h, out_w, padding,
        *grad_output.stride(), *weight.stride(), *grad_x.stride(),
        groups, n_cblk, n_th, n_tw,
        num_warps=_num_warps(block_c * block_h * block_w),
        K=kernel_size, FP64=_accumulates_in_fp64(grad_output.dtype), BC=block_c, BH=block_h, BW=block_w,
    )
    return grad_x


@inhomogeneous_depthwise_conv2d_grad_input.register_fake
def _(grad_output, weight, padding, height, width):
    return grad_output.new_empty((grad_output.shape[0], grad_output.shape[1], height, width))


@torch.library.custom_op("hf_localvit::inhomogeneous_depthwise_conv2d_grad_weight", mutates_args=())
def inhomogeneous_depthwise_conv2d_grad_weight(grad_output: torch.Tensor, x: torch.Tensor, groups: int,
                                               kernel_size: int, padding: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out_h, out_w = grad_output.shape[-2:]
    cpg = channels // groups
    grad_weight = torch.empty((batch, groups, kernel_size, kernel_size, out_h, out_w), device=x.device, dtype=x.dtype)
    block_c, block_h, block_w = _group_tile(cpg, out_h, out_w)
    n_th, n_tw = _spatial_program_count(out_h, out_w, block_h, block_w)
    _launch(
        kernels.inhomogeneous_dwconv_bwd_weight_kernel, (batch * groups * n_th * n_tw,), x.device,
        x, grad_output, grad_weight,
        channels, cpg, height, width, out_h, out_w, padding,
        *x.stride(), *grad_output.stride(), *grad_weight.stride(),
        groups, n_th, n_tw,
        num_warps=_num_warps(block_c * block_h * block_w),
        K=kernel_size, FP64=_accumulates_in_fp64(x.dtype), ONE_CBLK=cpg <= block_c,
        BC=block_c, BH=block_h, BW=block_w,
    )
    return grad_weight


@inhomogeneous_depthwise_conv2d_grad_weight.register_fake
def _(grad_output, x, groups, kernel_size, padding):
    return x.new_empty((x.shape[0], groups, kernel_size, kernel_size, grad_output.shape[-2], grad_output.shape[-1]))


def _inhomogeneous_setup_context(ctx, inputs, output):
    x, weight, padding = inputs
    ctx.padding = padding
    ctx.groups, ctx.kernel_size = weight.shape[1], weight.shape[2]
    ctx.input_hw = tuple(x.shape[-2:])
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)


def _inhomogeneous_backward(ctx, grad_output):
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_x = inhomogeneous_depthwise_conv2d_grad_input(grad_output, weight, ctx.padding, *ctx.input_hw)
    if ctx.needs_input_grad[1]:
        grad_weight = inhomogeneous_depthwise_conv2d_grad_weight(grad_output, x, ctx.groups, ctx.kernel_size, ctx.padding)
    return grad_x, grad_weight, None


torch.library.register_autograd(
    "hf_localvit::inhomogeneous_depthwise_conv2d", _inhomogeneous_backward, setup_context=_inhomogeneous_setup_context
)

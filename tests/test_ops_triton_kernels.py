"""The Triton kernels of `hf_localvit.ops`, run by Triton's interpreter on CPU, against the PyTorch reference ops.

Values and gradients (input, weight, bias) are compared at tight tolerances. Shapes are tiny: the interpreter runs
each program in Python. `hf_localvit.ops` interprets the kernels for CPU tensors whether or not TRITON_INTERPRET
was set before Triton was imported (see `_triton_kernels.py`); `test_ops_dispatch.py` also runs them in a process
started with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hf_localvit import ops  # noqa: E402
from hf_localvit.models.dwnet import ops_dwnet  # noqa: E402
from hf_localvit.ops import _triton_ops  # noqa: E402

TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


def _reference_dynamic(x, w, b, padding):
    with ops.use_backend("reference"):
        return ops_dwnet.per_image_depthwise_conv2d(x, w, b, padding)


def _reference_inhomogeneous(x, w, padding):
    with ops.use_backend("reference"):
        return ops_dwnet.inhomogeneous_depthwise_conv2d(x, w, padding)


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def _compare(fast_fn, reference_fn, inputs, dtype):
    """Forward values and the gradients of every input that requires grad, fast vs reference."""
    fast_inputs, reference_inputs = _leaves(*inputs), _leaves(*inputs)
    fast_out, reference_out = fast_fn(*fast_inputs), reference_fn(*reference_inputs)
    assert fast_out.shape == reference_out.shape and fast_out.dtype == reference_out.dtype
    torch.testing.assert_close(fast_out, reference_out, **TOLERANCES[dtype])
    grad_output = torch.randn_like(reference_out)
    wanted = [i for i, t in enumerate(fast_inputs) if t is not None]
    fast_grads = torch.autograd.grad(fast_out, [fast_inputs[i] for i in wanted], grad_output)
    reference_grads = torch.autograd.grad(reference_out, [reference_inputs[i] for i in wanted], grad_output)
    for index, fast_grad, reference_grad in zip(wanted, fast_grads, reference_grads):
        assert fast_grad.shape == reference_grad.shape, index
        torch.testing.assert_close(fast_grad, reference_grad, **TOLERANCES[dtype], msg=lambda m: f"input {index}: {m}")


@pytest.mark.parametrize(
    "dtype, shape, kernel_size, padding, with_bias",
    [
        (torch.float32, (2, 8, 9, 11), 3, 1, True),
        (torch.float32, (2, 8, 13, 12), 7, 3, True),
        (torch.float64, (2, 8, 10, 10), 7, 3, False),
        (torch.float64, (2, 4, 9, 10), 5, 1, True),  # "valid"-ish padding: the output is smaller
    ],
)
def test_dynamic_conv_matches_reference(dtype, shape, kernel_size, padding, with_bias):
    batch, channels = shape[:2]
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(batch, channels, kernel_size, kernel_size, dtype=dtype)
    b = torch.randn(channels, dtype=dtype) if with_bias else None
    _compare(
        lambda x, w, b: ops.per_image_depthwise_conv2d(x, w, b, padding),
        lambda x, w, b: _reference_dynamic(x, w, b, padding),
        (x, w, b),
        dtype,
    )


def test_dynamic_conv_many_tiles_chunks_and_channels_last(monkeypatch):
    """Small tiles and one-row chunks: several channel blocks, spatial tiles and weight-gradient chunks."""
    monkeypatch.setattr(_triton_ops, "TILE_ELEMENTS", 16)
    monkeypatch.setattr(_triton_ops, "MAX_CHUNK_POSITIONS", 1)
    x = torch.randn(1, 3, 7, 9)
    w, b = torch.randn(1, 3, 3, 3), torch.randn(3)
    run = lambda x, w, b: ops.per_image_depthwise_conv2d(x, w, b, 1)  # noqa: E731
    reference = lambda x, w, b: _reference_dynamic(x, w, b, 1)  # noqa: E731
    _compare(run, reference, (x, w, b), torch.float32)
    channels_last = x.to(memory_format=torch.channels_last)
    assert run(channels_last, w, b).is_contiguous(memory_format=torch.channels_last)
    _compare(run, reference, (channels_last, w, b), torch.float32)


def test_dynamic_conv_partial_gradients_and_weight_dtype():
    """Only some inputs need grad (the bias gradient then comes from a plain sum); kernels in another dtype."""
    x, w, b = torch.randn(2, 8, 9, 9), torch.randn(2, 8, 3, 3, dtype=torch.float64), torch.randn(8)
    x.requires_grad_(True)
    b.requires_grad_(True)
    out = ops.per_image_depthwise_conv2d(x, w, b, 1)
    reference_x, reference_b = x.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    reference = _reference_dynamic(reference_x, w, reference_b, 1)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grad_output = torch.randn_like(out)
    for fast, slow in zip(torch.autograd.grad(out, (x, b), grad_output), torch.autograd.grad(reference, (reference_x, reference_b), grad_output)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dynamic_conv_half_precision_accumulates_in_float32(dtype):
    x, w, b = torch.randn(1, 4, 9, 9), torch.randn(1, 4, 3, 3), torch.randn(4)
    out = ops.per_image_depthwise_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), 1)
    assert out.dtype == dtype
    expected = _reference_dynamic(x.to(dtype).float(), w.to(dtype).float(), b.to(dtype).float(), 1)
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "dtype, shape, groups, kernel_size, padding",
    [
        (torch.float32, (2, 8, 9, 11), 2, 3, 1),
        (torch.float32, (2, 8, 9, 9), 4, 7, 3),
        (torch.float64, (2, 8, 13, 12), 4, 3, 1),
        (torch.float64, (1, 6, 9, 10), 2, 3, 0),  # no padding: the output is smaller
    ],
)
def test_inhomogeneous_conv_matches_reference(dtype, shape, groups, kernel_size, padding):
    batch, channels, height, width = shape
    out_h, out_w = height + 2 * padding - kernel_size + 1, width + 2 * padding - kernel_size + 1
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(batch, groups, kernel_size, kernel_size, out_h, out_w, dtype=dtype)
    _compare(
        lambda x, w: ops.inhomogeneous_depthwise_conv2d(x, w, padding),
        lambda x, w: _reference_inhomogeneous(x, w, padding),
        (x, w),
        dtype,
    )


def test_inhomogeneous_conv_many_channel_blocks_tiles_and_channels_last(monkeypatch):
    """Groups wider than a channel block (the weight gradient loops over blocks) and several spatial tiles."""
    monkeypatch.setattr(_triton_ops, "TILE_ELEMENTS", 16)
    monkeypatch.setattr(_triton_ops, "MAX_GROUP_CHANNEL_BLOCK", 2)
    x, w = torch.randn(1, 6, 7, 9), torch.randn(1, 1, 3, 3, 7, 9)
    run = lambda x, w: ops.inhomogeneous_depthwise_conv2d(x, w, 1)  # noqa: E731
    reference = lambda x, w: _reference_inhomogeneous(x, w, 1)  # noqa: E731
    _compare(run, reference, (x, w), torch.float32)
    _compare(run, reference, (x.to(memory_format=torch.channels_last), w), torch.float32)


def test_inhomogeneous_conv_promotes_and_validates_like_the_reference():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 3, 3, 5, 5, dtype=torch.float64)
    out = ops.inhomogeneous_depthwise_conv2d(x, w, 1)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference_inhomogeneous(x, w, 1))
    with pytest.raises(ValueError, match="kernel groups"):
        ops.inhomogeneous_depthwise_conv2d(torch.randn(1, 5, 5, 5), torch.randn(1, 2, 3, 3, 5, 5), 1)
    with pytest.raises(ValueError, match="positions"):
        ops.inhomogeneous_depthwise_conv2d(x, torch.randn(1, 2, 3, 3, 4, 5), 1)


def test_custom_ops_pass_torch_library_opcheck():
    """Schema, fake (meta) implementations, autograd registration and AOT dispatch: what torch.compile relies on."""
    x, w, b = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), torch.randn(4)
    torch.library.opcheck(
        _triton_ops.dynamic_depthwise_conv2d, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), 1)
    )
    torch.library.opcheck(_triton_ops.inhomogeneous_depthwise_conv2d, (x, torch.randn(1, 2, 3, 3, 6, 6, requires_grad=True), 1))

"""Fast (Triton) kernels of DWNet's dynamic depth-wise convolutions, and the policy that picks them.

`hf_localvit.models.dwnet.ops_dwnet` holds the PyTorch reference ops; each of them asks `use_triton(...)` here and
calls `per_image_depthwise_conv2d` / `inhomogeneous_depthwise_conv2d` below when it answers yes.

Which path runs:

- `"auto"` (default): the Triton kernels when every tensor is on CUDA and Triton imports; else the reference.
- `"triton"`: always the Triton kernels. CUDA tensors run them compiled; CPU tensors run them through Triton's
  interpreter (slow: for tests on machines without a GPU). Raises if Triton cannot be imported.
- `"reference"`: always the PyTorch reference.

Set it with the environment variable `HF_LOCALVIT_OPS=auto|triton|reference` (read at every call), or in code
with `set_backend(...)` / the `use_backend(...)` context manager, which take precedence over the variable.

Importing this package does not import Triton; the kernels are imported on first use.

The kernels (`_triton_kernels.py`) are wrapped as `torch.library.custom_op`s with `register_autograd` and fake
implementations (`_triton_ops.py`): gradients of the input, the kernels and the bias, and `torch.compile` traces
them without graph breaks (it treats them as opaque calls). No double backward.

Performance has not been measured on a GPU yet (the kernels were compiled for sm_90 with Triton 3.8 to check that
they build without register spills at DWNet's shapes). To measure, on a CUDA machine:

    python -m hf_localvit.ops.benchmark [--dtype bf16] [--channels-last]   # per stage, vs a static depth-wise conv
    python bench/throughput.py --device cuda --models dynamic-dwnet-tiny,i-dynamic-dwnet-tiny,dwnet-tiny --mode both

and compare `HF_LOCALVIT_OPS=reference` with the default. The tile shapes are heuristics
(`_triton_ops.TILE_ELEMENTS`, `ELEMENTS_PER_THREAD`, `MAX_CHUNK_POSITIONS`, `MAX_GROUP_CHANNEL_BLOCK`): sweep them
there if the per-image conv is under 0.9x the static one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "triton", "reference")
ENV_VAR = "HF_LOCALVIT_OPS"

_backend_override: str | None = None
# Dtypes the kernels handle (they accumulate in float32, or float64 for float64).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Within-plane offsets are 32-bit in the kernels: larger tensors take the reference path under "auto".
_MAX_NUMEL = 2**31 - 1


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"Unknown ops backend {name!r}; expected one of {BACKENDS}.")
    return name


def get_backend() -> str:
    """The backend in force: `set_backend`'s, else `$HF_LOCALVIT_OPS`, else `"auto"`."""
    if _backend_override is not None:
        return _backend_override
    return _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto")


def set_backend(name: str | None) -> None:
    """Force `"auto"`, `"triton"` or `"reference"` for this process; `None` goes back to the environment variable."""
    global _backend_override
    _backend_override = None if name is None else _check(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with a given backend, then restore the previous setting."""
    global _backend_override
    previous = _backend_override
    set_backend(name)
    try:
        yield
    finally:
        _backend_override = previous


_triton_ok: bool | None = None
_import_error: BaseException | None = None


def triton_available() -> bool:
    """Whether Triton and the kernels import (the failure, if any, is kept for the error of a forced "triton")."""
    global _triton_ok, _import_error
    if _triton_ok is None:
        try:
            from . import _triton_ops  # noqa: F401
        except Exception as error:  # ImportError, or a Triton install that fails while initialising
            _import_error = error
            _triton_ok = False
        else:
            _triton_ok = True
    return _triton_ok


def _kernel_ready(tensors: tuple[torch.Tensor | None, ...], devices: tuple[str, ...]) -> bool:
    present = [tensor for tensor in tensors if tensor is not None]
    return (
        bool(present)
        and all(tensor.device.type in devices for tensor in present)
        and len({tensor.device for tensor in present}) == 1
        and all(tensor.dtype in SUPPORTED_DTYPES for tensor in present)
        and all(0 < tensor.numel() <= _MAX_NUMEL for tensor in present)
    )


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether the ops on these tensors should take the Triton kernels (see the module docstring)."""
    backend = get_backend()
    if backend == "reference":
        return False
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                f"{ENV_VAR}=triton (or set_backend('triton')) but the Triton kernels cannot be imported: {_import_error!r}"
            ) from _import_error
        return _kernel_ready(tensors, ("cuda", "cpu"))
    return _kernel_ready(tensors, ("cuda",)) and triton_available()


def per_image_depthwise_conv2d(
    hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Triton version of `ops_dwnet.per_image_depthwise_conv2d` (same arguments and casts), with autograd."""
    from ._triton_ops import dynamic_depthwise_conv2d

    dtype = hidden_states.dtype
    return dynamic_depthwise_conv2d(
        hidden_states, weight.to(dtype), bias.to(dtype) if bias is not None else None, int(padding)
    )


def inhomogeneous_depthwise_conv2d(hidden_states: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Triton version of `ops_dwnet.inhomogeneous_depthwise_conv2d` (same arguments and promotion), with autograd."""
    from ._triton_ops import inhomogeneous_depthwise_conv2d as op

    dtype = torch.promote_types(hidden_states.dtype, weight.dtype)
    return op(hidden_states.to(dtype), weight.to(dtype), int(padding))


__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "get_backend",
    "inhomogeneous_depthwise_conv2d",
    "per_image_depthwise_conv2d",
    "set_backend",
    "triton_available",
    "use_backend",
    "use_triton",
]

"""How `ops_dwnet` picks between its PyTorch reference and the Triton kernels of `hf_localvit.ops`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO_ROOT
from hf_localvit import ops
from hf_localvit.models.dwnet import ops_dwnet

OPS_DWNET_PATH = REPO_ROOT / "hf_localvit" / "models" / "dwnet" / "ops_dwnet.py"


@pytest.fixture(autouse=True)
def _clean_backend(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    ops.set_backend(None)
    yield
    ops.set_backend(None)


def test_backend_comes_from_the_environment_unless_set_in_code(monkeypatch):
    assert ops.get_backend() == "auto"
    monkeypatch.setenv(ops.ENV_VAR, "Reference")
    assert ops.get_backend() == "reference"
    ops.set_backend("triton")
    assert ops.get_backend() == "triton"
    with ops.use_backend("auto"):
        assert ops.get_backend() == "auto"
    assert ops.get_backend() == "triton"
    ops.set_backend(None)
    assert ops.get_backend() == "reference"
    monkeypatch.setenv(ops.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="auto"):
        ops.get_backend()
    with pytest.raises(ValueError, match="reference"):
        ops.set_backend("cuda")


def test_auto_keeps_cpu_tensors_on_the_reference_path():
    x = torch.randn(1, 2, 5, 5)
    assert not ops.use_triton(x)
    with ops.use_backend("reference"):
        assert not ops.use_triton(x)


def test_forced_triton_takes_cpu_tensors_of_supported_dtypes():
    pytest.importorskip("triton")
    with ops.use_backend("triton"):
        assert ops.use_triton(torch.randn(2, 2), None, torch.randn(2, dtype=torch.float16))
        assert not ops.use_triton(torch.randn(2, 2), torch.ones(2, dtype=torch.int64))
        assert not ops.use_triton(torch.randn(0, 2))


def _spy(monkeypatch, name):
    calls = []
    original = getattr(ops, name)
    monkeypatch.setattr(ops, name, lambda *args: calls.append(name) or original(*args))
    return calls


def test_ops_dwnet_dispatches_to_the_kernels_only_when_asked(monkeypatch):
    pytest.importorskip("triton")
    dynamic_calls = _spy(monkeypatch, "per_image_depthwise_conv2d")
    inhomogeneous_calls = _spy(monkeypatch, "inhomogeneous_depthwise_conv2d")
    x, w, b, per_position = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), torch.randn(4), torch.randn(1, 2, 3, 3, 6, 6)

    reference = ops_dwnet.per_image_depthwise_conv2d(x, w, b, 1), ops_dwnet.inhomogeneous_depthwise_conv2d(x, per_position, 1)
    assert dynamic_calls == [] and inhomogeneous_calls == []  # "auto" on CPU

    monkeypatch.setenv(ops.ENV_VAR, "triton")
    fast = ops_dwnet.per_image_depthwise_conv2d(x, w, b, 1), ops_dwnet.inhomogeneous_depthwise_conv2d(x, per_position, 1)
    assert len(dynamic_calls) == 1 and len(inhomogeneous_calls) == 1
    for fast_out, reference_out in zip(fast, reference):
        torch.testing.assert_close(fast_out, reference_out, rtol=1e-5, atol=1e-5)

    ops.set_backend("reference")  # wins over the environment
    ops_dwnet.per_image_depthwise_conv2d(x, w, b, 1)
    assert len(dynamic_calls) == 1


def _load_ops_dwnet_without_hf_localvit(monkeypatch):
    """`ops_dwnet.py` as a `trust_remote_code` folder holds it, in a process where `hf_localvit` cannot be imported."""
    monkeypatch.setitem(sys.modules, "hf_localvit", None)
    spec = importlib.util.spec_from_file_location("remote_ops_dwnet", OPS_DWNET_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ops_dwnet_falls_back_to_the_reference_without_hf_localvit(monkeypatch):
    remote = _load_ops_dwnet_without_hf_localvit(monkeypatch)
    x, w, b = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), torch.randn(4)
    torch.testing.assert_close(remote.per_image_depthwise_conv2d(x, w, b, 1), ops_dwnet.per_image_depthwise_conv2d(x, w, b, 1))
    per_position = torch.randn(1, 2, 3, 3, 6, 6)
    torch.testing.assert_close(
        remote.inhomogeneous_depthwise_conv2d(x, per_position, 1), ops_dwnet.inhomogeneous_depthwise_conv2d(x, per_position, 1)
    )
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    with pytest.raises(ImportError, match="hf_localvit"):
        remote.per_image_depthwise_conv2d(x, w, b, 1)


def test_forced_triton_without_triton_is_an_error(monkeypatch):
    monkeypatch.setattr(ops, "_triton_ok", False)
    monkeypatch.setattr(ops, "_import_error", ImportError("No module named 'triton'"))
    assert not ops.use_triton(torch.randn(1, device="meta"))
    with ops.use_backend("triton"), pytest.raises(RuntimeError, match="triton"):
        ops.use_triton(torch.randn(1))


INTERPRETED_SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    import triton
    from triton.runtime.interpreter import InterpretedFunction
    from hf_localvit import ops
    from hf_localvit.models.dwnet import ops_dwnet
    from hf_localvit.ops import _triton_kernels

    torch.manual_seed(0)
    report = {"interpreted": isinstance(_triton_kernels.dynamic_dwconv_fwd_kernel, InterpretedFunction)}

    def run(fn, inputs):
        inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
        out = fn(*inputs)
        grads = torch.autograd.grad(out, [t for t in inputs if t is not None], torch.ones_like(out) * 0.5)
        return [out, *grads]

    x, w, b = torch.randn(2, 8, 9, 10), torch.randn(2, 8, 3, 3), torch.randn(8)
    per_position = torch.randn(2, 4, 3, 3, 9, 10)
    cases = {
        "dynamic": (lambda x, w, b: ops_dwnet.per_image_depthwise_conv2d(x, w, b, 1), (x, w, b)),
        "inhomogeneous": (lambda x, w: ops_dwnet.inhomogeneous_depthwise_conv2d(x, w, 1), (x, per_position)),
    }
    for name, (fn, inputs) in cases.items():
        fast = run(fn, inputs)  # HF_LOCALVIT_OPS=triton from the environment
        with ops.use_backend("reference"):
            reference = run(fn, inputs)
        report[name] = [(a - r).abs().max().item() for a, r in zip(fast, reference)]
    print(json.dumps(report))
    """
)


def test_kernels_run_in_a_process_started_with_triton_interpret():
    """The documented way: TRITON_INTERPRET=1 before Triton is imported, HF_LOCALVIT_OPS=triton, CPU tensors."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", ops.ENV_VAR: "triton", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", INTERPRETED_SCRIPT], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["interpreted"]
    for name in ("dynamic", "inhomogeneous"):
        assert max(report[name]) < 1e-4, (name, report[name])


def test_micro_benchmark_runs_on_cpu():
    from hf_localvit.ops.benchmark import format_rows, run_benchmark

    rows = run_benchmark("cpu", torch.float32, 1, 3, False, 1, stages=[(8, 5)])
    assert [row["pass"] for row in rows] == ["fwd", "fwd+bwd"]
    assert {"static_ms", "dynamic_reference_ms", "inhomogeneous_reference_ms"} <= set(rows[0])
    assert "static/dynamic" in format_rows(rows)

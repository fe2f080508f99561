"""Micro-benchmark of the dynamic depth-wise convolutions against a static depth-wise conv, on DWNet's shapes.

    python -m hf_localvit.ops.benchmark                       # CUDA: static, reference and Triton, fwd and fwd+bwd
    python -m hf_localvit.ops.benchmark --dtype bf16 --channels-last --batch-size 128
    python -m hf_localvit.ops.benchmark --device cpu --batch-size 2   # CPU: static and reference only

Per stage of DWNet-tiny at 224 px (C = 96..768, H = W = 56..7, k = 7, 32 kernel groups for the inhomogeneous
conv) it prints milliseconds per call and the ratio `static / dynamic` (the issue's target is >= 0.9 for the
Triton per-image conv). Times are medians of CUDA-event-timed runs (`triton.testing.do_bench`) on GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY_STAGES = [(96, 56), (192, 28), (384, 14), (768, 7)]


def _time_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=max(20, repeats * 5), return_mode="median"))
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _step(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], backward: bool) -> Callable[[], object]:
    if not backward:
        return lambda: fn(*inputs)
    leaves = [tensor for tensor in inputs if tensor.requires_grad]

    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out, leaves, torch.ones_like(out))

    return run


def run_benchmark(device: str, dtype: torch.dtype, batch_size: int, kernel_size: int, channels_last: bool,
                  repeats: int, stages=TINY_STAGES, groups: int = 32) -> list[dict]:
    from hf_localvit import ops
    from hf_localvit.models.dwnet import ops_dwnet

    device = torch.device(device)
    with_triton = device.type == "cuda" and ops.triton_available()
    padding = kernel_size // 2
    rows = []
    for channels, size in stages:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch_size, channels, size, size, device=device, dtype=dtype).to(memory_format=memory_format)
        static_w = torch.randn(channels, 1, kernel_size, kernel_size, device=device, dtype=dtype)
        dyn_w = torch.randn(batch_size, channels, kernel_size, kernel_size, device=device, dtype=dtype)
        bias = torch.randn(channels, device=device, dtype=dtype)
        group_count = channels // max(1, channels // groups)  # DWNet: max(1, C // 32) channels per group
        inh_w = torch.randn(batch_size, group_count, kernel_size, kernel_size, size, size, device=device, dtype=dtype)
        for tensor in (x, static_w, dyn_w, bias, inh_w):
            tensor.requires_grad_(True)

        def static(x, w, b):
            return F.conv2d(x, w, b, padding=padding, groups=channels)

        def dynamic(x, w, b):
            return ops_dwnet.per_image_depthwise_conv2d(x, w, b, padding)

        def inhomogeneous(x, w):
            return ops_dwnet.inhomogeneous_depthwise_conv2d(x, w, padding)

        for backward in (False, True):
            row = {"C": channels, "H": size, "pass": "fwd+bwd" if backward else "fwd"}
            row["static_ms"] = _time_ms(_step(static, [x, static_w, bias], backward), device, repeats)
            backends = ["reference"] + (["triton"] if with_triton else [])
            for backend in backends:
                with ops.use_backend(backend):
                    row[f"dynamic_{backend}_ms"] = _time_ms(_step(dynamic, [x, dyn_w, bias], backward), device, repeats)
                    row[f"inhomogeneous_{backend}_ms"] = _time_ms(
                        _step(inhomogeneous, [x, inh_w], backward), device, repeats
                    )
            rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [" | ".join(columns + ["static/dynamic"])]
    for row in rows:
        best = row.get("dynamic_triton_ms", row["dynamic_reference_ms"])
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append(" | ".join(cells + [f"{row['static_ms'] / best:.2f}"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--stages", default=None, help="Comma-separated CxH pairs, e.g. 96x56,768x7.")
    args = parser.parse_args(argv)
    stages = TINY_STAGES
    if args.stages:
        stages = [tuple(int(v) for v in pair.split("x")) for pair in args.stages.split(",")]
    rows = run_benchmark(args.device, DTYPES[args.dtype], args.batch_size, args.kernel_size, args.channels_last,
                         args.repeats, stages)
    print(format_rows(rows))


if __name__ == "__main__":
    main()

"""Throughput of our DWNet presets against the original implementation and the Swin / ConvNeXt peers.

All models are timed side by side in one run, with random weights:

    python bench/throughput.py                                   # CPU defaults: fp32, batch 8, inference
    python bench/throughput.py --device cuda --batch-size 256 --dtype bf16 --compile both --mode both
    python bench/throughput.py --original-repo ~/DemystifyLocalViT --models dwnet-tiny,original-dwnet-tiny,swin-tiny

`--original-repo` points at a checkout of the original DWNet code (needs `timm`); its models are then timed too.
Each row is the median of `--repeats` timed steps after `--warmup` steps (CUDA events on GPU); the models are
timed in interleaved rounds so that a change of machine load affects all of them alike. Rows are printed as a
table with img/s, ratios to the peers and peak memory, and appended as JSON lines to `--results`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

OUR_PRESETS = [
    "dwnet-tiny", "dynamic-dwnet-tiny", "i-dynamic-dwnet-tiny", "dwnet-base", "dynamic-dwnet-base", "i-dynamic-dwnet-base",
]
PEERS = ["swin-tiny", "swin-base", "convnext-tiny"]
TIMM_PEERS = {"timm-swin-tiny": "swin_tiny_patch4_window7_224", "timm-convnext-tiny": "convnext_tiny"}
# The Swin of the same size, for the "x Swin" column.
SIZE_PEER = {"tiny": "swin-tiny", "base": "swin-base"}


@dataclass
class Row:
    model: str
    mode: str
    dtype: str
    compiled: bool
    batch_size: int
    resolution: int
    device: str
    images_per_second: float
    median_ms: float
    peak_memory_mb: float | None
    machine: str


def build_ours(name: str, fused: bool) -> nn.Module:
    import hf_localvit  # noqa: F401

    from hf_localvit import DWNetForImageClassification, dwnet_preset_config

    model = DWNetForImageClassification(dwnet_preset_config(name, num_labels=1000))
    if fused:
        model.eval().fuse_batch_norms()
    return model


def build_transformers_peer(name: str) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification, SwinConfig, SwinForImageClassification

    if name == "swin-tiny":
        return SwinForImageClassification(SwinConfig(num_labels=1000))
    if name == "swin-base":
        return SwinForImageClassification(SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], num_labels=1000))
    if name == "convnext-tiny":
        return ConvNextForImageClassification(ConvNextConfig(num_labels=1000))
    raise ValueError(name)


def load_original_module(repo: Path) -> types.ModuleType:
    """Import the original `models/dwnet.py`. Its inhomogeneous kernel imports CuPy and mmcv at module level; those
    are stubbed so the static and dynamic models (pure PyTorch) can be built."""
    missing = [name for name in ("cupy", "mmcv") if name not in sys.modules and importlib.util.find_spec(name) is None]
    for stub in missing + (["mmcv.cnn"] if "mmcv" in missing else []):
        module = types.ModuleType(stub)
        module.__dict__.update(_util=types.SimpleNamespace(memoize=lambda **_: (lambda f: f)), ConvModule=None)
        sys.modules[stub] = module
    package = types.ModuleType("original_dwnet_models")
    package.__path__ = [str(repo / "models")]
    sys.modules["original_dwnet_models"] = package
    spec = importlib.util.spec_from_file_location("original_dwnet_models.dwnet", repo / "models" / "dwnet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_original(name: str, repo: Path) -> nn.Module:
    """The original classification DWNet. Its `DWBlock` falls through to a static conv for dynamic models (an
    if/if/else slip); the released dynamic checkpoints use `DynamicDWConv`, so that is what we put back."""
    if name.startswith("i-dynamic"):
        raise RuntimeError("the original inhomogeneous model needs its CuPy CUDA kernel, which no longer compiles")
    original = load_original_module(repo)
    size = name.rsplit("-", 1)[1]
    dims = {"tiny": (96, [2, 2, 6, 2]), "base": (128, [2, 2, 18, 2])}[size]
    model = original.DWNet(embed_dim=dims[0], depths=dims[1], inhomo_heads=[None] * 4)
    if name.startswith("dynamic"):
        for layer in model.layers:
            for block in layer.blocks:
                dim = block.attn2conv.dim
                block.attn2conv.conv = original.DynamicDWConv(dim, kernel_size=7, padding=3, groups=dim)
    return model


def build_model(name: str, original_repo: Path | None) -> nn.Module:
    if name.endswith("+fused"):
        return build_ours(name.removesuffix("+fused"), fused=True)
    if name in OUR_PRESETS:
        return build_ours(name, fused=False)
    if name in PEERS:
        return build_transformers_peer(name)
    if name in TIMM_PEERS:
        import timm

        return timm.create_model(TIMM_PEERS[name], num_classes=1000)
    if name.startswith("original-"):
        if original_repo is None:
            raise RuntimeError("pass --original-repo PATH (a checkout of the original DWNet code) to time it")
        return build_original(name.removeprefix("original-"), original_repo)
    raise ValueError(f"unknown model {name!r}")


def logits_of(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds for one step; CUDA events on GPU so asynchronous launches are measured correctly."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


@dataclass
class Candidate:
    """A model ready to run: its step function and what was measured while warming it up."""

    name: str
    step: Callable[[], None]
    peak_memory_mb: float | None
    times: list


def prepare(name: str, args: argparse.Namespace, mode: str, compiled: bool) -> Candidate:
    """Build the model and its inputs, run the warm-up steps (and compilation), record peak memory."""
    device = torch.device(args.device)
    model = build_model(name, args.original_repo).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pixel_values = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device)
    if args.channels_last:
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    runner = torch.compile(model) if compiled else model
    if mode == "inference":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                logits_of(runner(pixel_values))
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            with autocast():
                loss = nn.functional.cross_entropy(logits_of(runner(pixel_values)).float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return Candidate(name, step, peak, [])


def measure(candidates: list[Candidate], args: argparse.Namespace, mode: str, compiled: bool) -> list[Row]:
    """Time the models in interleaved rounds (A B C A B C ...), so load changes hit every model alike."""
    device = torch.device(args.device)
    for _ in range(args.repeats):
        for candidate in candidates:
            candidate.times.append(timed(candidate.step, device))
    machine = (
        torch.cuda.get_device_name() if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    )
    rows = []
    for candidate in candidates:
        seconds = statistics.median(candidate.times)
        rows.append(Row(candidate.name, mode, args.dtype, compiled, args.batch_size, args.resolution, device.type,
                        args.batch_size / seconds, seconds * 1000, candidate.peak_memory_mb, machine))
    return rows


def ratio(rows: list[Row], row: Row, other: str) -> str:
    peer = next((r for r in rows if r.model == other and (r.mode, r.dtype, r.compiled) == (row.mode, row.dtype, row.compiled)), None)
    return f"{row.images_per_second / peer.images_per_second:.2f}x" if peer else "-"


def print_table(rows: list[Row]) -> None:
    header = f"{'model':<26} {'mode':<9} {'dtype':<5} {'compiled':<8} {'img/s':>9} {'ms/step':>9} {'x original':>10} {'x Swin':>7} {'x ConvNeXt-T':>12} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        base_name = row.model.removesuffix("+fused")
        original = f"original-{base_name}" if base_name in OUR_PRESETS else ""
        size = base_name.rsplit("-", 1)[-1]
        print(
            f"{row.model:<26} {row.mode:<9} {row.dtype:<5} {str(row.compiled):<8} {row.images_per_second:>9.1f} "
            f"{row.median_ms:>9.1f} {ratio(rows, row, original):>10} {ratio(rows, row, SIZE_PEER.get(size, '')):>7} "
            f"{ratio(rows, row, 'convnext-tiny'):>12} {'-' if row.peak_memory_mb is None else str(round(row.peak_memory_mb)):>8}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="Comma-separated; default: our six presets and the peers.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="Default 256 on GPU, 8 on CPU.")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="Default bf16 on GPU, fp32 on CPU.")
    parser.add_argument("--mode", choices=["inference", "train", "both"], default="inference")
    parser.add_argument("--compile", choices=["no", "yes", "both"], default="no")
    parser.add_argument("--fused", action="store_true", help="Also time our models with BatchNorms folded.")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--original-repo", type=Path, default=None, help="Checkout of the original DWNet code.")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("results.jsonl"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (256 if on_gpu else 8)
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2)
    args.repeats = args.repeats if args.repeats is not None else (30 if on_gpu else 5)
    if args.models:
        names = args.models.split(",")
    else:
        names = OUR_PRESETS + PEERS + [n for n in TIMM_PEERS if importlib.util.find_spec("timm")]
        if args.original_repo:
            names += [f"original-{n}" for n in OUR_PRESETS if not n.startswith("i-")]
    if args.fused:
        names += [f"{n}+fused" for n in names if n in OUR_PRESETS]
    modes = ["inference", "train"] if args.mode == "both" else [args.mode]
    compiles = [False, True] if args.compile == "both" else [args.compile == "yes"]
    rows: list[Row] = []
    for mode in modes:
        for compiled in compiles:
            candidates = []
            for name in names:
                if mode == "train" and name.endswith("+fused"):
                    continue
                try:
                    candidates.append(prepare(name, args, mode, compiled))
                except Exception as error:  # one model failing must not hide the others' numbers
                    print(f"skipped {name} ({mode}, compiled={compiled}): {error}", file=sys.stderr)
            rows.extend(measure(candidates, args, mode, compiled))
            del candidates
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print()
    print_table(rows)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row)) + "\n")
    print(f"\nappended {len(rows)} rows to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

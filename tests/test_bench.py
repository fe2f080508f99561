"""The benchmark script runs end to end (timings themselves live in bench/RESULTS.md, not in tests)."""

from __future__ import annotations

import importlib.util
import json
import sys

from conftest import REPO_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("throughput", REPO_ROOT / "bench" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_rows_for_ours_fused_and_peers(tmp_path, capsys):
    bench = load_bench()
    results = tmp_path / "results.jsonl"
    assert bench.main([
        "--models", "dwnet-tiny,convnext-tiny", "--fused", "--mode", "both", "--device", "cpu",
        "--resolution", "32", "--batch-size", "2", "--warmup", "0", "--repeats", "1", "--results", str(results),
    ]) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert {(r["model"], r["mode"]) for r in rows} == {
        ("dwnet-tiny", "inference"), ("convnext-tiny", "inference"), ("dwnet-tiny+fused", "inference"),
        ("dwnet-tiny", "train"), ("convnext-tiny", "train"),
    }
    assert all(r["images_per_second"] > 0 and r["batch_size"] == 2 for r in rows)
    table = capsys.readouterr().out
    assert "x ConvNeXt-T" in table and "dwnet-tiny+fused" in table


def test_original_models_need_the_original_code(tmp_path, capsys):
    bench = load_bench()
    results = tmp_path / "results.jsonl"
    bench.main(["--models", "original-dwnet-tiny", "--device", "cpu", "--resolution", "32", "--batch-size", "1",
                "--warmup", "0", "--repeats", "1", "--results", str(results)])
    assert "--original-repo" in capsys.readouterr().err
    assert results.read_text() == ""

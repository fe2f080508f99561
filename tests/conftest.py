"""Shared test fixtures: offline Hub, the reference folder, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

import hf_localvit  # noqa: E402,F401  (registers the Auto classes)

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config_kwargs(mixer: str = "static", **overrides) -> dict:
    """A model small enough for fast CPU tests."""
    kwargs = {"embed_dim": 16, "depths": [1, 1, 2, 1], "mixer": mixer, "num_labels": 5, "drop_path_rate": 0.0}
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def single_thread():
    """Small, many-shaped ops (detection heads): one thread is faster and steadier than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline_fine_tuning(monkeypatch, tmp_path, single_thread):
    """finetune.py runs in-process: no Hub, a datasets cache of the test's own, one thread for the tiny models."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))

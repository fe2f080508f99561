"""Kill a fine-tuning run (SIGKILL, mid-epoch, or while it writes a checkpoint) and resume it: it must end exactly
where an uninterrupted run with the same seed ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_localvit.training.testing import save_tiny_model, write_image_folder
from hf_localvit.training.trainer import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return {
        "root": root,
        "model": save_tiny_model(root / "tiny", num_labels=3),  # drop path 0.1: the model draws random numbers too
        "data": write_image_folder(root / "shapes", train_per_class=16, validation_per_class=3),
    }


def _finetune(setup, output: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    # 48 images, batches of 8, 2 batches per step: 3 steps per epoch; checkpoints at steps 2, 4 (mid-epoch), 6, 8
    args = [
        "--model", str(setup["model"]), "--dataset", str(setup["data"]), "--output-dir", str(output),
        "--max-steps", "8", "--per-device-train-batch-size", "8", "--gradient-accumulation-steps", "2",
        "--learning-rate", "2e-3", "--checkpoint-steps", "2", "--checkpoint-epochs", "0",
        "--checkpoints-total-limit", "3",
        "--eval-steps", "3",
        "--logging-steps", "1", "--mixup", "0.8", "--cutmix", "1.0", "--auto-augment", "trivial",
        "--random-erasing", "0.25", "--num-workers", "1", *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(setup["root"] / "datasets-cache"),
    }
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, str(REPO / "finetune.py"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def _results(output: Path) -> dict:
    return json.loads((output / "all_results.json").read_text())


def _assert_same_run(resumed: Path, reference: Path) -> None:
    got, expected = _results(resumed), _results(reference)
    assert got["global_step"] == expected["global_step"] == 8
    for key in ("eval_accuracy", "eval_loss", "train_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    assert len(got["log_history"]) == len(expected["log_history"])
    for mine, theirs in zip(got["log_history"], expected["log_history"]):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (mine["step"], key)
    weights, reference_weights = load_file(resumed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    output = setup["root"] / "uninterrupted"
    run = _finetune(setup, output)
    assert run.returncode == 0, run.stderr[-3000:]
    return output


def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(setup, uninterrupted):
    output = setup["root"] / "killed"
    killed = _finetune(setup, output, fault="after-step:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (output / "model.safetensors").exists()
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]

    resumed = _finetune(setup, output, "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr and "step 4, epoch 1, 2 batches into it" in resumed.stderr
    assert _results(output)["resumed_from"].endswith("checkpoint-4")
    _assert_same_run(output, uninterrupted)


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(setup, uninterrupted):
    output = setup["root"] / "killed-while-saving"
    killed = _finetune(setup, output, fault="checkpoint-written:6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    names = sorted(p.name for p in (output / "checkpoints").iterdir())
    assert names == [".tmp-checkpoint-6", "checkpoint-2", "checkpoint-4"]  # the half-written one is not a checkpoint

    resumed = _finetune(setup, output, "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _results(output)["resumed_from"].endswith("checkpoint-4")
    assert not (output / "checkpoints" / ".tmp-checkpoint-6").exists()
    _assert_same_run(output, uninterrupted)

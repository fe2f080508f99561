"""Two CPU processes under `accelerate launch` (DDP on gloo): replicas stay identical and the metrics cover the
whole evaluation set exactly once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hf_localvit  # noqa: F401  (Auto classes)
from hf_localvit.training.testing import save_tiny_model, shapes_dataset

REPO = Path(__file__).resolve().parents[1]
EVAL_ROWS = 13  # odd on purpose: Accelerate pads the last batch, gather_for_metrics must drop the padding


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    shapes_dataset(train_rows=40, validation_rows=EVAL_ROWS).save_to_disk(root / "data")
    model = save_tiny_model(root / "tiny", num_labels=3)
    output = root / "out"
    # `accelerate launch --cpu --num_processes 2` would start ONE process; --multi_gpu with the script's --cpu
    # (Accelerator(cpu=True)) gives two MULTI_CPU processes on gloo.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(REPO / "finetune.py"), "--cpu", "--model", str(model), "--dataset", str(root / "data"),
        "--output-dir", str(output), "--max-steps", "6", "--per-device-train-batch-size", "4",
        "--per-device-eval-batch-size", "4", "--num-workers", "0", "--eval-steps", "3", "--checkpoint-steps", "3",
        "--learning-rate", "3e-3", "--mixup", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(root / "cache")}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return root, output, run


def test_two_processes_keep_identical_replicas(two_process_run):
    _, output, _ = two_process_run
    results = json.loads((output / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["distributed_type"] == "MULTI_CPU"
    assert len(results["replica_digests"]) == 2 and results["replicas_in_sync"] is True
    assert len(set(results["replica_digests"])) == 1
    # 40 examples, 4 per process, 2 processes: 5 steps per epoch
    assert results["global_step"] == 6 and results["epoch"] == pytest.approx(1.2)
    checkpoint = output / "checkpoints" / "checkpoint-6"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()


def test_metrics_cover_the_whole_eval_set_once(two_process_run):
    from datasets import load_from_disk
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    root, output, run = two_process_run
    results = json.loads((output / "all_results.json").read_text())
    assert results["eval_samples"] == EVAL_ROWS
    evaluations = [entry["step"] for entry in results["log_history"] if "eval_accuracy" in entry]
    assert evaluations == [3, 5, 6]  # every 3 steps, each epoch end, and the end
    assert run.stdout.count("[eval]") + run.stderr.count("[eval]") == 3  # one summary line each: main process only

    # The same metrics, computed in one process from the saved model, over the whole validation split.
    model = AutoModelForImageClassification.from_pretrained(output).eval()
    processor = AutoImageProcessor.from_pretrained(output)
    validation = load_from_disk(str(root / "data"))["validation"]
    pixel_values = processor(images=[image.convert("RGB") for image in validation["img"]], return_tensors="pt")
    labels = torch.tensor(validation["shape"])
    with torch.no_grad():
        logits = model(**pixel_values).logits
    assert results["eval_accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert results["eval_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)

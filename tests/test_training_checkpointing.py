"""Which checkpoint `--resume-from-checkpoint` picks, and what it refuses."""

import json

import pytest

from hf_localvit.training.checkpointing import CheckpointManager, list_checkpoints
from hf_localvit.training.errors import CheckpointError


def _checkpoint(root, name, complete=True):
    folder = root / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    return folder


def test_latest_skips_half_written_and_temporary_folders(tmp_path):
    _checkpoint(tmp_path, "checkpoint-5")
    _checkpoint(tmp_path, "checkpoint-40")
    _checkpoint(tmp_path, "checkpoint-60", complete=False)  # killed before its state was written
    _checkpoint(tmp_path, ".tmp-checkpoint-80")  # killed before the rename
    _checkpoint(tmp_path, "checkpoint-final")
    manager = CheckpointManager(tmp_path, accelerator=None)
    assert [step for step, _ in list_checkpoints(manager.root)] == [5, 40]  # numeric, not lexical, order
    assert manager.resolve("latest").name == "checkpoint-40"


def test_latest_without_checkpoints_means_a_fresh_start(tmp_path):
    assert CheckpointManager(tmp_path, accelerator=None).resolve("latest") is None


def test_explicit_paths_must_be_complete_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, accelerator=None)
    with pytest.raises(CheckpointError, match="no such folder"):
        manager.resolve(str(tmp_path / "missing"))
    half = _checkpoint(tmp_path, "checkpoint-7", complete=False)
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        manager.resolve(str(half))
    assert manager.resolve(str(_checkpoint(tmp_path, "checkpoint-9"))).name == "checkpoint-9"


def test_resuming_with_another_data_order_is_refused(tmp_path):
    manager = CheckpointManager(tmp_path, accelerator=None)
    saved = {"per_device_train_batch_size": 8, "num_processes": 1, "seed": 1, "train_rows": 10}
    manager.check_compatible(tmp_path, saved, dict(saved))
    with pytest.raises(CheckpointError, match="per_device_train_batch_size: checkpoint 8, now 16"):
        manager.check_compatible(tmp_path, saved, {**saved, "per_device_train_batch_size": 16})

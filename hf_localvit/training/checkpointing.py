"""Atomic training checkpoints on top of `Accelerator.save_state` / `load_state`.

A checkpoint is written into `checkpoints/.tmp-checkpoint-<step>` and renamed to `checkpoints/checkpoint-<step>`
only once every process has finished writing and `trainer_state.json` (written last) is in place, so a run killed
while saving never leaves something that `--resume-from-checkpoint latest` would pick.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
STATE_NAME = "trainer_state.json"
# Fields that fix which samples each step sees; resuming with other values would not continue the same run.
DATA_ORDER_FIELDS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "train_rows",
    "seed",
)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def is_complete(path: Path) -> bool:
    return path.is_dir() and CHECKPOINT_PATTERN.match(path.name) is not None and (path / STATE_NAME).is_file()


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and is_complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_state(path: Path) -> dict[str, Any]:
    with open(path / STATE_NAME) as handle:
        return json.load(handle)


class CheckpointManager:
    def __init__(self, output_dir: str | Path, accelerator: Accelerator, total_limit: int | None = None) -> None:
        self.root = Path(output_dir) / CHECKPOINTS_DIRNAME
        self.accelerator = accelerator
        self.total_limit = total_limit

    def resolve(self, requested: str) -> Path | None:
        """`latest` -> the newest complete checkpoint (None if there is none); otherwise a checkpoint folder."""
        if requested == "latest":
            found = list_checkpoints(self.root)
            return found[-1][1] if found else None
        path = Path(requested).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"--resume-from-checkpoint {requested!r}: no such folder.")
        if not (path / STATE_NAME).is_file():
            raise CheckpointError(
                f"{path} is not a complete checkpoint (no {STATE_NAME}): it may have been written by a run that was "
                "killed while saving. Use --resume-from-checkpoint latest to pick the newest complete one."
            )
        return path

    def remove_all(self) -> None:
        if self.accelerator.is_main_process and self.root.exists():
            shutil.rmtree(self.root)
        self.accelerator.wait_for_everyone()

    def remove_stale(self) -> None:
        """Delete half-written folders that a killed run left behind."""
        if self.accelerator.is_local_main_process and self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith((TMP_PREFIX, OLD_PREFIX)):
                    shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def save(self, step: int, state: dict[str, Any], fault_hook: Any = None) -> Path:
        """Save model, optimizer, scheduler, RNG and `state` as `checkpoint-<step>`, atomically."""
        accelerator = self.accelerator
        final = self.root / f"checkpoint-{step}"
        tmp = self.root / f"{TMP_PREFIX}checkpoint-{step}"
        if accelerator.is_local_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if fault_hook is not None:
            fault_hook("checkpoint-written", step)
        if accelerator.is_main_process:
            _write_json(tmp / STATE_NAME, state)
            self._publish(tmp, final)
        accelerator.wait_for_everyone()
        # Without a shared file system the other nodes hold their own (RNG-state) copy: publish it too.
        if not accelerator.is_main_process and accelerator.is_local_main_process and tmp.exists():
            _write_json(tmp / STATE_NAME, state)
            self._publish(tmp, final)
        accelerator.wait_for_everyone()
        if accelerator.is_local_main_process:
            self._enforce_limit(keep=final)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        if final.exists():  # e.g. a run resumed from an older checkpoint saves this step again
            old = final.with_name(f"{OLD_PREFIX}{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)

    def _enforce_limit(self, keep: Path) -> None:
        if not self.total_limit:
            return
        found = [path for _, path in list_checkpoints(self.root) if path != keep]
        excess = len(found) + 1 - self.total_limit
        for path in found[: max(excess, 0)]:
            shutil.rmtree(path, ignore_errors=True)

    def check_compatible(self, path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
        mismatched = {
            name: (saved.get(name), current[name])
            for name in DATA_ORDER_FIELDS
            if name in current and saved.get(name) != current[name]
        }
        if mismatched:
            details = ", ".join(f"{name}: checkpoint {old!r}, now {new!r}" for name, (old, new) in mismatched.items())
            raise CheckpointError(
                f"Checkpoint {path} was written by a run with other settings ({details}). Resume with the same "
                "data, batch size, accumulation, seed and number of processes, or start afresh with "
                "--overwrite-output-dir."
            )

"""Reading original checkpoints safely and writing converted folders atomically."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .key_mapping import ConversionError

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")


def resolve_checkpoint_path(path_or_url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path as is; an http(s) URL downloaded once into the torch hub cache (or `cache_dir`)."""
    if path_or_url.startswith(("http://", "https://")):
        target_dir = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / Path(path_or_url.split("?")[0]).name
        if not target.exists():
            torch.hub.download_url_to_file(path_or_url, str(target), progress=True)
        return target
    path = Path(path_or_url)
    if not path.is_file():
        raise ConversionError(f"Checkpoint {path_or_url!r} does not exist or is not a file. Give a .pth path or URL.")
    return path


def load_original_checkpoint(path: Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a checkpoint with `weights_only=True` and return its state dict.

    Accepts the original trainer's `{"model": ...}`, mmcv's `{"state_dict": ..., "meta": ...}` and bare state dicts.
    A file that needs arbitrary unpickling is refused unless `allow_unsafe_pickle` is set (only for trusted files).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path} contains Python objects that weights-only loading refuses ({str(error).splitlines()[0]}). "
            "Loading it would run arbitrary code from the file. If you trust its source, pass "
            "--allow-unsafe-pickle; otherwise re-save just the state dict."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise ConversionError(
            f"Could not read {path}: {str(error).splitlines()[0]}. The file looks truncated or is not a PyTorch "
            "checkpoint; download it again and check its size."
        ) from error
    if isinstance(checkpoint, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint or not all(
        isinstance(value, torch.Tensor) for value in checkpoint.values()
    ):
        raise ConversionError(
            f"{path} holds no state dict of tensors (looked for a bare dict or one under {', '.join(STATE_DICT_KEYS)})."
        )
    return dict(checkpoint)


@contextlib.contextmanager
def atomic_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `output_dir` and move it into place only if the block succeeds.

    On any error the temporary folder is removed and `output_dir` is left exactly as it was.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(f"{output_dir} exists and is not empty. Choose a new folder or pass --overwrite.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        yield staging
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

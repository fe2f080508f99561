"""Publishing a model folder to the Hugging Face Hub: the one upload path of hf-localvit.

`hf-localvit publish`, the converters' `--push-to-hub` and `finetune.py --push-to-hub` all end here. What is sent is
an explicit list of top-level files, never a glob over the folder:

- weights: `*.safetensors` (each checked to really be safetensors) and `model.safetensors.index.json`;
- configs: `config.json`, `generation_config.json`, `preprocessor_config.json`, `processor_config.json`;
- the remote code for `trust_remote_code=True`: the `.py` files named by an `auto_map` in those configs, and the
  modules they import relatively;
- the model card, `README.md`.

Everything else stays local: pickles (`pytorch_model.bin`, `*.pt`, `training_args.bin`), optimizer and scheduler
state, `checkpoint-*/` folders, logs, metrics files. Upload is `HfApi.create_repo` + `HfApi.upload_folder` with
exactly those file names as `allow_patterns`. The token comes from where `huggingface_hub` looks for it
(`HF_TOKEN`, then the file written by `hf auth login`), the endpoint from `HF_ENDPOINT`.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import get_token

CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json")
SAFETENSORS_INDEX = "model.safetensors.index.json"
CARD_FILE = "README.md"
# Read by `publishable_files` for `auto_map` entries (the code `trust_remote_code=True` runs).
_AUTO_MAP_SOURCES = ("config.json", "preprocessor_config.json", "processor_config.json")
# `from .module import ...` and `from . import module, other` (one level up only, as transformers' remote code).
_RELATIVE_MODULE_IMPORT = re.compile(r"^[ \t]*from[ \t]+\.(\w+)[ \t]+import\b", re.MULTILINE)
_RELATIVE_PACKAGE_IMPORT = re.compile(r"^[ \t]*from[ \t]+\.[ \t]+import[ \t]+(\([^)]*\)|[\w, \t]+)", re.MULTILINE)
_PICKLE_OR_ZIP_MAGIC = (b"\x80", b"PK\x03\x04")
DEFAULT_COMMIT_MESSAGE = "Upload DWNet model"

TOKEN_HELP = (
    "No Hugging Face token found. Log in with `hf auth login` (or `huggingface-cli login`), or set the HF_TOKEN "
    "environment variable to a token with write access (https://huggingface.co/settings/tokens)."
)


class PublishError(ValueError):
    """The folder cannot be published as it is (nothing was uploaded)."""


class HubTokenError(PermissionError):
    """No Hugging Face token was found (nothing was uploaded)."""


@dataclass
class FolderSelection:
    """What `publish_folder` would send from a folder, and what it leaves out."""

    folder: Path
    files: list[str]
    left_out: list[str]
    card_name: str | None = None  # released model whose card was written as README.md, if any

    @property
    def has_card(self) -> bool:
        return CARD_FILE in self.files


@dataclass
class PublishResult:
    repo_id: str
    repo_url: str
    commit_url: str | None
    revision: str | None
    files: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    card_name: str | None = None

    @property
    def url(self) -> str:
        """The page of the uploaded revision."""
        return f"{self.repo_url}/tree/{self.revision}" if self.revision else self.repo_url


def _check_safetensors(path: Path) -> None:
    """A `.safetensors` file must start with the 8-byte header length and a JSON header (not a renamed pickle)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise PublishError(f"{path.name} is not a safetensors file (too short).")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length == 0 or header_length > min(size - 8, 100_000_000):
            raise PublishError(f"{path.name} is not a safetensors file (bad header length).")
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PublishError(f"{path.name} is not a safetensors file ({error}).") from None
    if not isinstance(header, dict):
        raise PublishError(f"{path.name} is not a safetensors file (header is not a JSON object).")


def _check_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith(_PICKLE_OR_ZIP_MAGIC):
        raise PublishError(f"{path.name} looks like a pickle or a zip archive, not text: refusing to upload it.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishError(f"{path.name} is not UTF-8 text: refusing to upload it.") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_check_text(path))
    except json.JSONDecodeError as error:
        raise PublishError(f"{path.name} is not valid JSON ({error}).") from None


def _auto_map_modules(value: Any) -> set[str]:
    """Module names of every `auto_map` entry in a (nested) config: `"modeling_x.Class"` -> `modeling_x`."""
    modules: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "auto_map" and isinstance(item, dict):
                for reference in item.values():
                    references = reference if isinstance(reference, (list, tuple)) else [reference]
                    for ref in references:
                        # "other/repo--module.Class" points at code in another repo: nothing to upload from here.
                        if isinstance(ref, str) and "--" not in ref and "." in ref:
                            modules.add(ref.rsplit(".", 1)[0])
            else:
                modules |= _auto_map_modules(item)
    elif isinstance(value, list):
        for item in value:
            modules |= _auto_map_modules(item)
    return modules


def _remote_code_files(folder: Path, configs: dict[str, Any]) -> list[str]:
    """The `.py` files `trust_remote_code=True` loads: the `auto_map` modules and their relative imports."""
    pending = sorted(set().union(*(_auto_map_modules(config) for config in configs.values())))
    found: set[str] = set()
    while pending:
        module = pending.pop()
        name = f"{module}.py"
        if name in found:
            continue
        path = folder / name
        if "." in module or not path.is_file():
            raise PublishError(
                f"{name} (model code that trust_remote_code=True loads, through auto_map or a relative import) is "
                f"not in {folder}: save the model with save_pretrained, which copies the code, before publishing."
            )
        found.add(name)
        source = _check_text(path)
        imported = _RELATIVE_MODULE_IMPORT.findall(source)
        for names in _RELATIVE_PACKAGE_IMPORT.findall(source):
            imported += [n.split(" as ")[0].strip() for n in names.strip("()").split(",") if n.strip()]
        # A relative import of a module that is not in the folder fails at load time: require it.
        pending.extend(m for m in imported if f"{m}.py" not in found)
    return sorted(found)


def publishable_files(folder: str | Path) -> FolderSelection:
    """The files of `folder` that `publish_folder` uploads (see the module docstring), checked; no network."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder.")
    if not (folder / "config.json").is_file():
        raise PublishError(f"{folder} has no config.json: run a converter or save_pretrained into it first.")
    configs = {name: _load_json(folder / name) for name in CONFIG_FILES if (folder / name).is_file()}
    files = list(configs)

    weights = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        hint = f" (found {', '.join(pickles)}: pickles are never published)" if pickles else ""
        raise PublishError(
            f"{folder} has no .safetensors weights{hint}. Save the model with save_pretrained(...) "
            "(safetensors is the default) before publishing."
        )
    for name in weights:
        _check_safetensors(folder / name)
    files += weights
    if (folder / SAFETENSORS_INDEX).is_file():
        index = _load_json(folder / SAFETENSORS_INDEX)
        shards = set((index.get("weight_map") or {}).values()) if isinstance(index, dict) else set()
        missing = sorted(shards - set(weights))
        if missing:
            raise PublishError(f"{SAFETENSORS_INDEX} lists shards that are not in {folder}: {', '.join(missing)}.")
        files.append(SAFETENSORS_INDEX)

    files += _remote_code_files(folder, configs)
    if (folder / CARD_FILE).is_file():
        _check_text(folder / CARD_FILE)
        files.append(CARD_FILE)

    files = sorted(set(files))
    left_out = sorted(
        str(p.relative_to(folder)) + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if p.name not in files and p.name not in {".git", ".cache"}
    )
    return FolderSelection(folder=folder, files=files, left_out=left_out)


def _write_card_if_needed(folder: Path, repo_id: str, card: str | None) -> str | None:
    """Write the card of released model `card` (or, with no README.md, of the released model the config matches)
    as README.md. Returns the model name whose card was written, if any."""
    from .cards import build_model_card, released_model_for_config

    if card is None:
        if (folder / CARD_FILE).is_file():
            return None
        card = released_model_for_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        if card is None:
            return None
    build_model_card(card, repo_id=repo_id).save(folder / CARD_FILE)
    return card


def require_token(token: str | None = None) -> str:
    """`token`, or the one `huggingface_hub` finds (HF_TOKEN, then the `hf auth login` file); else HubTokenError."""
    token = token or get_token()
    if not token:
        raise HubTokenError(TOKEN_HELP)
    return token


def require_ready_to_publish(token: str | None = None) -> str:
    """The token to upload with, after checking that uploading is possible at all (a token, not offline); lets a
    long job (fine-tuning) fail before it starts rather than at the end."""
    token = require_token(token)
    if constants.is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set: unset it to publish to the Hub.")
    return token


def upload_model_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
    *,
    card: str | None = None,
    endpoint: str | None = None,
) -> PublishResult:
    """`publish_folder`, returning what was sent (`PublishResult`) rather than only the URL."""
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise PublishError(f"Invalid repo id {repo_id!r}: {error}") from None
    publishable_files(folder)  # refuse a bad folder before touching README.md or the network
    if card is not None:
        from .cards import RELEASED_MODELS

        if card not in RELEASED_MODELS:
            raise PublishError(
                f"No released model {card!r} to take the card from. Available: {', '.join(RELEASED_MODELS)}."
            )
    token = require_ready_to_publish(token)
    card_name = _write_card_if_needed(folder, repo_id, card)
    selection = publishable_files(folder)

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        allow_patterns=selection.files,
        commit_message=commit_message,
    )
    return PublishResult(
        repo_id=repo_id,
        repo_url=str(repo_url).rstrip("/"),
        commit_url=getattr(commit, "commit_url", None),
        revision=revision,
        files=selection.files,
        left_out=selection.left_out,
        card_name=card_name,
    )


def publish_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
    *,
    card: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload the publishable files of `folder` (`publishable_files`); returns the
    URL of the uploaded revision.

    `card` names a released model (`hf-localvit card --list`) whose card is written as README.md first; without it
    and without a README.md, the card of the released model the config matches (if any) is written. Raises
    `PublishError` for a folder that cannot be published and `HubTokenError` when no token is found, both before
    anything is uploaded; `huggingface_hub` errors (HTTP, permissions) propagate.
    """
    return upload_model_folder(
        folder, repo_id, private, revision, commit_message, token, card=card, endpoint=endpoint
    ).url


__all__ = [
    "CONFIG_FILES",
    "FolderSelection",
    "HubTokenError",
    "PublishError",
    "PublishResult",
    "publish_folder",
    "publishable_files",
    "require_ready_to_publish",
    "require_token",
    "upload_model_folder",
]

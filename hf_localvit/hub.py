"""Uploading converted or fine-tuned folders to the Hugging Face Hub (weights as safetensors, never pickles)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import get_token

# What a model folder may publish: weights, configs, remote code, the card. Never pickles or optimizer state.
PUBLISHED_PATTERNS = ["*.safetensors", "*.json", "*.py", "README.md"]


def publish_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DWNet model",
    token: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload the publishable files of `folder`; returns the repo URL."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: run a converter or save_pretrained into it first.")
    token = token or get_token()
    if token is None:
        raise PermissionError(
            "No Hugging Face token found. Run `hf auth login` or set the HF_TOKEN environment variable."
        )
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        allow_patterns=PUBLISHED_PATTERNS,
        commit_message=commit_message,
    )
    return str(repo_url)

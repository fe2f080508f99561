"""Loading by Hub id for a user who has the model in their Hugging Face cache, offline.

The cache is built exactly as the Hub client writes it: `models--org--dwnet-tiny/blobs/<id>` (sha256 for LFS files,
the git blob sha1 for the others), `snapshots/<commit>/<file>` as relative symlinks to the blobs, and
`refs/main` holding the commit. It holds exactly the files `hf-localvit publish` uploads.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from huggingface_hub import constants, try_to_load_from_cache
from PIL import Image
from test_hub import REPO_ID, save_publishable_folder
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

from hf_localvit import DWNetForImageClassification, DWNetModel
from hf_localvit.cards import render_model_card
from hf_localvit.cli import main
from hf_localvit.hub import publishable_files

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_hub_cache(cache_dir: Path, repo_id: str, folder: Path, files: list[str]) -> str:
    """Lay out `files` of `folder` in `cache_dir` as `huggingface_hub` does after downloading them; returns the
    commit hash."""
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    contents = {name: (folder / name).read_bytes() for name in files}
    tree = b"".join(name.encode() + git_blob_sha1(data).encode() for name, data in contents.items())
    commit = hashlib.sha1(tree).hexdigest()
    for name, data in contents.items():
        blob_id = hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else git_blob_sha1(data)
        blob = repo_dir / "blobs" / blob_id
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_cache")
    folder = root / "published"
    model = save_publishable_folder(folder, with_card=True, decoys=True)
    cache = root / "cache"
    commit = populate_hub_cache(cache, REPO_ID, folder, publishable_files(folder).files)
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(pixel_values).logits
    return {"root": root, "cache": cache, "commit": commit, "pixel_values": pixel_values, "expected": expected}


@pytest.fixture
def use_cache(hub_cache, monkeypatch):
    """HF_HUB_CACHE for this process (huggingface_hub read it at import, so its constant is set too)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache["cache"]))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache["cache"]))
    assert constants.HF_HUB_OFFLINE, "conftest sets HF_HUB_OFFLINE=1"
    return hub_cache


def test_cache_layout_is_what_the_hub_client_reads(use_cache):
    resolved = try_to_load_from_cache(REPO_ID, "config.json")
    assert resolved is not None and f"/snapshots/{use_cache['commit']}/config.json" in resolved
    assert Path(resolved).is_symlink() and Path(resolved).resolve().parent.name == "blobs"
    weights = Path(try_to_load_from_cache(REPO_ID, "model.safetensors")).resolve()
    assert weights.name == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert try_to_load_from_cache(REPO_ID, "optimizer.pt") is None  # never published, so never in a cache


def test_load_by_hub_id_offline_with_hf_localvit(use_cache, tmp_path, capsys):
    model = AutoModelForImageClassification.from_pretrained(REPO_ID).eval()
    assert type(model) is DWNetForImageClassification  # the registered class, not remote code
    with torch.no_grad():
        torch.testing.assert_close(model(use_cache["pixel_values"]).logits, use_cache["expected"], rtol=0, atol=0)
    assert type(AutoModel.from_pretrained(REPO_ID)) is DWNetModel
    assert AutoImageProcessor.from_pretrained(REPO_ID).size == {"shortest_edge": 64}

    image = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype("uint8")).save(image)
    capsys.readouterr()
    assert main(["predict", str(image), "--model", REPO_ID, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    assert {line.split()[1] for line in lines[1:]} <= {"cat", "dog", "bird", "fish", "frog"}


def test_card_snippets_load_by_hub_id_with_trust_remote_code_only(hub_cache):
    """A clean process where hf_localvit cannot be imported runs the two code snippets of the dwnet-tiny card
    verbatim (pipeline, then processor + AutoModelForImageClassification with trust_remote_code=True)."""
    root = hub_cache["root"]
    card = render_model_card("dwnet-tiny", repo_id=REPO_ID)
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    assert len(snippets) == 2 and all(f'"{REPO_ID}"' in s for s in snippets)
    Image.fromarray((np.random.default_rng(1).random((80, 100, 3)) * 255).astype("uint8")).save(root / "cat.jpg")
    torch.save(hub_cache["pixel_values"], root / "input.pt")
    check = textwrap.dedent(
        f"""
        model = AutoModelForImageClassification.from_pretrained({REPO_ID!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.save(model(torch.load("input.pt")).logits, "output.pt")
        """
    )
    script = "import sys\nsys.modules['hf_localvit'] = None  # not importable: the repo's own code must do\n"
    script += "\nprint('---')\n".join(snippets) + "\nprint('---')\n" + check
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub_cache["cache"]),
        "HF_HOME": str(root / "hf_home"),
        "HF_MODULES_CACHE": str(root / "modules"),
    }
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline_out, model_out, _ = result.stdout.split("---\n")
    for block in (pipeline_out, model_out):
        rows = block.strip().splitlines()
        assert len(rows) == 5 and {row.split()[0] for row in rows} == {"cat", "dog", "bird", "fish", "frog"}
    torch.testing.assert_close(torch.load(root / "output.pt"), hub_cache["expected"], rtol=0, atol=1e-6)


def _save_tiny_upernet(folder: Path) -> None:
    from transformers import UperNetForSemanticSegmentation

    from hf_localvit import DWNetConfig
    from hf_localvit.models.upernet_dwnet.configuration_upernet_dwnet import upernet_dwnet_config
    from hf_localvit.models.upernet_dwnet.image_processing_upernet_dwnet import upernet_dwnet_image_processor

    backbone = DWNetConfig(**tiny_config_kwargs(), pad_to_kernel_multiple=True, backbone_output_norm="batch_norm",
                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = upernet_dwnet_config(backbone, hidden_size=16, auxiliary_channels=8)
    UperNetForSemanticSegmentation(config).save_pretrained(folder)
    processor = upernet_dwnet_image_processor()
    processor.size = {"shortest_edge": 64, "longest_edge": 128}
    processor.save_pretrained(folder)


def _save_tiny_cascade(folder: Path) -> None:
    from hf_localvit import DWNetConfig
    from hf_localvit.models.cascade_mask_rcnn import (
        CascadeMaskRCNNConfig,
        CascadeMaskRCNNForInstanceSegmentation,
        CascadeMaskRCNNImageProcessor,
    )

    backbone = DWNetConfig(**tiny_config_kwargs(), pad_to_kernel_multiple=True, backbone_output_norm="batch_norm",
                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = CascadeMaskRCNNConfig(
        backbone_config=backbone, fpn_out_channels=16, rpn_feat_channels=16, box_head_conv_channels=16,
        box_head_fc_channels=32, mask_head_channels=16,
    )
    CascadeMaskRCNNForInstanceSegmentation(config).eval().save_pretrained(folder)
    CascadeMaskRCNNImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)


@pytest.mark.parametrize("name", ["upernet-dwnet-tiny", "cascade-mask-rcnn-dwnet-tiny"])
def test_downstream_card_snippets_load_by_hub_id(name, tmp_path, monkeypatch):
    """The segmentation and detection cards' snippets, verbatim, on tiny random models in an offline cache."""
    from transformers import CONFIG_MAPPING

    if name.startswith("cascade"):
        pytest.importorskip("hf_localvit.models.cascade_mask_rcnn")
        if "cascade_mask_rcnn" not in CONFIG_MAPPING:
            pytest.skip("`import hf_localvit` does not register Cascade Mask R-CNN yet (the card's snippets need it)")
        _save_tiny_cascade(tmp_path / "folder")
    else:
        pytest.importorskip("hf_localvit.models.upernet_dwnet.configuration_upernet_dwnet")
        _save_tiny_upernet(tmp_path / "folder")
    repo_id = f"org/{name}"
    populate_hub_cache(tmp_path / "cache", repo_id, tmp_path / "folder", publishable_files(tmp_path / "folder").files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    image = Image.fromarray((np.random.default_rng(2).random((70, 90, 3)) * 255).astype("uint8"))
    image.save(tmp_path / "scene.jpg")
    image.save(tmp_path / "street.jpg")
    snippets = re.findall(r"```python\n(.*?)```", render_model_card(name, repo_id=repo_id), flags=re.DOTALL)
    assert len(snippets) == 2
    for snippet in snippets:
        assert f'"{repo_id}"' in snippet
        exec(compile(snippet, f"<{name} card>", "exec"), {})  # noqa: S102  (our own card's code)

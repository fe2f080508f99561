"""Converter + models reproduce the ORIGINAL implementation's outputs stored in ../shared/reference."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoBackbone, AutoModelForImageClassification

from hf_localvit.convert.dwnet import convert_dwnet_checkpoint

TOLERANCE = 1e-4
CLASSIFIERS = ["dwnet_small_cls", "dynamic_dwnet_small_cls", "i_dynamic_dwnet_small_cls"]
BACKBONES = ["dwnet_small_backbone", "dynamic_dwnet_small_backbone"]


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_matches_original(name, reference_dir, tmp_path):
    output_dir = tmp_path / name
    convert_dwnet_checkpoint(str(reference_dir / f"{name}.pth"), output_dir)
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    io = load_file(reference_dir / f"{name}_io.safetensors")
    with torch.no_grad():
        logits = model(io["pixel_values"]).logits
        pooled = model.dwnet(io["pixel_values"]).pooler_output
    assert max_abs_diff(logits, io["logits"]) <= TOLERANCE
    assert max_abs_diff(pooled, io["pooled"]) <= TOLERANCE
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "preprocessor_config.json").is_file()


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_matches_original(name, reference_dir, tmp_path):
    output_dir = tmp_path / name
    convert_dwnet_checkpoint(str(reference_dir / f"{name}.pth"), output_dir, backbone_only=True)
    model = AutoBackbone.from_pretrained(str(output_dir)).eval()
    io = load_file(reference_dir / f"{name}_io.safetensors")
    with torch.no_grad():
        feature_maps = model(io["pixel_values"]).feature_maps
    assert len(feature_maps) == 4
    for index, feature_map in enumerate(feature_maps):
        assert max_abs_diff(feature_map, io[f"feature_map_{index}"]) <= TOLERANCE


@pytest.mark.parametrize("name", ["upernet_dwnet_small", "upernet_dynamic_dwnet_small"])
def test_backbone_only_from_full_downstream_checkpoints(name, reference_dir, tmp_path):
    """--backbone-only takes the DWNet part of a whole UperNet / Cascade Mask R-CNN checkpoint."""
    model = convert_dwnet_checkpoint(str(reference_dir / f"{name}.pth"), tmp_path / "out", backbone_only=True)
    io = load_file(reference_dir / f"{name}_io.safetensors")
    with torch.no_grad():
        feature_maps = model(io["pixel_values"]).feature_maps
    for index, feature_map in enumerate(feature_maps):
        assert max_abs_diff(feature_map, io[f"feature_map_{index}"]) <= TOLERANCE

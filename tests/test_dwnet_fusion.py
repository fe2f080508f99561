"""BatchNorm folding for inference: exact, complete where possible, and never saved."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config_kwargs
from test_dwnet_models import randomize_batch_norms

from hf_localvit import DWNetBackbone, DWNetConfig, DWNetForImageClassification


@pytest.mark.parametrize("mixer", ["static", "dynamic", "inhomogeneous"])
@pytest.mark.parametrize("downstream", [False, True])
def test_fused_equals_unfused(mixer, downstream):
    config = DWNetConfig(**tiny_config_kwargs(mixer), pad_to_kernel_multiple=downstream)
    model = DWNetForImageClassification(config)
    randomize_batch_norms(model)
    model.eval()
    fused = copy.deepcopy(model).fuse_batch_norms()
    pixel_values = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        expected = model(pixel_values).logits
        actual = fused(pixel_values).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    remaining = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    # Only the inhomogeneous mixer keeps its depth-wise BatchNorm (one per block): its kernels are group-shared.
    assert remaining == (sum(config.depths) if mixer == "inhomogeneous" else 0)


def test_fused_backbone_keeps_output_norms_and_matches():
    config = DWNetConfig(**tiny_config_kwargs("dynamic"), pad_to_kernel_multiple=True,
                         backbone_output_norm="batch_norm", out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone = DWNetBackbone(config)
    randomize_batch_norms(backbone)
    backbone.eval()
    fused = copy.deepcopy(backbone).fuse_batch_norms()
    pixel_values = torch.randn(1, 3, 50, 66)
    with torch.no_grad():
        for a, b in zip(backbone(pixel_values).feature_maps, fused(pixel_values).feature_maps):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_fusion_requires_eval_and_blocks_saving_and_training(tmp_path):
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs()))
    with pytest.raises(RuntimeError, match="eval"):
        model.fuse_batch_norms()
    model.eval().fuse_batch_norms()
    with pytest.raises(RuntimeError, match="Save the unfused model"):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="reload it to train"):
        model.train()


def test_fused_model_runs_channels_last():
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs("dynamic")))
    randomize_batch_norms(model)
    model.eval()
    pixel_values = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected = model(pixel_values).logits
        model.fuse_batch_norms().to(memory_format=torch.channels_last)
        actual = model(pixel_values.contiguous(memory_format=torch.channels_last)).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)

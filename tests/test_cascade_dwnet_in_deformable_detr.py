"""DWNet as the backbone of transformers' own detectors: Deformable DETR with a `DWNetConfig` backbone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForObjectDetection, DeformableDetrConfig, DeformableDetrForObjectDetection

from hf_localvit import DWNetBackbone, DWNetConfig


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_deformable_detr_config(mixer: str) -> DeformableDetrConfig:
    backbone = DWNetConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        mixer=mixer,
        drop_path_rate=0.0,
        pad_to_kernel_multiple=True,
        backbone_output_norm="batch_norm",
        out_features=["stage2", "stage3", "stage4"],
    )
    return DeformableDetrConfig(
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # transformers ties bbox_embed.0 to the other layers: it needs at least two
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=8,
        encoder_n_points=2,
        decoder_n_points=2,
        num_labels=3,
    )


def test_deformable_detr_with_dwnet_backbone_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = DeformableDetrForObjectDetection(tiny_deformable_detr_config("dynamic"))
    assert isinstance(model.model.backbone.model, DWNetBackbone)
    pixel_values = torch.randn(2, 3, 64, 80)
    pixel_mask = torch.ones(2, 64, 80, dtype=torch.long)
    pixel_mask[1, :, 60:] = 0
    labels = [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.7, 0.3, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]
    model.train()
    outputs = model(pixel_values, pixel_mask=pixel_mask, labels=labels)
    assert outputs.logits.shape == (2, 8, 3) and outputs.pred_boxes.shape == (2, 8, 4)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    backbone_grads = [p.grad for p in model.model.backbone.model.parameters() if p.requires_grad]
    assert backbone_grads and any(g is not None and g.abs().sum() > 0 for g in backbone_grads)

    model.eval()
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path).eval()
    assert reloaded.config.backbone_config.model_type == "dwnet"
    assert reloaded.config.backbone_config.mixer == "dynamic"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values, pixel_mask=pixel_mask).logits, expected, rtol=0, atol=1e-5)

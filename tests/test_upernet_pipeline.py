"""UperNet + DWNet as a transformers model: presets, save/load, the original test-time image processor, the
image-segmentation pipeline and the converter's command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation, pipeline

from hf_localvit import DWNetConfig
from hf_localvit.convert import upernet as upernet_converter
from hf_localvit.models.upernet_dwnet import (
    ADE20K_CLASSES,
    UPERNET_DWNET_PRESETS,
    DWNetSegmentationImageProcessor,
    add_original_head_dropout,
    keep_ratio_size,
    register_upernet_dwnet,
    upernet_dwnet_config,
    upernet_dwnet_image_processor,
    upernet_dwnet_preset_config,
)

register_upernet_dwnet()

SCRIPT = REPO_ROOT / "conversion" / "convert_upernet_dwnet_to_hf.py"
# Parameter counts of the original models (backbone + UPerHead + FCN auxiliary head, 150 classes).
ORIGINAL_PARAMETERS = {
    "upernet-dwnet-tiny": 56e6,
    "upernet-dynamic-dwnet-tiny": 83e6,
    "upernet-dwnet-base": 108e6,
    "upernet-dynamic-dwnet-base": 195e6,
}
MMSEG_MEAN = torch.tensor([123.675, 116.28, 103.53])
MMSEG_STD = torch.tensor([58.395, 57.12, 57.375])


def small_model(num_labels=6, mixer="static", **overrides) -> UperNetForSemanticSegmentation:
    backbone = DWNetConfig(embed_dim=16, depths=[1, 1, 2, 1], mixer=mixer, drop_path_rate=0.0,
                           pad_to_kernel_multiple=True, backbone_output_norm="batch_norm",
                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = upernet_dwnet_config(backbone, num_labels=num_labels, hidden_size=32, auxiliary_channels=16, **overrides)
    model = UperNetForSemanticSegmentation(config)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():  # non-trivial BatchNorm statistics, so a reload that resets them shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def converted_dir(reference_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("upernet") / "upernet_dwnet_small"
    upernet_converter.convert_upernet_checkpoint(str(reference_dir / "upernet_dwnet_small.pth"), output_dir)
    return output_dir


# ---------------------------------------------------------------------------------------------------------------
# Presets and the transformers model


@pytest.mark.parametrize("name", list(UPERNET_DWNET_PRESETS))
def test_presets_match_the_original_models(name):
    config = upernet_dwnet_preset_config(name)
    backbone = config.backbone_config
    assert backbone.model_type == "dwnet" and backbone.pad_to_kernel_multiple
    assert backbone.backbone_output_norm == "batch_norm" and backbone.out_features == [f"stage{i}" for i in range(1, 5)]
    assert backbone.drop_path_rate == 0.3 and backbone.mixer == ("dynamic" if "dynamic" in name else "static")
    assert config.num_labels == 150 and config.id2label[0] == "wall" and config.id2label[7] == "bed"
    assert config.use_auxiliary_head and config.auxiliary_loss_weight == 0.4 and config.loss_ignore_index == 255
    assert (config.hidden_size, config.auxiliary_channels, list(config.pool_scales)) == (512, 256, [1, 2, 3, 6])
    with torch.device("meta"):
        model = UperNetForSemanticSegmentation(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert abs(parameters - ORIGINAL_PARAMETERS[name]) / ORIGINAL_PARAMETERS[name] < 0.01, parameters


def test_unknown_preset_and_labels_are_refused():
    with pytest.raises(ValueError, match="Available presets"):
        upernet_dwnet_preset_config("upernet-dwnet-huge")
    with pytest.raises(ValueError, match="id2label has 2 entries"):
        upernet_dwnet_preset_config("upernet-dwnet-tiny", num_labels=3, id2label={0: "a", 1: "b"})
    config = upernet_dwnet_preset_config("upernet-dwnet-tiny", num_labels=3, backbone_overrides={"drop_path_rate": 0.1})
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and config.backbone_config.drop_path_rate == 0.1


def test_save_and_auto_load_round_trip(tmp_path):
    model = small_model()
    pixel_values = torch.randn(2, 3, 45, 70)
    labels = torch.randint(0, 6, (2, 45, 70))
    labels[:, :5] = 255
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, labels=labels)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert isinstance(reloaded, UperNetForSemanticSegmentation)
    assert type(reloaded.backbone).__name__ == "DWNetBackbone"
    with torch.no_grad():
        outputs = reloaded(pixel_values=pixel_values, labels=labels)
    assert outputs.logits.shape == (2, 6, 45, 70)
    assert torch.equal(outputs.logits, expected.logits) and torch.equal(outputs.loss, expected.loss)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_original_head_dropout_only_acts_in_training():
    model = small_model()
    pixel_values = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        before = model(pixel_values=pixel_values).logits
        handles = add_original_head_dropout(model, p=0.5)
        assert len(handles) == 2
        assert torch.equal(model(pixel_values=pixel_values).logits, before)
        model.train()
        torch.manual_seed(1)
        with_dropout = model(pixel_values=pixel_values).logits
        for handle in handles:
            handle.remove()
        torch.manual_seed(1)
        without_dropout = model(pixel_values=pixel_values).logits
    assert not torch.allclose(with_dropout, without_dropout)


# ---------------------------------------------------------------------------------------------------------------
# The original test pipeline: keep-ratio resize into 2048x512, mmseg normalisation


def mmcv_rescale_size(height, width, scale=(2048, 512)):
    """mmcv.rescale_size(old_size=(w, h), scale=(2048, 512)) as the original Resize(keep_ratio=True) calls it."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def test_keep_ratio_size_is_mmcvs():
    sizes = [(300, 400), (512, 683), (683, 512), (375, 500), (333, 500), (512, 4000), (4000, 512), (61, 97), (1, 1),
             (2448, 3264), (427, 640), (511, 767), (100, 1000)]
    rng = np.random.default_rng(0)
    sizes += [tuple(int(v) for v in rng.integers(16, 3000, 2)) for _ in range(200)]
    for height, width in sizes:
        assert keep_ratio_size(height, width, 2048, 512) == mmcv_rescale_size(height, width), (height, width)
    assert keep_ratio_size(300, 400, 2048, 512) == (512, 683)  # transformers' shortest/longest edge gives 682


@pytest.mark.parametrize(("size", "expected"), [((300, 400), (512, 683)), ((512, 4000), (262, 2048)),
                                                ((900, 600), (768, 512)), ((512, 683), (512, 683))])
def test_processor_resizes_like_the_original(size, expected):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))
    pixel_values = upernet_dwnet_image_processor()(image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, *expected)


def test_processor_normalises_like_mmseg():
    """mmseg: (uint8 RGB - mean) / std on 0-255 values; at the target size no resampling happens."""
    array = np.random.default_rng(1).integers(0, 256, (512, 700, 3), dtype=np.uint8)
    pixel_values = upernet_dwnet_image_processor()(Image.fromarray(array), return_tensors="pt").pixel_values[0]
    expected = (torch.from_numpy(array).permute(2, 0, 1).float() - MMSEG_MEAN[:, None, None]) / MMSEG_STD[:, None, None]
    assert (pixel_values - expected).abs().max() < 1e-5


def test_processor_upsampling_is_bilinear_without_antialias():
    array = np.random.default_rng(2).integers(0, 256, (64, 90, 3), dtype=np.uint8)
    pixel_values = upernet_dwnet_image_processor()(Image.fromarray(array), return_tensors="pt").pixel_values
    image = torch.from_numpy(array).permute(2, 0, 1)[None].float()
    resized = F.interpolate(image, size=(512, 720), mode="bilinear", align_corners=False).round()
    expected = (resized[0] - MMSEG_MEAN[:, None, None]) / MMSEG_STD[:, None, None]
    # uint8 resampling rounds like OpenCV's: at most one grey level apart
    assert ((pixel_values[0] - expected).abs() * MMSEG_STD[:, None, None]).max() <= 1.0 + 1e-3


def test_ade20k_annotations_are_reduced():
    processor = upernet_dwnet_image_processor()
    annotation = np.array([[0, 1, 150, 75]], dtype=np.uint8).repeat(4, axis=0)
    image = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    labels = processor(image, segmentation_maps=Image.fromarray(annotation), return_tensors="pt").labels[0]
    assert labels.shape == (512, 512) and set(labels.unique().tolist()) == {255, 0, 149, 74}
    assert len(ADE20K_CLASSES) == 150


# ---------------------------------------------------------------------------------------------------------------
# Converted folders: processor config, pipeline, command line


def test_converted_folder_has_the_original_test_pipeline(converted_dir):
    processor = AutoImageProcessor.from_pretrained(converted_dir)
    assert isinstance(processor, DWNetSegmentationImageProcessor)
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (512, 2048)
    assert processor.do_rescale and processor.do_normalize and processor.rescale_factor == 1 / 255
    assert processor.do_reduce_labels is False  # 19 classes: not ADE20K
    assert {p.name for p in converted_dir.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}


@pytest.mark.parametrize("size", [(61, 97), (130, 40)])
def test_pipeline_returns_masks_at_input_resolution(converted_dir, size):
    segmenter = pipeline("image-segmentation", model=str(converted_dir))
    image = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results and all(r["mask"].size == (size[1], size[0]) and r["mask"].mode == "L" for r in results)
    masks = np.stack([np.asarray(r["mask"]) for r in results])
    assert set(np.unique(masks).tolist()) <= {0, 255} and ((masks == 255).sum(axis=0) == 1).all()
    # Same as the original whole-image inference: logits at the resized input, resized to the original image.
    model, processor = segmenter.model, segmenter.image_processor
    with torch.no_grad():
        logits = model(**processor(image, return_tensors="pt")).logits
    prediction = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    labels = {model.config.label2id[r["label"]]: np.asarray(r["mask"]) == 255 for r in results}
    for label, mask in labels.items():
        assert (mask == (prediction == label)).all()


def test_cli_pushes_to_hub_after_converting(reference_dir, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("hf_localvit.hub.publish_folder", lambda folder, repo: calls.append((folder, repo)) or "url")
    output_dir = tmp_path / "out"
    status = upernet_converter.main(["--checkpoint", str(reference_dir / "upernet_dynamic_dwnet_small.pth"),
                                     "--output-dir", str(output_dir), "--push-to-hub", "org/upernet-test"])
    assert status == 0 and calls == [(str(output_dir), "org/upernet-test")]
    assert "UperNetForSemanticSegmentation" in capsys.readouterr().out


def test_cli_reports_errors_and_writes_nothing(reference_dir, tmp_path, capsys):
    output_dir = tmp_path / "out"
    status = upernet_converter.main(["--checkpoint", str(reference_dir / "dwnet_small_backbone.pth"),
                                     "--output-dir", str(output_dir)])
    assert status == 2 and "decode_head.conv_seg.weight" in capsys.readouterr().err
    assert not output_dir.exists()


def test_script_and_fresh_process_pipeline(reference_dir, tmp_path):
    """The documented flow in new processes: convert with the script, then `import hf_localvit` is all a user needs
    before `pipeline("image-segmentation", model=DIR)`."""
    output_dir = tmp_path / "upernet"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(reference_dir / "upernet_dwnet_small.pth"),
         "--output-dir", str(output_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    code = (
        "import hf_localvit, numpy as np\n"
        "from PIL import Image\nfrom transformers import pipeline\n"
        f"seg = pipeline('image-segmentation', model={str(output_dir)!r})\n"
        "out = seg(Image.fromarray(np.zeros((33, 50, 3), dtype=np.uint8)))\n"
        "print(type(seg.image_processor).__name__, out[0]['mask'].size)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["DWNetSegmentationImageProcessor", "(50,", "33)"]

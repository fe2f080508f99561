"""Saved folders load without hf_localvit (trust_remote_code) and work with transformers' pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from conftest import tiny_config_kwargs
from PIL import Image
from transformers import pipeline

from hf_localvit import DWNetConfig, DWNetForImageClassification, dwnet_image_processor


def save_tiny_classifier(folder, mixer="inhomogeneous") -> DWNetForImageClassification:
    labels = ["cat", "dog", "bird", "fish", "frog"]
    config = DWNetConfig(
        **tiny_config_kwargs(mixer), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}
    )
    model = DWNetForImageClassification(config).eval()
    model.save_pretrained(folder)
    dwnet_image_processor(image_size=64).save_pretrained(folder)
    return model


def test_saved_folder_carries_remote_code(tmp_path):
    save_tiny_classifier(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_dwnet.DWNetForImageClassification"
    assert config["auto_map"]["AutoBackbone"] == "modeling_dwnet.DWNetBackbone"
    for name in ("modeling_dwnet.py", "configuration_dwnet.py", "ops_dwnet.py"):
        assert (tmp_path / name).is_file(), name


def test_trust_remote_code_in_clean_process(tmp_path):
    model = save_tiny_classifier(tmp_path)
    pixel_values = torch.randn(1, 3, 50, 60)
    torch.save(pixel_values, tmp_path.parent / "input.pt")
    with torch.no_grad():
        expected = model(pixel_values).logits
    script = textwrap.dedent(
        f"""
        import sys, torch
        # hf_localvit must not be importable here: the folder's own code has to be enough.
        sys.modules["hf_localvit"] = None
        from transformers import AutoModelForImageClassification, AutoModel
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        base = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path.parent / 'input.pt')!r})).logits
        torch.save(logits, {str(tmp_path.parent / 'output.pt')!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path.parent / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path.parent / "output.pt"), expected, rtol=0, atol=1e-6)


def test_image_classification_pipeline(tmp_path):
    save_tiny_classifier(tmp_path, mixer="dynamic")
    classifier = pipeline("image-classification", model=str(tmp_path), device="cpu")
    image = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype("uint8"))
    grey = image.convert("L")
    predictions = classifier([image, grey], top_k=3)
    assert len(predictions) == 2
    for prediction in predictions:
        assert len(prediction) == 3
        assert {p["label"] for p in prediction} <= {"cat", "dog", "bird", "fish", "frog"}
        scores = [p["score"] for p in prediction]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


def test_image_processor_reproduces_original_eval_transform(tmp_path):
    """Shorter side 256 bicubic, centre crop 224, ImageNet mean/std (the original timm eval transform)."""
    import torchvision.transforms as T
    from transformers import AutoImageProcessor

    dwnet_image_processor().save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    original = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    rng = np.random.default_rng(1)
    # Sizes whose centre-crop offset is a whole pixel: torchvision rounds half offsets, transformers floors them.
    for height, width in [(300, 416), (480, 640), (256, 256), (333, 250)]:
        image = Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))
        ours = processor(image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(ours, original(image), rtol=0, atol=1e-5)

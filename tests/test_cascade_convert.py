"""The Cascade Mask R-CNN converter: strict mapping of mmdetection checkpoints, full-width layouts, clear errors, CLI."""

from __future__ import annotations

import argparse
import json
import runpy

import pytest
import torch

from hf_localvit.convert.cascade_mask_rcnn import convert_cascade_mask_rcnn_state_dict, main
from hf_localvit.convert.checkpoint_io import load_original_checkpoint
from hf_localvit.convert.key_mapping import ConversionError



pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = "cascade_mask_rcnn_dwnet_small"


def mmdet_head_key_shapes(
    in_channels, fpn=256, rpn=256, conv=256, fc=1024, mask=256, classes=80, stages=3, roi=7, convs=4, mask_convs=4
) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of mmdetection's `cascade_mask_rcnn_dwnet_fpn` + `4conv1f` heads (everything but the
    backbone), in the order mmdetection's `state_dict()` lists them."""
    keys: dict[str, tuple[int, ...]] = {}
    for i, channels in enumerate(in_channels):
        keys[f"neck.lateral_convs.{i}.conv.weight"] = (fpn, channels, 1, 1)
        keys[f"neck.lateral_convs.{i}.conv.bias"] = (fpn,)
    for i in range(len(in_channels)):
        keys[f"neck.fpn_convs.{i}.conv.weight"] = (fpn, fpn, 3, 3)
        keys[f"neck.fpn_convs.{i}.conv.bias"] = (fpn,)
    keys.update(
        {
            "rpn_head.rpn_conv.weight": (rpn, fpn, 3, 3),
            "rpn_head.rpn_conv.bias": (rpn,),
            "rpn_head.rpn_cls.weight": (3, rpn, 1, 1),
            "rpn_head.rpn_cls.bias": (3,),
            "rpn_head.rpn_reg.weight": (12, rpn, 1, 1),
            "rpn_head.rpn_reg.bias": (12,),
        }
    )
    for s in range(stages):
        prefix = f"roi_head.bbox_head.{s}."
        keys[prefix + "fc_cls.weight"] = (classes + 1, fc)
        keys[prefix + "fc_cls.bias"] = (classes + 1,)
        keys[prefix + "fc_reg.weight"] = (4 * classes, fc)
        keys[prefix + "fc_reg.bias"] = (4 * classes,)
        for k in range(convs):
            keys[prefix + f"shared_convs.{k}.conv.weight"] = (conv, fpn if k == 0 else conv, 3, 3)
            for name in ("weight", "bias", "running_mean", "running_var"):
                keys[prefix + f"shared_convs.{k}.bn.{name}"] = (conv,)
            keys[prefix + f"shared_convs.{k}.bn.num_batches_tracked"] = ()
        keys[prefix + "shared_fcs.0.weight"] = (fc, conv * roi * roi)
        keys[prefix + "shared_fcs.0.bias"] = (fc,)
    for s in range(stages):
        prefix = f"roi_head.mask_head.{s}."
        for k in range(mask_convs):
            keys[prefix + f"convs.{k}.conv.weight"] = (mask, fpn if k == 0 else mask, 3, 3)
            keys[prefix + f"convs.{k}.conv.bias"] = (mask,)
        keys[prefix + "upsample.weight"] = (mask, mask, 2, 2)
        keys[prefix + "upsample.bias"] = (mask,)
        keys[prefix + "conv_logits.weight"] = (classes, mask, 1, 1)
        keys[prefix + "conv_logits.bias"] = (classes,)
    return keys


def test_key_layout_generator_matches_the_original_fixture(reference_dir):
    original = json.loads((reference_dir / f"{SMALL}.json").read_text())["keys"]
    heads = {key: tuple(shape) for key, shape in original.items() if not key.startswith("backbone.")}
    generated = mmdet_head_key_shapes([32, 64, 128, 256], fpn=32, rpn=32, conv=32, fc=64, mask=32)
    assert generated == heads


def distinct_state_dict(key_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Each tensor filled with its own index, so a mis-routed key is visible after loading."""
    state = {}
    for index, (key, shape) in enumerate(key_shapes.items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(index, dtype=torch.long)
        else:
            state[key] = torch.full(shape, float(index))
    return state


def test_full_width_coco_layout_loads_strictly(reference_dir):
    """DWNet-T backbone keys of the released checkpoints + full-width heads (FPN 256, fc 1024, masks 256, 80 classes)."""
    backbone = json.loads((reference_dir / "keys" / "dwnet_tiny_backbone_keys.json").read_text())["keys"]
    key_shapes = {key: tuple(shape) for key, shape in backbone.items()}
    key_shapes.update(mmdet_head_key_shapes([96, 192, 384, 768]))
    state = distinct_state_dict(key_shapes)
    model = convert_cascade_mask_rcnn_state_dict(state, model_name="dwnet-tiny")
    config = model.config
    assert (config.backbone_config.embed_dim, config.backbone_config.depths) == (96, [2, 2, 6, 2])
    assert config.backbone_config.pad_to_kernel_multiple and config.backbone_config.backbone_output_norm == "batch_norm"
    assert (config.fpn_out_channels, config.rpn_feat_channels) == (256, 256)
    assert (config.box_head_num_convs, config.box_head_conv_channels, config.box_head_fc_channels) == (4, 256, 1024)
    assert (config.mask_head_num_convs, config.mask_head_channels, config.num_labels) == (4, 256, 80)
    assert config.id2label[79] == "toothbrush" and not config.box_reg_class_agnostic
    ours = model.state_dict()
    assert sum(t.numel() for t in ours.values()) == sum(t.numel() for t in state.values())
    index = {key: i for i, key in enumerate(key_shapes)}
    routes = {
        "neck.lateral_convs.3.conv.weight": "neck.fpn.inner_blocks.3.0.weight",
        "neck.fpn_convs.0.conv.bias": "neck.fpn.layer_blocks.0.0.bias",
        "rpn_head.rpn_reg.weight": "rpn_head.box_deltas.weight",
        "roi_head.bbox_head.2.fc_reg.weight": "roi_heads.box_heads.2.regressor.weight",
        "roi_head.bbox_head.1.shared_convs.3.bn.running_var": "roi_heads.box_heads.1.convs.3.norm.running_var",
        "roi_head.bbox_head.0.shared_fcs.0.weight": "roi_heads.box_heads.0.fcs.0.weight",
        "roi_head.mask_head.1.upsample.weight": "roi_heads.mask_heads.1.upsample.weight",
        "roi_head.mask_head.2.conv_logits.bias": "roi_heads.mask_heads.2.mask_logits.bias",
        "backbone.norm3.weight": "backbone.hidden_states_norms.stage4.weight",
        "backbone.layers.2.blocks.5.mlp.fc2.weight": "backbone.encoder.stages.2.layers.5.mlp.fc2.weight",
    }
    for original, converted in routes.items():
        assert torch.all(ours[converted] == index[original]), (original, converted)
    total = sum(p.numel() for p in model.parameters())
    assert 80e6 < total < 95e6, total  # DWNet-T Cascade Mask R-CNN: about 86M parameters


def small_state(reference_dir):
    return load_original_checkpoint(reference_dir / f"{SMALL}.pth")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("roi_head.mask_head.2.conv_logits.bias"), "Missing keys"),
        (lambda s: s.__setitem__("roi_head.extra_head.weight", torch.zeros(3)), "roi_head.extra_head.weight"),
        (lambda s: s.__setitem__("roi_head.bbox_head.0.fc_cls.weight", torch.zeros(81, 65)), "Shape mismatches"),
        (lambda s: s.__setitem__("roi_head.bbox_head.0.cls_fcs.0.weight", torch.zeros(3, 3)), "separate cls/reg"),
        (lambda s: s.__setitem__("rpn_head.rpn_cls.weight", torch.zeros(6, 32, 1, 1)), "sigmoid RPN"),
        (lambda s: s.__setitem__("neck.lateral_convs.0.conv.weight", torch.zeros(32, 48, 1, 1)), "does not belong"),
    ],
)
def test_conversion_errors_are_clear(reference_dir, edit, message):
    state = small_state(reference_dir)
    edit(state)
    with pytest.raises(ConversionError, match=message):
        convert_cascade_mask_rcnn_state_dict(state)


def test_non_detector_checkpoints_are_refused(reference_dir):
    classifier = load_original_checkpoint(reference_dir / "dwnet_small_cls.pth")
    with pytest.raises(ConversionError, match="backbone"):
        convert_cascade_mask_rcnn_state_dict(classifier)
    segmenter = load_original_checkpoint(reference_dir / "upernet_dwnet_small.pth")
    with pytest.raises(ConversionError, match="roi_head"):
        convert_cascade_mask_rcnn_state_dict(segmenter)


def test_cli_writes_a_safetensors_folder(reference_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["--checkpoint", str(reference_dir / f"{SMALL}.pth"), "--output-dir", str(out)]) == 0
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pth"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "cascade_mask_rcnn" and config["backbone_config"]["model_type"] == "dwnet"
    assert config["architectures"] == ["CascadeMaskRCNNForInstanceSegmentation"]
    assert "Wrote CascadeMaskRCNNForInstanceSegmentation" in capsys.readouterr().out
    # a second run into the same folder refuses, leaving it intact
    assert main(["--checkpoint", str(reference_dir / f"{SMALL}.pth"), "--output-dir", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_refuses_pickled_objects_and_missing_files(reference_dir, tmp_path, capsys):
    state = small_state(reference_dir)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": state, "meta": {"config": argparse.Namespace(a=1)}}, unsafe)
    assert main(["--checkpoint", str(unsafe), "--output-dir", str(tmp_path / "a")]) == 2
    assert "--allow-unsafe-pickle" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["--checkpoint", str(tmp_path / "missing.pth"), "--output-dir", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_conversion_script_runs_the_cli(reference_dir, tmp_path, monkeypatch):
    script = reference_dir.parents[1] / "main" / "conversion" / "convert_cascade_mask_rcnn_dwnet_to_hf.py"
    if not script.is_file():
        from conftest import REPO_ROOT

        script = REPO_ROOT / "conversion" / "convert_cascade_mask_rcnn_dwnet_to_hf.py"
    out = tmp_path / "out"
    monkeypatch.setattr("sys.argv", [str(script), "--checkpoint", str(reference_dir / f"{SMALL}.pth"), "--output-dir", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert (out / "model.safetensors").is_file()

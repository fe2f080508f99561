"""UperNet + DWNet against the original mmsegmentation model: reference fixtures (outputs of the original code),
a functional re-implementation of mmseg's UPerHead / FCNHead on other sizes and head configurations, and strict
conversion of mmseg-layout checkpoints built here from the original key layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE_DIR
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation

from hf_localvit.convert import ConversionError
from hf_localvit.convert.checkpoint_io import load_original_checkpoint
from hf_localvit.convert.upernet import convert_upernet_checkpoint, convert_upernet_state_dict
from hf_localvit.models.upernet_dwnet import register_upernet_dwnet, upernet_dwnet_preset_config

register_upernet_dwnet()

FIXTURES = ["upernet_dwnet_small", "upernet_dynamic_dwnet_small"]
OUTPUTS = [f"feature_map_{i}" for i in range(4)] + ["decode_head_logits", "auxiliary_logits", "logits"]
ATOL = 1e-4
BN_EPS = 1e-5  # mmcv BatchNorm default


# ---------------------------------------------------------------------------------------------------------------
# mmsegmentation 0.11 semantics, written from its code with the original key names (no transformers modules).


def conv_module(sd, prefix, x, padding=0):
    """mmcv ConvModule: conv (no bias) -> BatchNorm (eval) -> ReLU."""
    x = F.conv2d(x, sd[f"{prefix}.conv.weight"], None, padding=padding)
    bn = f"{prefix}.bn."
    x = F.batch_norm(
        x, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"], sd[bn + "bias"], False, 0.0, BN_EPS
    )
    return F.relu(x)


def resize(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def mmseg_uper_head(sd, features, pool_scales=(1, 2, 3, 6)):
    p = "decode_head."
    top = features[-1]
    pyramid = [top] + [
        resize(conv_module(sd, f"{p}psp_modules.{i}.1", F.adaptive_avg_pool2d(top, scale)), top.shape[2:])
        for i, scale in enumerate(pool_scales)
    ]
    laterals = [conv_module(sd, f"{p}lateral_convs.{i}", x) for i, x in enumerate(features[:-1])]
    laterals.append(conv_module(sd, p + "bottleneck", torch.cat(pyramid, 1), padding=1))
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
    outs = [conv_module(sd, f"{p}fpn_convs.{i}", x, padding=1) for i, x in enumerate(laterals[:-1])] + [laterals[-1]]
    outs = [outs[0]] + [resize(x, outs[0].shape[2:]) for x in outs[1:]]
    fused = conv_module(sd, p + "fpn_bottleneck", torch.cat(outs, 1), padding=1)
    return F.conv2d(fused, sd[p + "conv_seg.weight"], sd[p + "conv_seg.bias"])  # dropout is identity in eval


def mmseg_fcn_head(sd, features, in_index=2, num_convs=1, concat_input=False):
    p = "auxiliary_head."
    x = features[in_index]
    out = x
    for i in range(num_convs):
        out = conv_module(sd, f"{p}convs.{i}", out, padding=1)
    if concat_input:
        out = conv_module(sd, p + "conv_cat", torch.cat([x, out], 1), padding=1)
    return F.conv2d(out, sd[p + "conv_seg.weight"], sd[p + "conv_seg.bias"])


def mmseg_head_layout(in_channels, channels, aux_channels, num_classes, pool_scales=(1, 2, 3, 6), aux_num_convs=1,
                      aux_concat=False):
    """Key names and shapes of mmseg's UPerHead + FCNHead (auxiliary on stage 3), as their modules create them."""
    shapes = {}

    def add_conv_module(prefix, cin, cout, kernel):
        shapes[f"{prefix}.conv.weight"] = (cout, cin, kernel, kernel)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{name}"] = (cout,)
        shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    p = "decode_head."
    shapes[p + "conv_seg.weight"], shapes[p + "conv_seg.bias"] = (num_classes, channels, 1, 1), (num_classes,)
    for i in range(len(pool_scales)):
        add_conv_module(f"{p}psp_modules.{i}.1", in_channels[-1], channels, 1)
    add_conv_module(p + "bottleneck", in_channels[-1] + len(pool_scales) * channels, channels, 3)
    for i, width in enumerate(in_channels[:-1]):
        add_conv_module(f"{p}lateral_convs.{i}", width, channels, 1)
        add_conv_module(f"{p}fpn_convs.{i}", channels, channels, 3)
    add_conv_module(p + "fpn_bottleneck", len(in_channels) * channels, channels, 3)
    p = "auxiliary_head."
    shapes[p + "conv_seg.weight"], shapes[p + "conv_seg.bias"] = (num_classes, aux_channels, 1, 1), (num_classes,)
    for i in range(aux_num_convs):
        add_conv_module(f"{p}convs.{i}", in_channels[2] if i == 0 else aux_channels, aux_channels, 3)
    if aux_concat:
        add_conv_module(p + "conv_cat", in_channels[2] + aux_channels, aux_channels, 3)
    return shapes


def random_state_dict(shapes, seed=0):
    """Random weights with randomised BatchNorm statistics and affine parameters, scaled to keep activations O(1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.2 * torch.randn(shape, generator=generator)
        elif ".bn." in key:
            state[key] = 1 + 0.2 * torch.randn(shape, generator=generator)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def fixture_checkpoint(name):
    return load_original_checkpoint(REFERENCE_DIR / f"{name}.pth")


def backbone_part(state_dict):
    return {key: value for key, value in state_dict.items() if key.startswith("backbone.")}


def model_outputs(model, pixel_values):
    with torch.no_grad():
        features = model.backbone(pixel_values).feature_maps
        outputs = {f"feature_map_{i}": feature for i, feature in enumerate(features)}
        outputs["decode_head_logits"] = model.decode_head(features)
        outputs["auxiliary_logits"] = model.auxiliary_head(features)
        outputs["logits"] = model(pixel_values=pixel_values).logits
    return outputs


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    difference = (actual - expected).abs().max().item()
    assert difference <= ATOL, f"{what}: max abs difference {difference:.3e} > {ATOL}"


# ---------------------------------------------------------------------------------------------------------------
# Reference fixtures: outputs of the original mmsegmentation model.


@pytest.fixture(scope="module", params=FIXTURES)
def converted_fixture(request, reference_dir, tmp_path_factory):
    name = request.param
    output_dir = tmp_path_factory.mktemp(name) / "model"
    model = convert_upernet_checkpoint(str(reference_dir / f"{name}.pth"), output_dir)
    return name, model, output_dir, load_file(reference_dir / f"{name}_io.safetensors")


def test_fixture_parity_after_conversion(converted_fixture):
    name, model, _, reference = converted_fixture
    outputs = model_outputs(model, reference["pixel_values"])
    for key in OUTPUTS:
        assert_close(outputs[key], reference[key], f"{name} {key}")


def test_fixture_parity_after_save_and_auto_load(converted_fixture):
    """The folder written by the converter, loaded by `AutoModelForSemanticSegmentation`, still matches."""
    name, _, output_dir, reference = converted_fixture
    model = AutoModelForSemanticSegmentation.from_pretrained(output_dir)
    assert isinstance(model, UperNetForSemanticSegmentation) and not model.training
    outputs = model_outputs(model, reference["pixel_values"])
    for key in OUTPUTS:
        assert_close(outputs[key], reference[key], f"{name} {key} (reloaded)")


def test_fixture_config_is_read_off_the_keys(converted_fixture, reference_dir):
    name, model, _, _ = converted_fixture
    meta = json.loads((reference_dir / f"{name}.json").read_text())["config"]
    config = model.config
    backbone = config.backbone_config
    assert backbone.model_type == "dwnet" and backbone.mixer == ("dynamic" if "dynamic" in name else "static")
    assert backbone.embed_dim == meta["embed_dim"] and backbone.depths == meta["depths"]
    assert backbone.pad_to_kernel_multiple and backbone.backbone_output_norm == "batch_norm"
    assert config.hidden_size == meta["decode_channels"] and config.auxiliary_channels == meta["aux_channels"]
    assert config.num_labels == meta["num_classes"] and list(config.pool_scales) == meta["pool_scales"]
    # mmcv stores the class names in meta.CLASSES; they become id2label.
    assert config.id2label[0] == "class_0" and config.label2id["class_18"] == 18


@pytest.mark.parametrize("name", FIXTURES)
def test_functional_reference_reproduces_the_original(reference_dir, name):
    """The mmseg re-implementation used below, fed the original feature maps, gives the original head outputs."""
    original = fixture_checkpoint(name)
    reference = load_file(reference_dir / f"{name}_io.safetensors")
    features = [reference[f"feature_map_{i}"] for i in range(4)]
    decode = mmseg_uper_head(original, features)
    assert_close(decode, reference["decode_head_logits"], f"{name} functional decode head")
    assert_close(resize(decode, reference["pixel_values"].shape[2:]), reference["logits"], f"{name} functional logits")
    assert_close(mmseg_fcn_head(original, features), reference["auxiliary_logits"], f"{name} functional aux head")


def test_mmseg_head_layout_matches_fixture_keys(reference_dir):
    """The layout generator used below reproduces the original head keys exactly."""
    meta = json.loads((reference_dir / "upernet_dwnet_small.json").read_text())
    original = {key: tuple(shape) for key, shape in meta["keys"].items() if not key.startswith("backbone.")}
    config = meta["config"]
    widths = [config["embed_dim"] * 2**i for i in range(4)]
    generated = mmseg_head_layout(widths, config["decode_channels"], config["aux_channels"], config["num_classes"])
    assert generated == original


# ---------------------------------------------------------------------------------------------------------------
# Other sizes and head configurations: transformers' heads vs mmseg's semantics.

HEAD_CONFIGS = {
    "fixture heads": None,
    "full width, 150 classes": {"channels": 512, "aux_channels": 256, "num_classes": 150},
    "two aux convs + concat, pool scales 1 3 5": {
        "channels": 48, "aux_channels": 40, "num_classes": 7, "aux_num_convs": 2, "aux_concat": True,
        "pool_scales": (1, 3, 5),
    },
}


@pytest.mark.parametrize("head", list(HEAD_CONFIGS))
def test_heads_match_mmseg_semantics_on_other_sizes(reference_dir, head):
    original = fixture_checkpoint("upernet_dwnet_small")
    settings = HEAD_CONFIGS[head]
    pool_scales = (1, 2, 3, 6)
    aux_num_convs, aux_concat = 1, False
    if settings is not None:
        settings = dict(settings)
        pool_scales = settings.pop("pool_scales", pool_scales)
        aux_num_convs, aux_concat = settings.get("aux_num_convs", 1), settings.get("aux_concat", False)
        layout = mmseg_head_layout([32, 64, 128, 256], pool_scales=pool_scales, **settings)
        original = backbone_part(original) | random_state_dict(layout, seed=len(head))
    model = convert_upernet_state_dict(original, pool_scales=None if settings is None else pool_scales)
    assert model.config.auxiliary_num_convs == aux_num_convs and model.config.auxiliary_concat_input == aux_concat
    # 1 x 3 x 29 x 31 makes stage 4 a single pixel (pooled to 6x6 by the pyramid); the others are odd sizes.
    for size in [(1, 29, 31), (2, 45, 77), (1, 97, 61)]:
        pixel_values = torch.randn(size[0], 3, *size[1:], generator=torch.Generator().manual_seed(sum(size)))
        with torch.no_grad():
            features = model.backbone(pixel_values).feature_maps
            logits = model(pixel_values=pixel_values).logits
            decode = model.decode_head(features)
            auxiliary = model.auxiliary_head(features)
        expected_decode = mmseg_uper_head(original, features, pool_scales)
        assert_close(decode, expected_decode, f"{head} {size} decode head")
        assert_close(logits, resize(expected_decode, pixel_values.shape[2:]), f"{head} {size} encode_decode")
        expected_aux = mmseg_fcn_head(original, features, num_convs=aux_num_convs, concat_input=aux_concat)
        assert_close(auxiliary, expected_aux, f"{head} {size} auxiliary head")


# ---------------------------------------------------------------------------------------------------------------
# Strict conversion of checkpoints built from the original key layout.


def test_tiny_mmseg_checkpoint_from_key_layout_converts_strictly(reference_dir, tmp_path):
    """A checkpoint in mmcv's format, built from the fixture's key list with fresh random values: every original
    tensor lands, unchanged, in the converted folder."""
    meta = json.loads((reference_dir / "upernet_dynamic_dwnet_small.json").read_text())
    state = random_state_dict({key: tuple(shape) for key, shape in meta["keys"].items()}, seed=3)
    path = tmp_path / "tiny_upernet.pth"
    torch.save({"meta": {"CLASSES": tuple(f"thing {i}" for i in range(19)), "iter": 1}, "state_dict": state}, path)
    model = convert_upernet_checkpoint(str(path), tmp_path / "out")
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "out").state_dict()
    converted = model.state_dict()
    assert len(converted) == len(state) and set(converted) == set(reloaded)
    originals = sorted(value.flatten().tolist()[0] for value in state.values() if value.dtype.is_floating_point)
    landed = sorted(value.flatten().tolist()[0] for value in reloaded.values() if value.dtype.is_floating_point)
    assert originals == landed
    mapping = {
        "decode_head.psp_modules.3.1.bn.running_var": "decode_head.psp_modules.3.1.batch_norm.running_var",
        "decode_head.conv_seg.weight": "decode_head.classifier.weight",
        "auxiliary_head.convs.0.conv.weight": "auxiliary_head.convs.0.conv.weight",
        "backbone.norm3.running_mean": "backbone.hidden_states_norms.stage4.running_mean",
        "backbone.layers.0.blocks.0.attn2conv.conv.conv2.weight":
            "backbone.encoder.stages.0.layers.0.spatial_mixing.depthwise.expand.weight",
    }
    for original_key, key in mapping.items():
        assert torch.equal(reloaded[key], state[original_key]), key
    assert model.config.id2label[5] == "thing 5"


@pytest.mark.parametrize("variant", ["dwnet_tiny", "dynamic_dwnet_tiny"])
def test_full_size_layout_converts_to_the_preset(reference_dir, variant):
    """The released ADE20K models' layout (full-size backbone keys of the original + 512/256-channel heads,
    150 classes) converts strictly into exactly the preset's configuration."""
    keys = json.loads((reference_dir / "keys" / f"{variant}_backbone_keys.json").read_text())["keys"]
    layout = {key: tuple(shape) for key, shape in keys.items()} | mmseg_head_layout([96, 192, 384, 768], 512, 256, 150)
    state = {key: torch.zeros(shape, dtype=torch.long if key.endswith("tracked") else torch.float32)
             for key, shape in layout.items()}
    preset = "upernet-" + variant.replace("_", "-")
    model = convert_upernet_state_dict(state, model_name=preset)
    expected = upernet_dwnet_preset_config(preset)
    for key in ("hidden_size", "pool_scales", "auxiliary_channels", "auxiliary_num_convs", "num_labels", "id2label"):
        assert getattr(model.config, key) == getattr(expected, key), key
    backbone, expected_backbone = model.config.backbone_config.to_dict(), expected.backbone_config.to_dict()
    for key in ("embed_dim", "depths", "mixer", "kernel_size", "mlp_ratio", "pad_to_kernel_multiple",
                "backbone_output_norm", "out_features", "drop_path_rate", "dynamic_reduction"):
        assert backbone[key] == expected_backbone[key], key
    assert model.config.id2label[0] == "wall" and model.config.id2label[149] == "flag"


def test_missing_unexpected_and_misshaped_head_keys_are_listed(reference_dir, tmp_path):
    state = dict(fixture_checkpoint("upernet_dwnet_small"))
    del state["decode_head.fpn_convs.1.bn.running_mean"]
    state["decode_head.extra.weight"] = torch.zeros(3)
    state["neck.lateral.weight"] = torch.zeros(3)
    state["decode_head.lateral_convs.0.conv.weight"] = torch.zeros(64, 16, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ConversionError) as error:
        convert_upernet_checkpoint(str(path), tmp_path / "out")
    message = str(error.value)
    assert "Missing keys (1)" in message and "decode_head.fpn_convs.1.batch_norm.running_mean" in message
    assert "decode_head.extra.weight" in message and "neck.lateral.weight" in message
    assert "decode_head.lateral_convs.0.conv.weight: checkpoint (64, 16, 1, 1) vs model (64, 32, 1, 1)" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: {k: v for k, v in s.items() if k.startswith("backbone.")}, "decode_head.conv_seg.weight"),
        (lambda s: {k[len("backbone."):]: v for k, v in s.items() if k.startswith("backbone.")}, "No 'backbone"),
        (lambda s: {k: v for k, v in s.items() if "psp_modules.3" not in k}, "--pool-scales"),
        (lambda s: {k: v for k, v in s.items() if "fpn_bottleneck" not in k}, "not mmsegmentation's UPerHead"),
        (lambda s: {k: v for k, v in s.items() if "backbone.norm3" not in k}, "UperNet needs all 4 stages"),
        (lambda s: s | {"auxiliary_head.conv_seg.weight": torch.zeros(5, 32, 1, 1)}, "predicts 5 classes"),
    ],
    ids=["backbone only", "no prefix", "pool branches", "not uperhead", "stage norm missing", "aux classes"],
)
def test_wrong_checkpoints_get_clear_errors(reference_dir, edit, match):
    with pytest.raises(ConversionError, match=match):
        convert_upernet_state_dict(edit(fixture_checkpoint("upernet_dwnet_small")))


def test_model_name_must_match(reference_dir):
    with pytest.raises(ConversionError, match="not the one of upernet-dwnet-tiny.*embed_dim: preset 96, checkpoint 32"):
        convert_upernet_state_dict(fixture_checkpoint("upernet_dwnet_small"), model_name="upernet-dwnet-tiny")

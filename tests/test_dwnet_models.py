"""Behaviour of the DWNet transformers models: Auto classes, shapes, losses, training features, validation."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
)

from hf_localvit import (
    DWNET_PRESETS,
    DWNetBackbone,
    DWNetConfig,
    DWNetForImageClassification,
    DWNetModel,
    dwnet_preset_config,
)
from hf_localvit.models.dwnet.ops_dwnet import inhomogeneous_depthwise_conv2d, per_image_depthwise_conv2d

MIXERS = ["static", "dynamic", "inhomogeneous"]

# Parameter counts of the original ImageNet models (from the full-size key lists in ../shared/reference/keys).
PAPER_PARAMETERS_M = {
    "dwnet-tiny": 24.2,
    "dwnet-base": 74.3,
    "dynamic-dwnet-tiny": 51.1,
    "dynamic-dwnet-base": 161.6,
    "i-dynamic-dwnet-tiny": 26.2,
    "i-dynamic-dwnet-base": 80.3,
}


def randomize_batch_norms(model: torch.nn.Module) -> None:
    """Non-trivial running statistics so eval-mode outputs depend on them."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


def tiny_classifier(mixer: str = "static", **overrides) -> DWNetForImageClassification:
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs(mixer, **overrides)))
    randomize_batch_norms(model)
    return model.eval()


@pytest.mark.parametrize("name", sorted(DWNET_PRESETS))
def test_preset_parameter_counts_match_paper(name):
    with torch.device("meta"):
        model = DWNetForImageClassification(dwnet_preset_config(name, num_labels=1000))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(millions, 1) == PAPER_PARAMETERS_M[name]


def test_preset_parameter_counts_match_original_key_lists(reference_dir):
    import json

    for name in DWNET_PRESETS:
        keys = json.loads((reference_dir / "keys" / f"{name.replace('-', '_')}_cls_keys.json").read_text())["keys"]
        original = sum(
            torch.Size(shape).numel()
            for key, shape in keys.items()
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
        with torch.device("meta"):
            model = DWNetForImageClassification(dwnet_preset_config(name, num_labels=1000))
        assert sum(p.numel() for p in model.parameters()) == original, name


@pytest.mark.parametrize("mixer", MIXERS)
def test_auto_classes_round_trip(mixer, tmp_path):
    model = tiny_classifier(mixer)
    pixel_values = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(pixel_values).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DWNetConfig)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, DWNetForImageClassification)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, expected, rtol=0, atol=1e-6)
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, DWNetModel)
    backbone = AutoBackbone.from_pretrained(str(tmp_path), out_features=["stage2", "stage4"])
    assert isinstance(backbone, DWNetBackbone)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("size", [(1, 37, 53), (2, 29, 31), (1, 64, 90), (2, 7, 9)])
def test_any_input_size_and_batch_one(mixer, size):
    batch, height, width = size
    model = tiny_classifier(mixer)
    with torch.no_grad():
        outputs = model(torch.randn(batch, 3, height, width), output_hidden_states=True)
    assert outputs.logits.shape == (batch, 5)
    assert torch.isfinite(outputs.logits).all()
    # embeddings + 4 stages, each halving the (padded) size
    assert len(outputs.hidden_states) == 5
    expected_height = -(-height // 4)
    for stage, hidden_state in enumerate(outputs.hidden_states[1:]):
        assert hidden_state.shape[:3] == (batch, 16 * 2**stage, expected_height)
        expected_height = -(-expected_height // 2)


def test_batch_elements_are_independent():
    """Dynamic kernels are per image: image 0's output does not depend on image 1."""
    for mixer in MIXERS:
        model = tiny_classifier(mixer)
        pixel_values = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            batched = model(pixel_values).logits
            single = torch.cat([model(pixel_values[i : i + 1]).logits for i in range(3)])
        torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_model_outputs_and_tuple_return():
    model = DWNetModel(DWNetConfig(**tiny_config_kwargs())).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs = model(pixel_values)
        as_tuple = model(pixel_values, return_dict=False)
    assert outputs.last_hidden_state.shape == (2, 128, 2, 2)
    assert outputs.pooler_output.shape == (2, 128)
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state.mean(dim=(2, 3)))
    assert outputs.hidden_states is None
    torch.testing.assert_close(as_tuple[0], outputs.last_hidden_state)


def test_backbone_out_features_and_downstream_norms():
    config = DWNetConfig(
        **tiny_config_kwargs(), pad_to_kernel_multiple=True, backbone_output_norm="batch_norm",
        out_features=["stage1", "stage3"],
    )
    backbone = DWNetBackbone(config).eval()
    assert backbone.channels == [16, 64]
    assert set(backbone.hidden_states_norms) == {"stage1", "stage3"}
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 50, 70)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, 16, 13, 18), (1, 64, 4, 5)]
    config_by_index = DWNetConfig(**tiny_config_kwargs(), out_indices=[1, 2, 3, 4])
    assert config_by_index.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_downstream_padding_changes_borders_only_when_enabled():
    """Per-block padding to kernel multiples is a config switch of the same weights."""
    plain = tiny_classifier("static")
    padded = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs("static"), pad_to_kernel_multiple=True))
    padded.load_state_dict(plain.state_dict())
    padded.eval()
    aligned = torch.randn(1, 3, 112, 112)  # 28x28 tokens: already a multiple of 7 in stage 1
    odd = torch.randn(1, 3, 100, 132)
    with torch.no_grad():
        first_stage = lambda model, x: model.dwnet(x, output_hidden_states=True).hidden_states[1]  # noqa: E731
        torch.testing.assert_close(first_stage(plain, aligned), first_stage(padded, aligned))
        assert not torch.allclose(first_stage(plain, odd), first_stage(padded, odd))


@pytest.mark.parametrize(
    ("problem_type", "labels"),
    [
        ("single_label_classification", torch.tensor([0, 4])),
        ("multi_label_classification", torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])),
    ],
)
def test_classification_losses(problem_type, labels):
    model = tiny_classifier()
    outputs = model(torch.randn(2, 3, 32, 32), labels=labels)
    if problem_type == "single_label_classification":
        expected = torch.nn.functional.cross_entropy(outputs.logits, labels)
    else:
        expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, labels)
    torch.testing.assert_close(outputs.loss, expected)
    assert model.config.problem_type == problem_type


def test_regression_loss():
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs(num_labels=1))).eval()
    targets = torch.tensor([0.5, -1.0])
    outputs = model(torch.randn(2, 3, 32, 32), labels=targets)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.mse_loss(outputs.logits.squeeze(), targets))


@pytest.mark.parametrize("mixer", MIXERS)
def test_gradient_checkpointing_gives_same_gradients(mixer):
    torch.manual_seed(0)
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs(mixer)))
    model.train()
    pixel_values = torch.randn(2, 3, 40, 40)
    labels = torch.tensor([1, 3])

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = gradients()
    reference_buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.load_state_dict(initial_state)
    model.activation_checkpointing_enable()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    checkpointed = gradients()
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    # The recomputation in backward must not update BatchNorm statistics a second time.
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, reference_buffers[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("mixer", MIXERS)
def test_bf16_autocast_runs_and_stays_close(mixer):
    model = tiny_classifier(mixer)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixel_values).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(pixel_values).logits
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


def test_training_step_updates_batch_norm_statistics_and_drop_path():
    model = DWNetForImageClassification(DWNetConfig(**tiny_config_kwargs("dynamic", drop_path_rate=0.3)))
    model.train()
    before = model.dwnet.encoder.stages[0].layers[0].mlp_norm.running_mean.clone()
    outputs = model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 3]))
    outputs.loss.backward()
    assert not torch.equal(before, model.dwnet.encoder.stages[0].layers[0].mlp_norm.running_mean)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_static_model_compiles_without_graph_breaks():
    torch._dynamo.reset()
    model = DWNetModel(DWNetConfig(**tiny_config_kwargs())).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    explanation = torch._dynamo.explain(model)(pixel_values)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_channels_last_input_matches():
    model = tiny_classifier("inhomogeneous")
    pixel_values = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        reference = model(pixel_values).logits
        channels_last = model.to(memory_format=torch.channels_last)(
            pixel_values.contiguous(memory_format=torch.channels_last)
        ).logits
    torch.testing.assert_close(channels_last, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kernel_size": 6}, "kernel_size"),
        ({"depths": []}, "depths"),
        ({"depths": [2, 0, 2]}, "depths"),
        ({"mixer": "attention"}, "mixer"),
        ({"mixer": "dynamic", "embed_dim": 30, "dynamic_reduction": 4}, "embed_dim"),
        ({"mixer": "inhomogeneous", "inhomogeneous_group_channels": [5, 2, 4, 8]}, "inhomogeneous_group_channels"),
        ({"inhomogeneous_group_channels": [1, 2]}, "inhomogeneous_group_channels"),
        ({"backbone_output_norm": "group_norm"}, "backbone_output_norm"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"patch_size": 0}, "patch_size"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    kwargs = {"embed_dim": 32, "depths": [1, 1, 2, 1]}
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=rf"DWNetConfig\.{field}"):
        DWNetConfig(**kwargs)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="dwnet-tiny"):
        dwnet_preset_config("dwnet-huge")


def test_wrong_channel_count_is_explained():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="num_channels"):
        model(torch.randn(1, 1, 32, 32))


def test_per_image_depthwise_matches_a_loop_over_images():
    features = torch.randn(3, 4, 9, 11)
    kernels = torch.randn(3, 4, 5, 5)
    bias = torch.randn(4)
    expected = torch.cat(
        [torch.nn.functional.conv2d(features[i : i + 1], kernels[i].unsqueeze(1), bias, padding=2, groups=4) for i in range(3)]
    )
    torch.testing.assert_close(per_image_depthwise_conv2d(features, kernels, bias, padding=2), expected)


def test_inhomogeneous_conv_matches_unfold_formula_with_gradients():
    features = torch.randn(2, 6, 8, 10, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2, 3, 3, 3, 8, 10, dtype=torch.float64, requires_grad=True)
    unfolded = torch.nn.functional.unfold(features, 3, padding=1).view(2, 3, 2, 9, 8, 10)
    expected = (unfolded * kernels.view(2, 3, 1, 9, 8, 10)).sum(3).view(2, 6, 8, 10)
    torch.testing.assert_close(inhomogeneous_depthwise_conv2d(features, kernels, padding=1), expected)
    assert torch.autograd.gradcheck(
        lambda x, w: inhomogeneous_depthwise_conv2d(x, w, padding=1), (features[:1, :, :4, :5], kernels[:1, :, :, :, :4, :5])
    )


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_inhomogeneous_conv_backward_matches_numerical_gradients_for_any_padding_and_layout(padding):
    """The explicit backward against finite differences: outputs smaller than, equal to and larger than the input,
    and channels-last operands as the model produces them (kernels from a channels-last 1x1 convolution)."""
    height, width, out_height, out_width = 4, 5, 4 + 2 * padding - 2, 5 + 2 * padding - 2
    features = torch.randn(2, 4, height, width, dtype=torch.float64)
    kernels = torch.randn(2, out_height, out_width, 2, 3, 3, dtype=torch.float64).permute(0, 3, 4, 5, 1, 2)
    for x in (features, features.contiguous(memory_format=torch.channels_last)):
        x, w = x.clone().requires_grad_(), kernels.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: inhomogeneous_depthwise_conv2d(a, b, padding=padding), (x, w))
        output = inhomogeneous_depthwise_conv2d(x, w, padding=padding)
        assert output.shape == (2, 4, out_height, out_width)
        assert output.is_contiguous(memory_format=torch.channels_last) == (x.stride(1) == 1)
        output.sum().backward()
        assert x.grad.stride() == x.stride()

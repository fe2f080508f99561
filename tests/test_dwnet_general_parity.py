"""Converter + models match an independent re-implementation of the ORIGINAL DWNet beyond the stored fixtures.

`original_dwnet_reference.py` recomputes the original forward pass (classification model and mmdet/mmseg backbone)
from an original-format state dict. It is first shown to reproduce the original's stored outputs in
`../shared/reference`; it is then the oracle for configurations (widths, depths, kernel sizes, MLP ratios,
inhomogeneous groupings) and input sizes (odd, non-multiples of 4 and of the kernel) that no fixture covers.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_dwnet_reference import (  # noqa: E402
    inhomogeneous_conv_unfold,
    make_original_state_dict,
    original_forward,
    original_key_shapes,
)

from hf_localvit.convert.dwnet import convert_dwnet_state_dict  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
TOLERANCE = 1e-4

needs_reference = pytest.mark.skipif(
    not REFERENCE_DIR.is_dir(),
    reason=f"original DWNet reference fixtures not found at {REFERENCE_DIR} (the shared/reference folder next to "
    "the repository); the reference re-implementation cannot be validated without them",
)

CLASSIFIER_FIXTURES = ["dwnet_small_cls", "dynamic_dwnet_small_cls", "i_dynamic_dwnet_small_cls"]
# The UperNet checkpoints hold the same backbone plus heads; their io files store the backbone maps too.
BACKBONE_FIXTURES = [
    "dwnet_small_backbone",
    "dynamic_dwnet_small_backbone",
    "upernet_dwnet_small",
    "upernet_dynamic_dwnet_small",
]
VARIANT_MIXERS = {"dwnet": "static", "dynamic_dwnet": "dynamic", "i_dynamic_dwnet": "inhomogeneous"}


def max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual.float() - expected.float()).abs().max().item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    diff = max_abs_diff(actual, expected)
    assert diff <= TOLERANCE, f"{what}: max abs diff {diff:.3g} > {TOLERANCE}"


def random_pixels(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# 1. The reference re-implementation reproduces the original's stored outputs and key layout.
# ----------------------------------------------------------------------------------------------------------------


@needs_reference
@pytest.mark.parametrize("name", CLASSIFIER_FIXTURES)
def test_reference_matches_original_classifier(name):
    state_dict = torch.load(REFERENCE_DIR / f"{name}.pth", weights_only=True)["model"]
    io = load_file(REFERENCE_DIR / f"{name}_io.safetensors")
    with torch.no_grad():
        logits, pooled = original_forward(state_dict, io["pixel_values"])
    assert_close(logits, io["logits"], f"{name} logits")
    assert_close(pooled, io["pooled"], f"{name} pooled")


@needs_reference
@pytest.mark.parametrize("name", BACKBONE_FIXTURES)
def test_reference_matches_original_backbone(name):
    state_dict = torch.load(REFERENCE_DIR / f"{name}.pth", weights_only=True)["state_dict"]
    io = load_file(REFERENCE_DIR / f"{name}_io.safetensors")
    with torch.no_grad():
        feature_maps = original_forward(state_dict, io["pixel_values"], downstream=True)
    assert len(feature_maps) == 4
    for index, feature_map in enumerate(feature_maps):
        assert_close(feature_map, io[f"feature_map_{index}"], f"{name} feature_map_{index}")


def _fixture_jsons() -> list[str]:
    if not REFERENCE_DIR.is_dir():
        return []
    names = [p.name for p in REFERENCE_DIR.glob("*.json")] + [f"keys/{p.name}" for p in REFERENCE_DIR.glob("keys/*.json")]
    return sorted(n for n in names if not n.startswith(("upernet", "cascade")))


@needs_reference
@pytest.mark.parametrize("json_name", _fixture_jsons() or ["<none>"])
def test_generated_key_layout_matches_original(json_name):
    """`make_original_state_dict` writes exactly the original names, shapes and order (tiny/base key lists too)."""
    meta = json.loads((REFERENCE_DIR / json_name).read_text())
    config, downstream = meta["config"], "backbone" in meta["task"]
    kwargs = dict(
        embed_dim=config["embed_dim"],
        depths=config["depths"],
        mixer=VARIANT_MIXERS[meta["variant"]],
        group_channels=config.get("inhomo_heads"),
        num_classes=config.get("num_classes", 0),
        downstream=downstream,
    )
    expected = [(key, list(shape)) for key, shape in meta["keys"].items()]
    if config["embed_dim"] <= 32:  # small fixtures: build the real random state dict
        generated = [(key, list(value.shape)) for key, value in make_original_state_dict(**kwargs).items()]
    else:  # full-size key lists: names and shapes only
        generated = [(key, list(shape)) for key, shape in original_key_shapes(**kwargs)]
    assert generated == expected


def test_unfold_inhomogeneous_conv_matches_naive_loop():
    """The reference's unfold formulation against the original CUDA kernel's loop, written out literally."""
    gen = torch.Generator().manual_seed(0)
    for kernel_size, channels, groups, height, width in [(3, 6, 3, 5, 4), (5, 4, 2, 3, 6), (7, 4, 4, 2, 3)]:
        x = torch.randn(2, channels, height, width, generator=gen)
        weight = torch.randn(2, groups, kernel_size, kernel_size, height, width, generator=gen)
        pad = (kernel_size - 1) // 2
        expected = torch.zeros_like(x)
        for n in range(2):
            for c in range(channels):
                g = c // (channels // groups)
                for h in range(height):
                    for w in range(width):
                        value = 0.0
                        for kh in range(kernel_size):
                            for kw in range(kernel_size):
                                h_in, w_in = h - pad + kh, w - pad + kw
                                if 0 <= h_in < height and 0 <= w_in < width:
                                    value += weight[n, g, kh, kw, h, w].item() * x[n, c, h_in, w_in].item()
                        expected[n, c, h, w] = value
        assert_close(inhomogeneous_conv_unfold(x, weight), expected, f"unfold k={kernel_size}")


# ----------------------------------------------------------------------------------------------------------------
# 2. Converter + models vs the reference on configurations and sizes outside the fixtures.
# ----------------------------------------------------------------------------------------------------------------

CONFIGS = {
    "static-e16-d121-k5-r2": dict(embed_dim=16, depths=[1, 2, 1], mixer="static", kernel_size=5, mlp_ratio=2.0),
    "static-e24-d2111-k7-r4": dict(embed_dim=24, depths=[2, 1, 1, 1], mixer="static", kernel_size=7, mlp_ratio=4.0),
    "dynamic-e16-d121-k7-r2": dict(embed_dim=16, depths=[1, 2, 1], mixer="dynamic", kernel_size=7, mlp_ratio=2.0),
    "dynamic-e24-d2111-k5-r4": dict(embed_dim=24, depths=[2, 1, 1, 1], mixer="dynamic", kernel_size=5, mlp_ratio=4.0),
    "dynamic-e16-d111-k3-r3-red8": dict(
        embed_dim=16, depths=[1, 1, 1], mixer="dynamic", kernel_size=3, mlp_ratio=3.0, reduction=8
    ),
    "inhomo-e16-d121-k5-r4-g248": dict(
        embed_dim=16, depths=[1, 2, 1], mixer="inhomogeneous", kernel_size=5, mlp_ratio=4.0, group_channels=[2, 4, 8]
    ),
    "inhomo-e24-d2111-k7-r2-g1124": dict(
        embed_dim=24,
        depths=[2, 1, 1, 1],
        mixer="inhomogeneous",
        kernel_size=7,
        mlp_ratio=2.0,
        group_channels=[1, 1, 2, 4],
    ),
    "inhomo-e16-d1111-k3-r3-onegroup": dict(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        mixer="inhomogeneous",
        kernel_size=3,
        mlp_ratio=3.0,
        group_channels=[16, 32, 64, 128],
    ),
}
BACKBONE_CONFIGS = [name for name, cfg in CONFIGS.items() if cfg["mixer"] != "inhomogeneous"]
SIZES = {"1x3x37x53": (1, 3, 37, 53), "3x3x64x90": (3, 3, 64, 90), "2x3x29x31": (2, 3, 29, 31)}
NUM_CLASSES = 7


@functools.lru_cache(maxsize=None)
def converted(config_name: str, downstream: bool):
    """(original state dict, converted model) for a config; cached across the size parametrization."""
    state_dict = make_original_state_dict(
        **CONFIGS[config_name], num_classes=NUM_CLASSES, downstream=downstream, seed=len(config_name)
    )
    model = convert_dwnet_state_dict(state_dict, backbone_only=downstream)
    assert not model.training
    return state_dict, model


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_classifier_matches_reference(config_name, size):
    state_dict, model = converted(config_name, False)
    kernel_size = CONFIGS[config_name]["kernel_size"]
    pixel_values = random_pixels(SIZES[size], seed=sum(SIZES[size]))
    with torch.no_grad():
        logits, pooled = original_forward(state_dict, pixel_values, kernel_size=kernel_size)
        stages = original_forward(state_dict, pixel_values, kernel_size=kernel_size, stage_outputs=True)
        base = model.dwnet(pixel_values, output_hidden_states=True)
        ours_logits = model(pixel_values).logits
    # stage by stage first, so a failure says where the computation departs
    assert len(base.hidden_states) == len(stages) + 1
    for index, (ours, expected) in enumerate(zip(base.hidden_states[1:], stages)):
        assert_close(ours, expected, f"stage {index + 1} output")
    assert_close(base.pooler_output, pooled, "pooled")
    assert_close(ours_logits, logits, "logits")


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("config_name", BACKBONE_CONFIGS)
def test_downstream_backbone_matches_reference(config_name, size):
    state_dict, model = converted(config_name, True)
    kernel_size = CONFIGS[config_name]["kernel_size"]
    pixel_values = random_pixels(SIZES[size], seed=sum(SIZES[size]) + 1)
    with torch.no_grad():
        expected = original_forward(state_dict, pixel_values, downstream=True, kernel_size=kernel_size)
        feature_maps = model(pixel_values).feature_maps
    assert len(expected) == len(CONFIGS[config_name]["depths"])
    assert len(feature_maps) == len(expected)
    for index, (ours, reference) in enumerate(zip(feature_maps, expected)):
        assert_close(ours, reference, f"feature map {index}")


@pytest.mark.parametrize("config_name", ["static-e24-d2111-k7-r4", "inhomo-e16-d121-k5-r4-g248"])
def test_backbone_only_on_classification_checkpoint_matches_reference(config_name):
    """--backbone-only on a classification checkpoint: the raw last-stage map, no per-block padding, no BN."""
    state_dict = make_original_state_dict(**CONFIGS[config_name], num_classes=NUM_CLASSES, seed=3)
    model = convert_dwnet_state_dict(state_dict, backbone_only=True)
    pixel_values = random_pixels((2, 3, 37, 53), seed=5)
    with torch.no_grad():
        stages = original_forward(
            state_dict, pixel_values, kernel_size=CONFIGS[config_name]["kernel_size"], stage_outputs=True
        )
        feature_maps = model(pixel_values).feature_maps
    assert len(feature_maps) == 1
    assert_close(feature_maps[0], stages[-1], "last stage map")


# ----------------------------------------------------------------------------------------------------------------
# 3. The checks above are sensitive: random weights are not degenerate and the sizes exercise the quirks.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_name", "downstream"),
    [("inhomo-e16-d121-k5-r4-g248", False), ("dynamic-e16-d121-k7-r2", True), ("static-e16-d121-k5-r2", True)],
)
def test_every_original_weight_matters(config_name, downstream):
    """Perturbing any single floating tensor of the random state dict (norm stats included) moves the output by
    more than 10x the tolerance, so a skipped norm or a mis-read weight cannot pass the parity checks by accident."""
    kernel_size = CONFIGS[config_name]["kernel_size"]
    state_dict = make_original_state_dict(**CONFIGS[config_name], num_classes=NUM_CLASSES, downstream=downstream)
    pixel_values = random_pixels((2, 3, 37, 53), seed=7)

    def outputs(sd):
        with torch.no_grad():
            result = original_forward(sd, pixel_values, downstream=downstream, kernel_size=kernel_size)
        return torch.cat([t.flatten() for t in result if t is not None])

    baseline = outputs(state_dict)
    gen = torch.Generator().manual_seed(11)
    insensitive = []
    for key, value in state_dict.items():
        if not value.is_floating_point():
            continue
        perturbed = dict(state_dict)
        if key.endswith("running_var"):  # keep variances positive
            perturbed[key] = value * (1.5 + torch.rand(value.shape, generator=gen))
        else:
            perturbed[key] = value + 0.5 * torch.randn(value.shape, generator=gen)
        change = (outputs(perturbed) - baseline).abs().max().item()
        if not change > 10 * TOLERANCE:  # NaN counts as insensitive too
            insensitive.append(f"{key} ({change:.2g})")
    assert not insensitive, f"outputs barely depend on {insensitive}"


def test_downstream_sizes_exercise_per_block_padding():
    """At these sizes the downstream per-block padding to kernel multiples changes the maps well beyond the
    tolerance: a model that skipped it would fail the backbone parity checks."""
    state_dict, _ = converted("dynamic-e16-d121-k7-r2", True)
    for shape in SIZES.values():
        pixel_values = random_pixels(shape, seed=sum(shape) + 1)
        with torch.no_grad():
            padded = original_forward(state_dict, pixel_values, downstream=True)
            unpadded = original_forward(state_dict, pixel_values, downstream=True, pad_to_kernel_multiple=False)
        assert max(max_abs_diff(a, b) for a, b in zip(padded, unpadded)) > 100 * TOLERANCE

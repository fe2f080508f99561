"""Test-only, independent re-implementation of the ORIGINAL DWNet forward pass.

It reads an ORIGINAL-format state dict (the original key names, `backbone.` prefixed for the mmdet/mmseg
checkpoints) and computes what the original code (Atten4Vis/DemystifyLocalViT: `models/dwnet.py`,
`models/idynamic.py`, `downstreams/*/backbones/dwnet.py`) computes, in the original's token layout `(B, L, C)`,
with plain `torch.nn.functional` ops. Nothing here imports `hf_localvit`: it is a second, separate derivation of
the architecture, validated against the fixtures in `../shared/reference`, that the tests then use as an oracle on
configurations and input sizes those fixtures do not cover.

Deliberately different formulations from the project's model:
- tokens `(B, L, C)` with `F.linear` for the MLP, patch merging and head (the project uses NCHW and 1x1 convs);
- the dynamic conv folds the batch into a grouped conv exactly as the original does;
- the inhomogeneous conv is an explicit `F.unfold` gather + weighted sum (the project accumulates shifted views).

Sizes the original classification model cannot take (its patch embedding asserts the training size, its patch
merging asserts even sizes) are generalised the way the downstream backbone does it: the input is zero-padded
right/bottom to a multiple of the patch size and patch merging zero-pads odd heights/widths. For sizes the
original accepts, this is exactly the original computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

BN_EPS = 1e-5  # nn.BatchNorm2d / SyncBN default
LN_EPS = 1e-5  # nn.LayerNorm default
MIXERS = ("static", "dynamic", "inhomogeneous")
DOWNSTREAM_PREFIX = "backbone."


# --------------------------------------------------------------------------------------------------------------
# Original key layout and random weights
# --------------------------------------------------------------------------------------------------------------


def _batch_norm_keys(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}.weight", (channels,)),
        (f"{prefix}.bias", (channels,)),
        (f"{prefix}.running_mean", (channels,)),
        (f"{prefix}.running_var", (channels,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def original_key_shapes(
    embed_dim: int,
    depths: Sequence[int],
    mixer: str,
    kernel_size: int = 7,
    mlp_ratio: float = 4.0,
    reduction: int = 4,
    group_channels: Sequence[int] | None = None,
    num_classes: int = 10,
    downstream: bool = False,
    in_chans: int = 3,
    patch_size: int = 4,
) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the original checkpoint, in the order the original modules register them.

    `group_channels` is the original's `INHOMO_HEADS`: per stage, how many consecutive channels share a predicted
    kernel (`IDynamicDWConv(channels, kernel_size, group_channels)` makes `channels // group_channels` groups).
    """
    if mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
    if downstream and mixer == "inhomogeneous":
        raise ValueError("The original downstream backbone has no inhomogeneous mixer.")
    num_stages = len(depths)
    if group_channels is None:
        group_channels = [1] * num_stages
    k = kernel_size
    keys: list[tuple[str, tuple[int, ...]]] = [
        ("patch_embed.proj.weight", (embed_dim, in_chans, patch_size, patch_size)),
        ("patch_embed.proj.bias", (embed_dim,)),
        ("patch_embed.norm.weight", (embed_dim,)),
        ("patch_embed.norm.bias", (embed_dim,)),
    ]
    for stage, depth in enumerate(depths):
        dim = embed_dim * 2**stage
        hidden = int(dim * mlp_ratio)
        for block in range(depth):
            p = f"layers.{stage}.blocks.{block}."
            a = p + "attn2conv."
            keys.append((a + "conv0.weight", (dim, dim, 1, 1)))
            keys += _batch_norm_keys(a + "bn0", dim)
            if mixer == "static":
                keys += [(a + "conv.weight", (dim, 1, k, k)), (a + "conv.bias", (dim,))]
            elif mixer == "dynamic":
                # DynamicDWConv: its own `bias` parameter is listed before its submodules' parameters.
                keys.append((a + "conv.bias", (dim,)))
                keys.append((a + "conv.conv1.weight", (dim // reduction, dim, 1, 1)))
                keys += _batch_norm_keys(a + "conv.bn", dim // reduction)
                keys += [
                    (a + "conv.conv2.weight", (dim * k * k, dim // reduction, 1, 1)),
                    (a + "conv.conv2.bias", (dim * k * k,)),
                ]
            else:
                groups = dim // group_channels[stage]
                keys += [
                    (a + "conv.conv1.0.weight", (dim // reduction, dim, 1, 1)),
                    (a + "conv.conv1.0.bias", (dim // reduction,)),
                ]
                keys += _batch_norm_keys(a + "conv.conv1.1", dim // reduction)
                keys += [
                    (a + "conv.conv2.0.weight", (groups * k * k, dim // reduction, 1, 1)),
                    (a + "conv.conv2.0.bias", (groups * k * k,)),
                ]
            keys += _batch_norm_keys(a + "bn", dim)
            keys.append((a + "conv2.weight", (dim, dim, 1, 1)))
            keys += _batch_norm_keys(a + "bn2", dim)
            keys += [
                (p + "mlp.fc1.weight", (hidden, dim)),
                (p + "mlp.fc1.bias", (hidden,)),
                (p + "mlp.fc2.weight", (dim, hidden)),
                (p + "mlp.fc2.bias", (dim,)),
            ]
            keys += _batch_norm_keys(p + "bn", dim)
        if stage < num_stages - 1:
            keys += [
                (f"layers.{stage}.downsample.reduction.weight", (2 * dim, 4 * dim)),
                (f"layers.{stage}.downsample.norm.weight", (4 * dim,)),
                (f"layers.{stage}.downsample.norm.bias", (4 * dim,)),
            ]
    num_features = embed_dim * 2 ** (num_stages - 1)
    if downstream:
        for stage in range(num_stages):
            keys += _batch_norm_keys(f"norm{stage}", embed_dim * 2**stage)
        keys = [(DOWNSTREAM_PREFIX + name, shape) for name, shape in keys]
    else:
        keys += [("norm.weight", (num_features,)), ("norm.bias", (num_features,))]
        if num_classes > 0:
            keys += [("head.weight", (num_classes, num_features)), ("head.bias", (num_classes,))]
    return keys


def make_original_state_dict(
    embed_dim: int,
    depths: Sequence[int],
    mixer: str,
    kernel_size: int = 7,
    mlp_ratio: float = 4.0,
    reduction: int = 4,
    group_channels: Sequence[int] | None = None,
    num_classes: int = 10,
    downstream: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random weights in the ORIGINAL key layout (names, shapes, order, `num_batches_tracked` included).

    Every norm is randomised (BatchNorm affine and running stats with running_var in [0.5, 1.5], LayerNorm affine)
    as is the dynamic conv's bias, so a skipped norm, a swapped order or a mis-read reshape cannot pass by chance.
    Weight scales (uniform in +-1/sqrt(fan_in); predicted kernel taps ~1/k) keep activations O(1).
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * (high - low) + low

    def symmetric(shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return uniform(shape, -bound, bound)

    k = kernel_size
    state: dict[str, torch.Tensor] = {}
    for name, shape in original_key_shapes(
        embed_dim, depths, mixer, kernel_size, mlp_ratio, reduction, group_channels, num_classes, downstream
    ):
        short = name[len(DOWNSTREAM_PREFIX) :] if downstream else name
        leaf = short.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = torch.tensor(int(torch.randint(0, 10_000, (), generator=generator)), dtype=torch.long)
        elif leaf == "running_mean":
            value = symmetric(shape, 0.3)
        elif leaf == "running_var":
            value = uniform(shape, 0.5, 1.5)
        elif len(shape) == 1 and leaf == "weight":  # BatchNorm / LayerNorm scale
            value = uniform(shape, 0.5, 1.5)
        elif short.endswith(("attn2conv.conv.conv1.weight", "attn2conv.conv.conv1.0.weight")):
            # kernel predictors' bottleneck: larger than default so that its BatchNorm input is O(1) and the
            # predicted (input-dependent) part of the kernels is not swamped by the conv2 bias
            value = symmetric(shape, 3.0 / math.sqrt(shape[1]))
        elif short.endswith(("attn2conv.conv.conv2.weight", "attn2conv.conv.conv2.0.weight")):
            # each predicted tap ~ 1/k so the k x k conv output stays O(1)
            value = symmetric(shape, 2.0 / (k * math.sqrt(shape[1])))
        elif short.endswith(("attn2conv.conv.conv2.bias", "attn2conv.conv.conv2.0.bias")):
            value = symmetric(shape, 0.5 / k)
        elif leaf == "weight":  # convs and linears
            fan_in = math.prod(shape[1:])
            value = symmetric(shape, 1.0 / math.sqrt(fan_in))
        elif leaf == "bias":  # conv / linear / norm biases and the dynamic conv's per-channel bias
            value = symmetric(shape, 0.25)
        else:  # pragma: no cover - every original key is one of the above
            raise AssertionError(f"unexpected key {name}")
        state[name] = value
    return state


# --------------------------------------------------------------------------------------------------------------
# Original forward pass
# --------------------------------------------------------------------------------------------------------------


def _bn(sd: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode BatchNorm of an NCHW map (channel dim 1)."""
    return F.batch_norm(
        x,
        sd[prefix + ".running_mean"],
        sd[prefix + ".running_var"],
        sd[prefix + ".weight"],
        sd[prefix + ".bias"],
        training=False,
        eps=BN_EPS,
    )


def _ln(sd: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last (channel) dim of tokens."""
    weight = sd[prefix + ".weight"]
    return F.layer_norm(x, weight.shape, weight, sd[prefix + ".bias"], eps=LN_EPS)


def _dynamic_dwconv(sd: Mapping[str, torch.Tensor], p: str, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Original `DynamicDWConv`: per-image kernels from the global average, batch folded into one grouped conv."""
    b, c, h, w = x.shape
    pooled = x.mean(dim=(2, 3), keepdim=True)  # AdaptiveAvgPool2d((1, 1))
    hidden = F.relu(_bn(sd, p + "bn", F.conv2d(pooled, sd[p + "conv1.weight"])))
    weight = F.conv2d(hidden, sd[p + "conv2.weight"], sd[p + "conv2.bias"])  # (b, c*k*k, 1, 1)
    weight = weight.view(b * c, 1, kernel_size, kernel_size)
    out = F.conv2d(
        x.reshape(1, b * c, h, w),
        weight,
        sd[p + "bias"].repeat(b),
        stride=1,
        padding=kernel_size // 2,
        groups=b * c,
    )
    return out.view(b, c, out.shape[-2], out.shape[-1])


def _inhomogeneous_dwconv(
    sd: Mapping[str, torch.Tensor], p: str, x: torch.Tensor, kernel_size: int
) -> torch.Tensor:
    """Original `IDynamicDWConv`: per-position kernels, one per group of contiguous channels, zero padding, no bias.

    out[b, c, y, x] = sum_{i,j} xpad[b, c, y+i, x+j] * weight[b, c // (C/G), i, j, y, x], computed by gathering
    every k x k window with F.unfold and summing the weighted taps.
    """
    b, c, h, w = x.shape
    k = kernel_size
    hidden = F.conv2d(x, sd[p + "conv1.0.weight"], sd[p + "conv1.0.bias"])
    hidden = F.relu(_bn(sd, p + "conv1.1", hidden))
    weight = F.conv2d(hidden, sd[p + "conv2.0.weight"], sd[p + "conv2.0.bias"])  # (b, G*k*k, h, w)
    groups = weight.shape[1] // (k * k)
    assert groups * k * k == weight.shape[1] and c % groups == 0
    return inhomogeneous_conv_unfold(x, weight.view(b, groups, k, k, h, w))


def inhomogeneous_conv_unfold(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The original CUDA kernel's computation (stride 1, dilation 1, zero padding (k-1)//2, no bias).

    x: (B, C, H, W); weight: (B, G, k, k, H, W); channel c uses group c // (C / G).
    """
    b, c, h, w = x.shape
    groups, k = weight.shape[1], weight.shape[2]
    # unfold: (b, c*k*k, h*w), rows ordered (channel, kernel row, kernel col)
    windows = F.unfold(x, kernel_size=k, padding=(k - 1) // 2).view(b, groups, c // groups, k * k, h * w)
    taps = weight.reshape(b, groups, 1, k * k, h * w)
    return (windows * taps).sum(dim=3).view(b, c, h, w)


def _dw_branch(
    sd: Mapping[str, torch.Tensor], a: str, x_bhwc: torch.Tensor, kernel_size: int
) -> torch.Tensor:
    """Original `DWBlock` on a (B, H, W, C) map; returns (B, H, W, C)."""
    x = x_bhwc.permute(0, 3, 1, 2)
    x = F.relu(_bn(sd, a + "bn0", F.conv2d(x, sd[a + "conv0.weight"])))
    if a + "conv.weight" in sd:  # static depth-wise conv
        dim = x.shape[1]
        x = F.conv2d(x, sd[a + "conv.weight"], sd[a + "conv.bias"], padding=kernel_size // 2, groups=dim)
    elif a + "conv.conv1.weight" in sd:
        x = _dynamic_dwconv(sd, a + "conv.", x, kernel_size)
    elif a + "conv.conv1.0.weight" in sd:
        x = _inhomogeneous_dwconv(sd, a + "conv.", x, kernel_size)
    else:
        raise KeyError(f"no depth-wise conv weights under {a}conv.")
    x = F.relu(_bn(sd, a + "bn", x))
    x = _bn(sd, a + "bn2", F.conv2d(x, sd[a + "conv2.weight"]))
    return x.permute(0, 2, 3, 1)


def _spatial_block(
    sd: Mapping[str, torch.Tensor],
    p: str,
    x: torch.Tensor,
    height: int,
    width: int,
    kernel_size: int,
    pad_to_kernel: bool,
) -> torch.Tensor:
    """Original `SpatialBlock` on tokens (B, L, C)."""
    b, length, c = x.shape
    assert length == height * width
    shortcut = x
    x = x.view(b, height, width, c)
    if pad_to_kernel:  # downstream flavour: zero-pad right/bottom to a kernel multiple, crop after the branch
        pad_r = (kernel_size - width % kernel_size) % kernel_size
        pad_b = (kernel_size - height % kernel_size) % kernel_size
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        x = _dw_branch(sd, p + "attn2conv.", x, kernel_size)[:, :height, :width, :]
    else:
        x = _dw_branch(sd, p + "attn2conv.", x, kernel_size)
    x = shortcut + x.reshape(b, length, c)
    shortcut = x
    y = _bn(sd, p + "bn", x.view(b, height, width, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, length, c)
    y = F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
    y = F.gelu(y)
    y = F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return shortcut + y


def _patch_merging(
    sd: Mapping[str, torch.Tensor], p: str, x: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, int, int]:
    """Original `PatchMerging` (odd sizes zero-padded right/bottom as in the downstream flavour)."""
    b, _, c = x.shape
    x = x.view(b, height, width, c)
    if height % 2 or width % 2:
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
    x0 = x[:, 0::2, 0::2, :]
    x1 = x[:, 1::2, 0::2, :]
    x2 = x[:, 0::2, 1::2, :]
    x3 = x[:, 1::2, 1::2, :]
    x = torch.cat([x0, x1, x2, x3], dim=-1).reshape(b, -1, 4 * c)
    x = F.linear(_ln(sd, p + "norm", x), sd[p + "reduction.weight"])
    return x, (height + 1) // 2, (width + 1) // 2


def _num_stages_and_depths(sd: Mapping[str, torch.Tensor]) -> list[int]:
    depths: dict[int, int] = {}
    for key in sd:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "layers" and parts[2] == "blocks":
            stage, block = int(parts[1]), int(parts[3])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    assert sorted(depths) == list(range(len(depths))), f"bad stages {sorted(depths)}"
    return [depths[s] for s in range(len(depths))]


def original_forward(
    state_dict: Mapping[str, torch.Tensor],
    pixel_values: torch.Tensor,
    *,
    downstream: bool = False,
    kernel_size: int = 7,
    stage_outputs: bool = False,
    pad_to_kernel_multiple: bool | None = None,
):
    """The original DWNet forward pass, from an original-format state dict.

    Classification (`downstream=False`): returns `(logits, pooled)`, `pooled` being the features after the final
    LayerNorm and average pool (`logits` is `None` if the state dict has no head).
    Downstream (`downstream=True`, keys prefixed `backbone.`, or not): returns the list of the stage outputs
    after their BatchNorms `norm0..normN`, as NCHW maps.

    `stage_outputs=True` (classification flavour) returns instead the raw NCHW output of every stage (before patch
    merging, no norm). `pad_to_kernel_multiple` overrides the downstream per-block padding (default: on exactly
    when `downstream`); it exists for negative controls only.
    """
    if pad_to_kernel_multiple is None:
        pad_to_kernel_multiple = downstream
    prefixed = any(key.startswith(DOWNSTREAM_PREFIX) for key in state_dict)
    if prefixed and not downstream:
        raise ValueError("A `backbone.`-prefixed (downstream) state dict needs downstream=True.")
    if prefixed:  # mmdet/mmseg checkpoint: keep the backbone, drop necks and heads
        sd = {k[len(DOWNSTREAM_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(DOWNSTREAM_PREFIX)}
    else:
        sd = dict(state_dict)
    sd = {key: value.float() if value.is_floating_point() else value for key, value in sd.items()}
    static_weight = sd.get("layers.0.blocks.0.attn2conv.conv.weight")
    if static_weight is not None:
        assert static_weight.shape[-1] == kernel_size, "kernel_size disagrees with the static conv weights"
    depths = _num_stages_and_depths(sd)
    x = pixel_values.float()

    # patch embedding: zero-pad right/bottom to a patch multiple, strided conv, LayerNorm over channels
    proj_w = sd["patch_embed.proj.weight"]
    patch = proj_w.shape[-1]
    _, _, h_in, w_in = x.shape
    x = F.pad(x, (0, (patch - w_in % patch) % patch, 0, (patch - h_in % patch) % patch))
    x = F.conv2d(x, proj_w, sd["patch_embed.proj.bias"], stride=patch)
    height, width = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)  # (B, L, C)
    x = _ln(sd, "patch_embed.norm", x)

    outputs = []
    for stage, depth in enumerate(depths):
        for block in range(depth):
            x = _spatial_block(
                sd, f"layers.{stage}.blocks.{block}.", x, height, width, kernel_size, pad_to_kernel_multiple
            )
        b, _, c = x.shape
        stage_map = x.view(b, height, width, c).permute(0, 3, 1, 2).contiguous()
        if downstream and f"norm{stage}.weight" in sd:
            outputs.append(_bn(sd, f"norm{stage}", stage_map))
        elif not downstream and stage_outputs:
            outputs.append(stage_map)
        if stage < len(depths) - 1:
            x, height, width = _patch_merging(sd, f"layers.{stage}.downsample.", x, height, width)

    if downstream or stage_outputs:
        return outputs
    x = _ln(sd, "norm", x)
    pooled = x.mean(dim=1)  # AdaptiveAvgPool1d(1) over the tokens
    logits = F.linear(pooled, sd["head.weight"], sd["head.bias"]) if "head.weight" in sd else None
    return logits, pooled


__all__ = ["inhomogeneous_conv_unfold", "make_original_state_dict", "original_forward", "original_key_shapes"]

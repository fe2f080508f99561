"""One strict key-mapping helper shared by every converter: regex rename rules, shape fixes, and a load that
refuses anything but an exact match."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


class ConversionError(ValueError):
    """A checkpoint could not be converted; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class RenameRule:
    """Rename keys matching `pattern` (a regex, anchored at both ends) to `replacement`: a template with `\\1`
    groups, or a function of the match for renames that need arithmetic (e.g. `norm0` -> `stage1`)."""

    pattern: str
    replacement: str | Callable[[re.Match], str]

    def apply(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        if callable(self.replacement):
            return self.replacement(match)
        return match.expand(self.replacement)


def rename_state_dict(
    state_dict: Mapping[str, torch.Tensor], rules: Iterable[RenameRule], ignore: Iterable[str] = ()
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply the first matching rule to every key. Returns the renamed dict and the original keys no rule matched
    (keys matching an `ignore` regex, such as BatchNorm's `num_batches_tracked`, are dropped silently)."""
    rules = list(rules)
    ignore_patterns = [re.compile(pattern) for pattern in ignore]
    renamed: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in state_dict.items():
        if any(pattern.fullmatch(key) for pattern in ignore_patterns):
            continue
        for rule in rules:
            new_key = rule.apply(key)
            if new_key is not None:
                renamed[new_key] = value
                break
        else:
            unmatched.append(key)
    return renamed, unmatched


def match_shapes(
    model: nn.Module, state_dict: dict[str, torch.Tensor], reshape_allowed: Callable[[str], bool] = lambda key: True
) -> dict[str, torch.Tensor]:
    """Reshape tensors whose element count matches the model's (e.g. Linear `[out, in]` -> 1x1 conv
    `[out, in, 1, 1]`); a real shape mismatch is left for `load_strictly` to report."""
    expected = model.state_dict()
    fixed = {}
    for key, value in state_dict.items():
        target = expected.get(key)
        if (
            target is not None
            and value.shape != target.shape
            and value.numel() == target.numel()
            and reshape_allowed(key)
        ):
            value = value.reshape(target.shape)
        fixed[key] = value
    return fixed


def load_strictly(model: nn.Module, state_dict: dict[str, torch.Tensor], unmatched: Iterable[str] = ()) -> None:
    """Load `state_dict` into `model`, failing with every missing, unexpected and mis-shaped key listed."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected)) + sorted(unmatched)
    mismatched = sorted(
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        lines = ["The checkpoint does not match the model exactly; nothing was written."]
        for title, keys in (("Missing keys", missing), ("Unexpected keys", unexpected), ("Shape mismatches", mismatched)):
            if keys:
                lines.append(f"{title} ({len(keys)}):")
                lines.extend(f"  {key}" for key in keys)
        lines.append("Check that the checkpoint is the architecture you asked for (see --model-name), and that it is complete.")
        raise ConversionError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)

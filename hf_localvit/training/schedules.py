"""Learning-rate schedules: transformers' `get_scheduler` ones, plus mmdetection's step schedule."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

STEP_SCHEDULE = "step"
# mmdetection's 3x schedule: learning rate x0.1 after epochs 27 and 33 of 36 (the 1x schedule's 8 and 11 of 12 are
# close: 0.67 and 0.92).
STEP_MILESTONES = (27 / 36, 33 / 36)
STEP_GAMMA = 0.1


def _step_factor(step: int, warmup_steps: int, total_steps: int, milestones: Sequence[float], gamma: float) -> float:
    if step < warmup_steps:
        return step / max(warmup_steps, 1)
    # The first step at or past each milestone (rounded up, with a margin for float error in e.g. 33 / 36 * 36): the
    # trainer counts `num_processes` scheduler steps per optimizer step, and rounding up gives the same optimizer step
    # for any process count, where `round` (to even, at x.5) could move a milestone by one step.
    return gamma ** sum(step >= math.ceil(fraction * total_steps - 1e-6) for fraction in milestones)


def step_schedule(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    milestones: Sequence[float] = STEP_MILESTONES,
    gamma: float = STEP_GAMMA,
) -> LambdaLR:
    """Linear warm-up from 0, then the peak rate multiplied by `gamma` at each milestone (a fraction of the steps)."""
    factor = functools.partial(
        _step_factor,
        warmup_steps=num_warmup_steps,
        total_steps=num_training_steps,
        milestones=tuple(milestones),
        gamma=gamma,
    )
    return LambdaLR(optimizer, factor)


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule `name`: `step` (mmdetection's), else transformers' `get_scheduler(name, ...)`."""
    if name == STEP_SCHEDULE:
        return step_schedule(optimizer, num_warmup_steps, num_training_steps)
    return get_scheduler(
        name, optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )

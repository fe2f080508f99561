"""Counter-based seeding: every random draw of a run is a function of (seed, what is being drawn for).

Augmentations are seeded per (seed, epoch, sample index) and each training micro-batch per (seed, micro-batch
counter, process index). A run therefore does not depend on how many data workers there are, and a run resumed
from a checkpoint draws exactly what the uninterrupted run would have drawn, whatever RNG the data loader or the
resume itself consumed in between.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that mixes all `keys` (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(key) & 0xFFFFFFFFFFFFFFFF for key in keys]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


@contextlib.contextmanager
def seeded_cpu_rng(*keys: int) -> Iterator[None]:
    """Run the block with the CPU torch and Python RNGs seeded from `keys`; restore both afterwards."""
    seed = derive_seed(*keys)
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


def seed_step(*keys: int) -> None:
    """Seed the global torch (all devices) and Python RNGs for one training micro-batch."""
    seed = derive_seed(*keys)
    torch.manual_seed(seed)
    random.seed(seed)

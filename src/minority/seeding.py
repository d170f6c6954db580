"""Sources of Gaussian noise for sampling: per-sample seeded, or a recorded sequence replayed.

Every random draw in a sampling loop goes through a noise source, tagged with its role
(``x_T``, ``ancestral``, ``ddim``, ``sg_perturb``, …). :class:`SeededNoise` gives sample i its
own generator seeded by (seed, i), so sample i receives the same noise whatever the batch size,
the number of processes, or a resume after a crash. :class:`ReplayNoise` serves a recorded
sequence of draws in order, which replays a reference trajectory exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError


class NoiseSource(Protocol):
    """Anything that serves standard normal draws of a batch shape."""

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        """A standard normal tensor of ``shape`` (B, …) for the draw tagged ``role``."""
        ...


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit generator seed for global sample ``index`` under run ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


class SeededNoise:
    """One CPU generator per sample, seeded by the sample's global index.

    Draws are made on the CPU in float32 and moved to ``device``, so they are identical on every
    device and for every batch composition.

    Args:
        seed: the run's seed.
        indices: global indices of the samples in this batch, length B.
        device: where the draws are returned.
    """

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.indices = [int(i) for i in indices]
        self.device = torch.device(device)
        self.generators = [
            torch.Generator().manual_seed(sample_seed(seed, i)) for i in self.indices
        ]

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} samples requested from {len(self.generators)}")
        per_sample = tuple(shape[1:])
        rows = [torch.randn(per_sample, generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device)


class ReplayNoise:
    """Serve a recorded sequence of draws in order, checking roles when they were recorded.

    Args:
        draws: the recorded tensors, in the order they were consumed.
        roles: the role of each draw, or None to skip the check.
    """

    def __init__(self, draws: Sequence[Tensor], roles: Sequence[str] | None = None):
        self.draws = list(draws)
        self.roles = list(roles) if roles is not None else None
        self.position = 0

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        if self.position >= len(self.draws):
            raise UserError(f"The recorded noise ran out at draw {self.position} ('{role}').")
        expected = self.roles[self.position] if self.roles is not None else role
        if expected != role:
            raise UserError(
                f"Recorded draw {self.position} is '{expected}' but the sampler asked for '{role}'."
            )
        draw = self.draws[self.position]
        self.position += 1
        if tuple(draw.shape) != tuple(shape):
            raise UserError(
                f"Recorded draw has shape {tuple(draw.shape)}, expected {tuple(shape)}."
            )
        return draw

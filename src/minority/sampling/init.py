"""Initialisation policies: standard x_T ~ N(0, I), or Boost-and-Skip (Um, Kim, Ye, ICML 2025).

Boost-and-Skip starts from x_T ~ N(0, γ² I) and skips the first Δt respaced steps, so the loop
starts at index T'−1−Δt. γ = 1, Δt = 0 is the standard start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from minority.errors import require
from minority.seeding import NoiseSource


@dataclass
class Initialisation:
    """Args: gamma γ > 0 (std of x_T); skip Δt ≥ 0 (respaced steps skipped at the start)."""

    gamma: float = 1.0
    skip: int = 0

    def __post_init__(self) -> None:
        require(
            0 < self.gamma < math.inf,
            f"Boost-and-Skip gamma (init.gamma) must be positive and finite (got {self.gamma}).",
        )
        require(int(self.skip) >= 0, f"Boost-and-Skip skip must be non-negative (got {self.skip}).")

    def start_index(self, num_steps: int) -> int:
        """The first respaced index the loop runs: T'−1−Δt."""
        require(self.skip < num_steps, f"Cannot skip {self.skip} of {num_steps} steps.")
        return num_steps - 1 - int(self.skip)

    def initial_noise(self, noise: NoiseSource, shape: Sequence[int]) -> Tensor:
        """x_T = γ·z with z drawn as role ``x_T``."""
        z = noise.randn("x_T", shape)
        return z if self.gamma == 1.0 else self.gamma * z

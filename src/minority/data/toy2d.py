"""An imbalanced 2-D Gaussian mixture with exact density: the embedded toy benchmark.

One heavy component plus several light ones. Every component is isotropic, so "within k standard
deviations of some component" is a plain distance test and the log-density is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from minority.errors import require


class GaussianMixture2D:
    """Mixture of isotropic 2-D Gaussians.

    Args:
        means: component means, shape (K, 2).
        stds: component standard deviations, shape (K,), positive.
        weights: mixture weights, shape (K,), positive; normalised to sum to 1.
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]],
        stds: Sequence[float],
        weights: Sequence[float],
    ) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        weights_t = torch.as_tensor(weights, dtype=torch.float64)
        k = self.means.shape[0]
        require(self.means.ndim == 2 and self.means.shape[1] == 2, "toy2d means must be K pairs.")
        require(self.stds.shape == (k,), f"toy2d needs one std per component ({k}).")
        require(weights_t.shape == (k,), f"toy2d needs one weight per component ({k}).")
        require(bool((self.stds > 0).all()), "toy2d stds must be positive.")
        require(bool((weights_t > 0).all()), "toy2d weights must be positive.")
        self.weights = weights_t / weights_t.sum()

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points. Returns (x float32 (n, 2), component int64 (n,))."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, dtype=torch.float64, generator=generator)
        x = self.means[component] + self.stds[component, None] * z
        return x.float(), component

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log(w_k N(x; m_k, s_k² I)) for every component: (N, 2) -> (N, K), float64."""
        x = x.to(torch.float64)
        sq = torch.cdist(x, self.means).square()
        log_norm = -torch.log(2 * torch.pi * self.stds.square())
        return torch.log(self.weights) + log_norm - 0.5 * sq / self.stds.square()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density: (N, 2) -> (N,), float64."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def component_of(self, x: Tensor) -> Tensor:
        """Most responsible component (maximum posterior): (N, 2) -> (N,) int64."""
        return self.component_log_prob(x).argmax(dim=1)

    def within_sigmas(self, x: Tensor, k: float = 3.0) -> Tensor:
        """Whether each point lies within ``k`` stds of some component: (N, 2) -> (N,) bool."""
        distance = torch.cdist(x.to(torch.float64), self.means)
        return (distance <= k * self.stds).any(dim=1)

    def light_components(self) -> Tensor:
        """Indices of every component but the heaviest, int64."""
        heaviest = int(self.weights.argmax())
        return torch.tensor([i for i in range(self.num_components) if i != heaviest])

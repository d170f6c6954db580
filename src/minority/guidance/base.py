"""The guidance contract: a term gives a direction, a weight schedule turns it into a shift.

A :class:`GuidanceTerm` looks at the current step (:class:`GuidanceContext`) and returns a
direction g with the shape of x_t. A :class:`WeightSchedule` says at which steps guidance fires
and how g becomes a shift:

* DDPM (shift of the posterior mean μ):
  - ``var``:   μ ← μ + w·Σ_θ(x_t, t)·g   (classifier guidance's ``condition_mean``; for models
    without learned Σ, Σ is the sampler's fixed variance, the posterior variance by default)
  - ``fixed``: μ ← μ + w·g
* DDIM (shift of ε; the sampler re-derives x̂0 and ε from it):
  - ``var``:   ε ← ε − √(1−ᾱ_t)·w·g  (``condition_score``: w·g added to the score)
  - ``fixed``: ε ← ε + w·g / c_t, with c_t = √(1−ᾱ_{t−1}) − √ᾱ_{t−1}·√(1−ᾱ_t)/√ᾱ_t = ∂x_{t−1}/∂ε
    of the η = 0 update, so that x_{t−1} moves by exactly w·g as in DDPM's ``fixed``.

Firing (the self-guided sampler's rule, on the respaced index i of a T'-step grid): guidance
fires iff i % every == 0 and i > T'·stop_fraction; i = 0 (the last step) satisfies the first
test, and stop_fraction < 0 never switches guidance off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from minority.diffusion.gaussian import GaussianDiffusion
from minority.errors import require
from minority.models.denoiser import Denoiser
from minority.seeding import NoiseSource

SCHEDULE_KINDS = ("var", "fixed")


@dataclass
class GuidanceContext:
    """Everything a guidance term may use at one step.

    Attributes:
        x: x_t, (B, …); when the term ``needs_graph`` it is a leaf with ``requires_grad`` and
            ``eps`` is attached to it through the denoiser's forward pass.
        k: respaced indices, int64 (B,).
        t: original timesteps, int64 (B,).
        eps: ε_θ(x_t, t), (B, …).
        log_variance: log Σ_θ of the step, broadcastable to x.
        diffusion: the respaced diffusion.
        denoiser: the model.
        noise: the noise source (terms that draw, draw after the step's own noise).
        y: class labels of a class-conditional model, int64 (B,), or None.
    """

    x: Tensor
    k: Tensor
    t: Tensor
    eps: Tensor
    log_variance: Tensor
    diffusion: GaussianDiffusion
    denoiser: Denoiser
    noise: NoiseSource
    y: Tensor | None = None


class GuidanceTerm(Protocol):
    """A guidance direction. ``needs_graph``: it differentiates through ε_θ at x_t."""

    needs_graph: bool

    def direction(self, ctx: GuidanceContext) -> Tensor:
        """g, same shape as ``ctx.x``, detached."""
        ...


@dataclass
class WeightSchedule:
    """When guidance fires and how its direction becomes a shift (module docstring).

    Args:
        scale: w ≥ 0.
        kind: "var" or "fixed".
        every: fire every n-th respaced index (n ≥ 1).
        stop_fraction: fire only while i > T'·stop_fraction; negative = never off.
    """

    scale: float
    kind: str = "var"
    every: int = 1
    stop_fraction: float = -1.0

    def __post_init__(self) -> None:
        require(self.kind in SCHEDULE_KINDS, f"schedule kind must be one of {SCHEDULE_KINDS}.")
        require(
            0 <= self.scale < math.inf,
            f"guidance scale (guidance.scale) must be non-negative and finite (got {self.scale}).",
        )
        require(int(self.every) >= 1, f"schedule 'every' must be at least 1 (got {self.every}).")

    def fires(self, i: int, num_steps: int) -> bool:
        """Whether guidance acts at respaced index ``i`` of a ``num_steps``-step grid."""
        return i % int(self.every) == 0 and i > num_steps * self.stop_fraction

    def mean_shift(self, g: Tensor, log_variance: Tensor) -> Tensor:
        """The DDPM shift of μ: w·Σ·g ("var") or w·g ("fixed")."""
        scaled = g * self.scale
        return log_variance.exp() * scaled if self.kind == "var" else scaled

    def eps_shift(self, g: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
        """The DDIM shift of ε (module docstring); ᾱ's broadcastable to g."""
        scaled = g * self.scale
        if self.kind == "var":
            return -(1 - alpha_bar).sqrt() * scaled
        c = (1 - alpha_bar_prev).sqrt() - alpha_bar_prev.sqrt() * (
            1 - alpha_bar
        ).sqrt() / alpha_bar.sqrt()
        return scaled / c


@dataclass
class Guide:
    """A guidance term with its weight schedule."""

    term: GuidanceTerm
    schedule: WeightSchedule

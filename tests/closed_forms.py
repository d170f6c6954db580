"""Closed-form models shared by tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion
from minority.guidance.base import GuidanceContext


class GaussianEps(nn.Module):
    """The exact ε-prediction for data x0 ~ N(μ, s² I):
    √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t), with ᾱ of the original (un-respaced) schedule."""

    def __init__(self, diffusion: GaussianDiffusion, std: float, mean: float = 0.0):
        super().__init__()
        self.register_buffer("alpha_bar", torch.from_numpy(diffusion.original_alphas_cumprod))
        self.var, self.mean = std**2, mean

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.alpha_bar[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mean) / (a * self.var + 1 - a)


class ConstantTerm:
    """A guidance direction fixed in advance (tests a schedule's or a sampler's arithmetic)."""

    needs_graph = False

    def __init__(self, g: Tensor):
        self.g = g

    def direction(self, ctx: GuidanceContext) -> Tensor:
        return self.g

"""The Denoiser contract: one callable interface over every backbone.

Given x_t, the **original** integer timestep and optional class labels, a Denoiser returns ε and,
for models with learned variance, the variance interpolant v. Respacing never reaches a network.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class ModelOutput:
    """A denoiser's prediction at (x_t, t).

    Attributes:
        eps: predicted noise ε_θ(x_t, t), shape of x_t.
        var_values: learned-variance interpolant v (about [−1, 1]), shape of x_t, or None.
    """

    eps: Tensor
    var_values: Tensor | None = None


class Denoiser(nn.Module):
    """Wrap a network ``net(x, t, y=None) -> (B, C or 2C, …)`` as ε (and v) prediction.

    Args:
        net: the backbone; receives original timesteps (int64 (B,)), never respaced indices.
        learn_sigma: whether the output's channel axis (dim 1) stacks [ε, v].
        class_cond: whether ``y`` is passed on to the backbone.
    """

    def __init__(self, net: nn.Module, learn_sigma: bool = False, class_cond: bool = False):
        super().__init__()
        self.net = net
        self.learn_sigma = learn_sigma
        self.class_cond = class_cond

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> ModelOutput:
        """x: (B, …) noisy input; t: int64 (B,) original timesteps; y: int64 (B,) or None."""
        out = self.net(x, t, y) if self.class_cond else self.net(x, t)
        if not self.learn_sigma:
            return ModelOutput(eps=out)
        eps, var_values = out.chunk(2, dim=1)
        return ModelOutput(eps=eps, var_values=var_values)

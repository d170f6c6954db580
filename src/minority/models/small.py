"""A small ε-prediction network for vectors (the toy2d mixture, flattened digits)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from minority.errors import UserError
from minority.models.adm.layers import timestep_embedding


class MLPNet(nn.Module):
    """MLP with a sinusoidal timestep embedding added after the input layer.

    Args:
        dim: data dimension D.
        hidden: width of every hidden layer.
        depth: number of hidden layers (≥ 1).
        learn_sigma: output [ε, v] (2D values) instead of ε (D values).
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, learn_sigma: bool = False):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.body = nn.Sequential(
            *layers, nn.SiLU(), nn.Linear(hidden, dim * (2 if learn_sigma else 1))
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, D) or (B, C, H, W) flattened to D; t: int64 (B,) original timesteps."""
        values = math.prod(x.shape[1:])
        if values != self.dim:  # the message is built only then: this runs every step
            raise UserError(
                f"The MLP denoiser takes samples of {self.dim} values (model.dim), but this "
                f"dataset's samples have shape {tuple(x.shape[1:])} ({values} values): choose a "
                "backbone for this data (an image dataset needs model=unet8 or an adm_* model), "
                "or set model.dim."
            )
        h = self.inp(x.flatten(1)) + self.time(timestep_embedding(t, self.hidden))
        out = self.body(h)
        if x.ndim == 2:
            return out
        channels = x.shape[1] * out.shape[1] // self.dim
        return out.reshape(x.shape[0], channels, *x.shape[2:])

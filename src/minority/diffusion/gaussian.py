"""Gaussian diffusion on a (possibly respaced) schedule: q_sample, Tweedie, posterior, variance.

Indices ``k`` here are **respaced** indices 0..T'−1; :attr:`GaussianDiffusion.timestep_map`
turns them into the original timesteps the networks see. Coefficients are float64 arrays,
gathered at k and cast to the tensor's dtype before they multiply it (guided-diffusion's rule,
which the golden fixtures are bit-exact with).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from minority.diffusion.schedule import get_betas, space_timesteps
from minority.errors import UserError

VARIANCE_TYPES = ("learned_range", "fixed_small", "fixed_large")


class GaussianDiffusion:
    """A discrete-time diffusion with ε-prediction.

    Args:
        betas: β of the original T-step process, float64 (T,).
        timestep_map: original timesteps kept, ascending; None keeps all T.
        variance_type: "learned_range" (model outputs v; log σ² interpolates between log β̃
            and log β), "fixed_small" (posterior variance β̃) or "fixed_large" (β, with β̃_1 at
            k = 0), as guided-diffusion.
    """

    def __init__(
        self,
        betas: np.ndarray,
        timestep_map: Sequence[int] | None = None,
        variance_type: str = "fixed_small",
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise UserError(
                f"Unknown variance type '{variance_type}'; use one of {VARIANCE_TYPES}."
            )
        self.variance_type = variance_type
        self.num_original_timesteps = len(betas)
        self.original_betas = np.asarray(betas, dtype=np.float64)
        self.original_alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
        self.timestep_map = (
            list(timestep_map) if timestep_map is not None else list(range(len(betas)))
        )
        previous, respaced = 1.0, []
        for t in self.timestep_map:
            respaced.append(1 - self.original_alphas_cumprod[t] / previous)
            previous = self.original_alphas_cumprod[t]
        self._set_coefficients(np.array(respaced, dtype=np.float64))

    def _set_coefficients(self, betas: np.ndarray) -> None:
        self.betas = betas
        self.num_timesteps = len(betas)
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
            if len(betas) > 1
            else np.array([betas[0]])
        )
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - self.alphas_cumprod)
        )

    # -- index bookkeeping ---------------------------------------------------------------------
    def original(self) -> GaussianDiffusion:
        """The un-respaced T-step process behind this one: its index k is the original t."""
        if self.timestep_map == list(range(self.num_original_timesteps)):
            return self
        return GaussianDiffusion(self.original_betas, None, self.variance_type)

    def original_timestep(self, k: Tensor) -> Tensor:
        """Respaced indices -> original timesteps, int64, same shape and device as ``k``."""
        table = torch.as_tensor(self.timestep_map, dtype=torch.int64, device=k.device)
        return table[k]

    @staticmethod
    def gather(array: np.ndarray, k: Tensor, like: Tensor) -> Tensor:
        """``array[k]`` cast to ``like``'s dtype and shaped to broadcast over it: (B, 1, …)."""
        values = torch.from_numpy(array).to(k.device)[k].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    # -- forward process and Tweedie -----------------------------------------------------------
    def q_sample(self, x0: Tensor, k: Tensor, noise: Tensor) -> Tensor:
        """x_k = √ᾱ_k x0 + √(1−ᾱ_k) ε. Shapes (B, …); k int64 (B,)."""
        return (
            self.gather(self.sqrt_alphas_cumprod, k, x0) * x0
            + self.gather(self.sqrt_one_minus_alphas_cumprod, k, x0) * noise
        )

    def pred_xstart(self, x: Tensor, k: Tensor, eps: Tensor) -> Tensor:
        """Tweedie's posterior mean x̂0 = √(1/ᾱ_k) x_k − √(1/ᾱ_k − 1) ε (not clipped)."""
        return (
            self.gather(self.sqrt_recip_alphas_cumprod, k, x) * x
            - self.gather(self.sqrt_recipm1_alphas_cumprod, k, x) * eps
        )

    def pred_eps(self, x: Tensor, k: Tensor, x0: Tensor) -> Tensor:
        """ε consistent with x̂0: (√(1/ᾱ_k) x_k − x̂0) / √(1/ᾱ_k − 1)."""
        return (self.gather(self.sqrt_recip_alphas_cumprod, k, x) * x - x0) / self.gather(
            self.sqrt_recipm1_alphas_cumprod, k, x
        )

    def posterior_mean(self, x0: Tensor, x: Tensor, k: Tensor) -> Tensor:
        """Mean of q(x_{k−1} | x_k, x0) = c1_k x0 + c2_k x_k."""
        return (
            self.gather(self.posterior_mean_coef1, k, x) * x0
            + self.gather(self.posterior_mean_coef2, k, x) * x
        )

    def log_variance(self, k: Tensor, x: Tensor, var_values: Tensor | None = None) -> Tensor:
        """log σ²_k of p(x_{k−1} | x_k), broadcastable to ``x``.

        For "learned_range", ``var_values`` (v in about [−1, 1], shape of x) interpolates:
        log σ² = frac·log β_k + (1 − frac)·log β̃_k^clip with frac = (v + 1)/2, not clamped.
        """
        if self.variance_type == "learned_range":
            if var_values is None:
                raise UserError("variance 'learned_range' needs a model that outputs 2C channels.")
            min_log = self.gather(self.posterior_log_variance_clipped, k, x)
            max_log = self.gather(np.log(self.betas), k, x)
            frac = (var_values + 1) / 2
            return frac * max_log + (1 - frac) * min_log
        if self.variance_type == "fixed_large":
            large = np.append(self.posterior_variance[1], self.betas[1:])
            return self.gather(np.log(large), k, x)
        return self.gather(self.posterior_log_variance_clipped, k, x)

    def variance(self, k: Tensor, x: Tensor, var_values: Tensor | None = None) -> Tensor:
        """Σ_k of p(x_{k−1} | x_k) as guided-diffusion's ``variance``, broadcastable to ``x``.

        "fixed_small": the posterior variance β̃_k itself, 0 at k = 0 (only its log is clipped,
        to β̃_1, for the noise scale); otherwise exp(:meth:`log_variance`).
        """
        if self.variance_type == "fixed_small":
            return self.gather(self.posterior_variance, k, x)
        return self.log_variance(k, x, var_values).exp()


def build_diffusion(
    noise_schedule: str = "cosine",
    diffusion_steps: int = 1000,
    timestep_respacing: str | int | None = None,
    variance_type: str = "fixed_small",
) -> GaussianDiffusion:
    """A diffusion from guided-diffusion flags, respaced when ``timestep_respacing`` is set."""
    betas = get_betas(noise_schedule, diffusion_steps)
    return GaussianDiffusion(
        betas, space_timesteps(diffusion_steps, timestep_respacing), variance_type
    )

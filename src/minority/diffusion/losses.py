"""Training losses: ε-MSE, plus the variational bound term for learned Σ (the hybrid loss).

With learned variance (Nichol & Dhariwal 2021) the loss is L_simple + (T/1000)·L_vlb, where
L_vlb is the KL of q(x_{t−1} | x_t, x0) from p(x_{t−1} | x_t) in bits per dimension, computed
with the mean frozen (stop-gradient on ε) so that only v learns from it. At t = 0 the term is
the continuous Gaussian negative log-likelihood of x0 (the embedded data are not 8-bit images,
so no discretised decoder).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minority.diffusion.gaussian import GaussianDiffusion
from minority.models.denoiser import Denoiser


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch axis: (B, …) -> (B,)."""
    return x.flatten(1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
        - 1
    )


def gaussian_nll(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """−log N(x; mean, e^log_variance) elementwise, in nats."""
    return 0.5 * (math.log(2 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def training_losses(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x0: Tensor, k: Tensor, noise: Tensor
) -> dict[str, Tensor]:
    """Per-sample losses at indices ``k`` (int64 (B,)) of ``diffusion``: keys loss, mse[, vb]."""
    x_t = diffusion.q_sample(x0, k, noise)
    out = denoiser(x_t, diffusion.original_timestep(k))
    mse = mean_flat((out.eps - noise) ** 2)
    if out.var_values is None:
        return {"loss": mse, "mse": mse}
    frozen_x0 = diffusion.pred_xstart(x_t, k, out.eps.detach())
    model_mean = diffusion.posterior_mean(frozen_x0, x_t, k)
    model_log_var = diffusion.log_variance(k, x_t, out.var_values)
    true_mean = diffusion.posterior_mean(x0, x_t, k)
    true_log_var = diffusion.gather(diffusion.posterior_log_variance_clipped, k, x_t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
    nll = mean_flat(gaussian_nll(x0, model_mean, model_log_var)) / math.log(2.0)
    vb = torch.where(k == 0, nll, kl) * (diffusion.num_timesteps / 1000.0)
    return {"loss": mse + vb, "mse": mse, "vb": vb}

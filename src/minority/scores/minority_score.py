"""The minority score of real data (Um, Lee, Ye, ICLR 2024).

    ℓ(x0) = (1/K) Σ_k d( x0, clip(x̂0(√ᾱ_t x0 + √(1−ᾱ_t) ε_k, t)) ),   ε_k ~ N(0, I)

with x̂0 Tweedie's posterior mean at the **original** timestep t: the perturbation uses ᾱ_t of
the original T-step schedule and the network sees t, whatever respacing the diffusion object
carries. A higher score means the one-shot reconstruction moved x0 further towards majority
features: x0 is more unique.

The official setting is d = LPIPS-VGG, K = 5 and "index 60 of a 100-step respacing", i.e. the
original t = 605 (:func:`timestep_from_respaced_index`); since the same index means very different
noise levels on linear and cosine schedules, :func:`timestep_from_snr` picks t by signal-to-noise
ratio instead. Each draw ε_k is one (B, …) tensor taken from a noise source with role
``ms_perturb``; with :class:`~minority.seeding.SeededNoise` keyed by dataset index a
sample's score does not depend on the batch it was computed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion
from minority.diffusion.schedule import get_betas, space_timesteps
from minority.errors import UserError, require
from minority.models.denoiser import Denoiser
from minority.scores.distances import Distance, build_distance
from minority.seeding import NoiseSource, SeededNoise

PERTURB_ROLE = "ms_perturb"


def timestep_from_respaced_index(
    index: int, timestep_respacing: str | int = "100", diffusion_steps: int = 1000
) -> int:
    """Original timestep of respaced ``index`` (the official form: 60 of "100" → 605)."""
    timesteps = space_timesteps(diffusion_steps, timestep_respacing)
    require(
        0 <= index < len(timesteps),
        f"Respaced index {index} is outside 0..{len(timesteps) - 1} of respacing "
        f"'{timestep_respacing}'.",
    )
    return timesteps[index]


def timestep_from_snr(
    snr: float, noise_schedule: str = "cosine", diffusion_steps: int = 1000
) -> int:
    """The original timestep whose SNR ᾱ_t / (1 − ᾱ_t) is nearest to ``snr`` (in log scale)."""
    require(snr > 0, f"The signal-to-noise ratio must be positive (got {snr}).")
    alpha_bar = np.cumprod(1.0 - get_betas(noise_schedule, diffusion_steps))
    log_snr = np.log(alpha_bar) - np.log1p(-alpha_bar)
    return int(np.argmin(np.abs(log_snr - np.log(snr))))


@dataclass
class MinorityScoreDraws:
    """A batch's minority scores with their per-draw parts.

    Attributes:
        scores: ℓ(x0), float32 (B,).
        dist_per_draw: d(x0, x̂0_k), float32 (B, K).
        x0_hat: the reconstructions x̂0_k, (K, B, …), or None unless asked for.
    """

    scores: Tensor
    dist_per_draw: Tensor
    x0_hat: Tensor | None = None


class MinorityScorer(nn.Module):
    """Minority scores of real samples with a frozen denoiser (module docstring).

    Args:
        denoiser: ε-prediction model; called as ``denoiser(x_t, t)`` with original timesteps.
        diffusion: any diffusion on the model's schedule; only its original T-step schedule
            is used.
        perturb_t: the original timestep t of the perturbation, 0 ≤ t < T.
        num_draws: K, noise draws averaged per sample.
        distance: a name for :func:`~minority.scores.distances.build_distance` ("lpips-vgg",
            "l2", "mse", …) or a callable (B, …), (B, …) → (B,).
        distance_weights: file of an LPIPS trunk, when ``distance`` names one.
        clip_denoised: clip x̂0 to [−1, 1] before measuring (the official score does).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        diffusion: GaussianDiffusion,
        perturb_t: int,
        num_draws: int = 5,
        distance: str | Distance = "lpips-vgg",
        distance_weights: str | None = None,
        clip_denoised: bool = True,
    ):
        super().__init__()
        process = diffusion.original()
        require(
            0 <= int(perturb_t) < process.num_timesteps,
            f"perturb_t {perturb_t} is outside 0..{process.num_timesteps - 1}.",
        )
        require(int(num_draws) >= 1, f"num_draws must be at least 1 (got {num_draws}).")
        self.denoiser = denoiser
        self.process = process
        self.perturb_t = int(perturb_t)
        self.num_draws = int(num_draws)
        self.distance = (
            build_distance(distance, distance_weights) if isinstance(distance, str) else distance
        )
        self.clip_denoised = clip_denoised

    def reconstruct(self, x0: Tensor, z: Tensor) -> Tensor:
        """x̂0 of x_t = √ᾱ_t x0 + √(1−ᾱ_t) z at t = ``perturb_t``; clipped if configured."""
        t = torch.full((x0.shape[0],), self.perturb_t, dtype=torch.int64, device=x0.device)
        x_t = self.process.q_sample(x0, t, z)
        x0_hat = self.process.pred_xstart(x_t, t, self.denoiser(x_t, t).eps)
        return x0_hat.clamp(-1, 1) if self.clip_denoised else x0_hat

    @torch.no_grad()
    def draws(
        self, x0: Tensor, noise: NoiseSource, keep_reconstructions: bool = False
    ) -> MinorityScoreDraws:
        """Scores of ``x0`` (B, …) in [−1, 1], with each draw's distance (and x̂0 if asked)."""
        distances, reconstructions = [], []
        for _ in range(self.num_draws):
            z = noise.randn(PERTURB_ROLE, x0.shape).to(x0.device, x0.dtype)
            x0_hat = self.reconstruct(x0, z)
            distances.append(self.distance(x0, x0_hat).reshape(-1).float())
            if keep_reconstructions:
                reconstructions.append(x0_hat)
        dist_per_draw = torch.stack(distances, dim=1)
        return MinorityScoreDraws(
            scores=dist_per_draw.mean(dim=1),
            dist_per_draw=dist_per_draw,
            x0_hat=torch.stack(reconstructions) if keep_reconstructions else None,
        )

    def forward(self, x0: Tensor, noise: NoiseSource) -> Tensor:
        """ℓ(x0): (B, …) in [−1, 1] → float32 (B,)."""
        return self.draws(x0, noise).scores


def score_dataset(
    scorer: MinorityScorer,
    x: Tensor,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Scores of a whole in-memory dataset (N, …), aligned with its indices: float32 (N,).

    Sample i's draws come from its own generator keyed by (``seed``, i), so the result does not
    depend on ``batch_size`` or ``device`` placement.
    """
    scores = []
    for start in range(0, x.shape[0], batch_size):
        indices = range(start, min(start + batch_size, x.shape[0]))
        batch = x[start : indices.stop].to(device)
        scores.append(scorer(batch, SeededNoise(seed, indices, device)).cpu())
    return torch.cat(scores)


def scores_by_index(indices: Sequence[Tensor], scores: Sequence[Tensor], num_items: int) -> Tensor:
    """Assemble per-batch (index, score) pairs into one float32 (N,) tensor, ℓ[i] of item i.

    Raises:
        UserError: an index is outside 0..N−1, missing, or given twice.
    """
    index = torch.cat([torch.as_tensor(i).reshape(-1).cpu() for i in indices]).long()
    value = torch.cat([torch.as_tensor(s).reshape(-1).cpu() for s in scores]).float()
    if index.numel() and (index.min() < 0 or index.max() >= num_items):
        raise UserError(f"Score indices must lie in 0..{num_items - 1}.")
    counts = torch.bincount(index, minlength=num_items)
    if not bool((counts == 1).all()):
        missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
        raise UserError(
            f"Every item needs exactly one score: {missing} missing and {repeated} repeated."
        )
    result = torch.empty(num_items, dtype=torch.float32)
    result[index] = value
    return result

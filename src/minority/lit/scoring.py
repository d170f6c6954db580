"""LightningModule computing minority scores of a data set with ``Trainer.predict``.

Batches are (x0, index) pairs — e.g. a DataLoader over ``TensorDataset(x, torch.arange(N))``
(:func:`indexed_dataset`). Sample i's draws come from its own generator keyed by (seed, i), so
the scores do not depend on the batch size, the number of devices or the order of the batches;
:func:`~minority.scores.minority_score.scores_by_index` assembles the returned (index, score)
pairs into one tensor aligned with the data set.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from minority.diffusion.gaussian import build_diffusion
from minority.models.denoiser import Denoiser
from minority.sampling.noise import SeededNoise
from minority.scores.distances import Distance
from minority.scores.minority_score import MinorityScorer


def indexed_dataset(x: Tensor) -> TensorDataset:
    """(x_i, i) pairs of an in-memory data set x (N, …)."""
    return TensorDataset(x, torch.arange(x.shape[0]))


class MinorityScoreModule(pl.LightningModule):
    """``predict_step((x0, index)) -> (index, ℓ(x0))`` with per-sample seeded noise.

    Args:
        denoiser: the frozen ε-prediction model (put in eval mode, gradients off).
        noise_schedule, diffusion_steps: its training schedule.
        perturb_t: original timestep of the perturbation (official: 605 =
            :func:`~minority.scores.minority_score.timestep_from_respaced_index` (60)).
        num_draws: K noise draws per sample.
        distance: distance name ("lpips-vgg", "lpips-alex", "l2", "mse", "l1") or callable.
        distance_weights: file of the LPIPS trunk, None to search the standard places.
        clip_denoised: clip x̂0 to [−1, 1].
        seed: seed of the per-sample noise.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        noise_schedule: str = "cosine",
        diffusion_steps: int = 1000,
        perturb_t: int = 605,
        num_draws: int = 5,
        distance: str | Distance = "lpips-vgg",
        distance_weights: str | None = None,
        clip_denoised: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(
            ignore=["denoiser"] + ([] if isinstance(distance, str) else ["distance"])
        )
        self.scorer = MinorityScorer(
            denoiser.requires_grad_(False).eval(),
            build_diffusion(noise_schedule, diffusion_steps),
            perturb_t,
            num_draws,
            distance,
            distance_weights,
            clip_denoised,
        )
        self.seed = seed

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> tuple[Tensor, Tensor]:
        """(x0 (B, …) in [−1, 1], index int64 (B,)) → (index (B,), score float32 (B,)) on CPU."""
        x0, index = batch[0], batch[1]
        noise = SeededNoise(self.seed, index.tolist(), device=x0.device)
        return index.cpu(), self.scorer(x0, noise).cpu()

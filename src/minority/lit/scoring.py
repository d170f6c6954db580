"""LightningModule computing minority scores of a data set with ``Trainer.predict``.

Batches are ``(x0, {"index": i, …})`` — the items of :mod:`minority.lit.data` (real images
streamed from disk, or :class:`~minority.lit.data.IndexedTensors` for in-memory data). Sample
i's draws come from its own generator keyed by (seed, i), so the scores do not depend on the
batch size, the number of devices or the order of the batches. :class:`ScoreShardWriter` writes
each finished batch of contiguous indices as a shard (the layout of sampling's shards, so a
killed run resumes with :func:`~minority.lit.sampling.pending_ranges` and merges with
:func:`~minority.outputs.merge_shards`);
:func:`~minority.scores.minority_score.scores_by_index` assembles (index, score) pairs held in
memory instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from minority.diffusion.gaussian import build_diffusion
from minority.errors import require
from minority.lit.data import IndexedTensors
from minority.lit.sampling import ShardWriter
from minority.models.denoiser import Denoiser
from minority.outputs import write_shard
from minority.scores.distances import Distance
from minority.scores.minority_score import MinorityScorer
from minority.seeding import SeededNoise


def indexed_dataset(x: Tensor) -> IndexedTensors:
    """Items (x_i, {"index": i}) of an in-memory data set x (N, …)."""
    return IndexedTensors(x)


class MinorityScoreModule(pl.LightningModule):
    """``predict_step((x0, {"index": i})) -> {"index": i, "scores": ℓ(x0)}``, per-sample seeded.

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

    def predict_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, Tensor]:
        """(x0 (B, …) in [−1, 1], {"index": int64 (B,)}) → index (B,) and scores float32 (B,),
        on the CPU."""
        x0, index = batch[0], batch[1]["index"]
        noise = SeededNoise(self.seed, index.tolist(), device=x0.device)
        return {"index": index.cpu(), "scores": self.scorer(x0, noise).float().cpu()}


class ScoreShardWriter(ShardWriter):
    """Write each finished batch (contiguous indices [start, end)) as
    ``shard_<start>_<end>.npz``: ``arr_0`` the scores, ``indices``, and ``arr_1`` −1 (no labels).
    """

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        index = prediction["index"]
        start, end = int(index[0]), int(index[-1]) + 1
        require(
            torch.equal(index, torch.arange(start, end)),
            "Score shards need batches of contiguous indices.",
        )
        scores = prediction["scores"].numpy()
        write_shard(self.folder, start, end, scores, np.full(len(scores), -1, dtype=np.int64))

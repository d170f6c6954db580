"""Sampling as a Lightning predict loop: each rank draws its own batches of global indices.

Batches are fixed ranges [start, end) of the global sample indices 0..N−1, so with per-sample
seeds a sample's value depends only on (seed, index). Rank r of W takes batches r, r+W, …; the
indices whose shard is already on disk are skipped, which makes a relaunched run resume (the
task reuses shards only for the same configuration, :mod:`minority.tasks.provenance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader

from minority.diffusion.gaussian import GaussianDiffusion
from minority.errors import UserError
from minority.guidance.base import Guide
from minority.models.denoiser import Denoiser
from minority.outputs import completed_ranges, from_uint8_nhwc, to_storage, write_shard
from minority.sampling.base import Sampler
from minority.sampling.ddpm import DDPM
from minority.sampling.init import Initialisation
from minority.sampling.loop import NonFiniteSamples, check_finite, sample
from minority.seeding import SeededNoise, stream_generator


def batch_ranges(num_samples: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of ``batch_size`` covering 0..num_samples−1."""
    return [(s, min(s + batch_size, num_samples)) for s in range(0, num_samples, batch_size)]


def only_item(batch: list[tuple[int, int]]) -> tuple[int, int]:
    """The single range of a one-range batch."""
    return batch[0]


class SamplingModule(pl.LightningModule):
    """Draw samples for batches of global indices.

    Args:
        denoiser, diffusion: the model and its respaced diffusion.
        sample_shape: shape of one sample, e.g. (2,) or (3, 64, 64).
        seed: the run's seed (with the index, it fixes every draw of a sample).
        sampler: the step rule (:mod:`minority.sampling`); None = DDPM with x̂0 clipped.
        guide: guidance term and schedule, or None.
        init: initialisation policy (Boost-and-Skip).
        num_classes: for class-conditional models, labels are drawn per sample from stream
            (seed, index, ``class_label``) (uniform over the classes, as the official scripts
            do); 0 = unconditional.
        labels: int64 (N,) labels by global index, used instead of drawn ones (upsampling keeps
            the labels of the low-resolution samples).
        low_res: uint8 (N, h, w, C) images by global index for a super-resolution denoiser;
            sample i is conditioned on image i (scaled to [−1, 1], NCHW).
        ranges: the [start, end) batches still to draw.
        progress: show a progress bar per batch.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        diffusion: GaussianDiffusion,
        sample_shape: Sequence[int],
        seed: int,
        ranges: Sequence[tuple[int, int]],
        sampler: Sampler | None = None,
        guide: Guide | None = None,
        init: Initialisation | None = None,
        num_classes: int = 0,
        labels: Tensor | None = None,
        low_res: np.ndarray | None = None,
        progress: bool = False,
    ):
        super().__init__()
        self.denoiser, self.diffusion = denoiser.eval().requires_grad_(False), diffusion
        self.sample_shape, self.seed, self.ranges = tuple(sample_shape), seed, list(ranges)
        self.sampler = sampler or DDPM()
        self.guide, self.init, self.num_classes, self.progress = guide, init, num_classes, progress
        self.labels, self.low_res = labels, low_res

    def predict_dataloader(self) -> DataLoader:
        """This rank's share of the batches: ranges r, r+W, r+2W, …"""
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # One range per batch through a batch sampler, so Lightning can track batch indices.
        return DataLoader(self.ranges[rank::world], batch_size=1, collate_fn=only_item)

    def class_labels(self, indices: Sequence[int]) -> Tensor | None:
        """Per-sample random labels drawn from stream (seed, index, ``class_label``) (None if
        unconditional), or the given ``labels`` of these indices."""
        if self.labels is not None:
            return self.labels[list(indices)].to(self.device)
        if not self.num_classes:
            return None
        generators = [stream_generator(self.seed, i, "class_label") for i in indices]
        labels = [int(torch.randint(self.num_classes, (1,), generator=g)) for g in generators]
        return torch.tensor(labels, device=self.device)

    def batch_denoiser(self, start: int, end: int) -> Denoiser:
        """The denoiser of samples [start, end): bound to their low-res images when given."""
        if self.low_res is None:
            return self.denoiser
        return self.denoiser.with_low_res(from_uint8_nhwc(self.low_res[start:end]).to(self.device))

    def settings(self) -> str:
        """The settings that can drive samples to NaN / ±inf, as their config keys."""
        named = self.sampler.settings()
        if self.guide is not None:
            named["guidance.scale"] = self.guide.schedule.scale
            if hasattr(self.guide.term, "clip_denoised"):
                named["guidance.clip_denoised"] = self.guide.term.clip_denoised
        if self.init is not None:
            named["init.gamma"], named["init.skip"] = self.init.gamma, self.init.skip
        return ", ".join(f"{key}={value}" for key, value in named.items())

    def predict_step(self, batch: tuple[int, int], batch_idx: int) -> dict[str, Any]:
        start, end = int(batch[0]), int(batch[1])
        try:
            return self.draw(start, end)
        except NonFiniteSamples as error:
            raise NonFiniteSamples(
                f"Samples {start}..{end - 1}: {error} with {self.settings()}, so no shard was "
                "written for them; change one of these settings (a smaller guidance.scale or "
                "init.gamma, sampler.eta in [0, 1])."
            ) from None

    def draw(self, start: int, end: int) -> dict[str, Any]:
        """Samples [start, end) with their labels (−1 for unconditional models)."""
        indices = range(start, end)
        y = self.class_labels(indices)
        with torch.inference_mode(False), torch.enable_grad():
            x = sample(
                self.batch_denoiser(start, end),
                self.diffusion,
                (len(indices), *self.sample_shape),
                SeededNoise(self.seed, indices, self.device),
                self.sampler,
                self.guide,
                self.init,
                y,
                self.progress,
            )
        labels = y if y is not None else torch.full((len(indices),), -1)
        return {"start": start, "end": end, "samples": x, "labels": labels}


class ShardWriter(BasePredictionWriter):
    """Write each finished batch as ``shard_<start>_<end>.npz`` in ``folder`` (atomically);
    a batch holding NaN or ±inf is never written (uint8 storage would turn NaN into black)."""

    def __init__(self, folder: str | Path):
        super().__init__(write_interval="batch")
        self.folder = Path(folder)

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        """Write the batch's shard, then stop if the process was sent SIGTERM (a cluster's
        pre-emption, ``kill``): Lightning notes the signal but its predict loop, unlike the fit
        loop, would carry on to the end."""
        super().on_predict_batch_end(trainer, *args, **kwargs)
        if trainer.received_sigterm:
            raise UserError(
                f"Stopped by SIGTERM; the finished shards are in {self.folder}. Rerun the same "
                "command to complete the missing ones."
            )

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        start, end = prediction["start"], prediction["end"]
        try:
            check_finite(prediction["samples"], f"in the batch of samples {start}..{end - 1}")
        except NonFiniteSamples as error:
            raise NonFiniteSamples(f"{error}, so its shard was not written.") from None
        write_shard(
            self.folder,
            prediction["start"],
            prediction["end"],
            to_storage(prediction["samples"]),
            prediction["labels"].cpu().numpy(),
        )


def pending_ranges(folder: Path, num_samples: int, batch_size: int) -> list[tuple[int, int]]:
    """Batches of at most ``batch_size`` covering the indices that no shard on disk holds yet
    (shards of an earlier launch with another batch size are kept: samples do not depend on it).
    """
    pending, start = [], 0
    for begin, end in [*sorted(completed_ranges(folder)), (num_samples, num_samples)]:
        if begin > start:
            pending += [(start + a, start + b) for a, b in batch_ranges(begin - start, batch_size)]
        start = max(start, end)
    return pending

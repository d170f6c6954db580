"""Sample previews while the denoiser trains: a picture every N steps, saved and logged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from minority.diffusion.build import build_diffusion_for
from minority.outputs import save_picture, to_storage
from minority.sampling.loop import sample
from minority.seeding import SeededNoise


class SamplePreview(pl.Callback):
    """Every ``every`` training steps, draw ``count`` samples with the current (not averaged)
    weights by deterministic DDIM in ``steps`` steps from fixed seeds, save them as
    ``<folder>/step_<k>.png`` and log the picture to W&B as ``train/samples``.

    Args:
        every: steps between previews (0: never).
        count: samples per preview.
        steps: DDIM steps of a preview.
        folder: where the pictures go.
        sample_shape: one sample's shape, e.g. (2,) or (1, 8, 8).
        mixture: the toy2d mixture, drawn under 2-D points; None otherwise.
    """

    def __init__(
        self,
        every: int,
        count: int,
        steps: int,
        folder: Path,
        sample_shape: Sequence[int],
        mixture: Any = None,
    ):
        self.every, self.count, self.steps = every, count, steps
        self.folder, self.sample_shape, self.mixture = Path(folder), tuple(sample_shape), mixture

    @torch.no_grad()
    def draw(self, pl_module: pl.LightningModule) -> torch.Tensor:
        """``count`` samples of the module's denoiser, (count, *sample_shape)."""
        hp = pl_module.hparams
        diffusion = build_diffusion_for(hp.model_cfg, hp.diffusion_cfg, self.steps)
        noise = SeededNoise(0, range(self.count), pl_module.device)
        denoiser = pl_module.denoiser
        was_training = denoiser.training
        denoiser.eval()
        x = sample(denoiser, diffusion, (self.count, *self.sample_shape), noise, "ddim")
        denoiser.train(was_training)
        return x

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every or step % self.every or trainer.global_rank:
            return
        samples = to_storage(self.draw(pl_module))
        name = "scatter" if samples.ndim == 2 else "grid"
        picture = save_picture(
            samples,
            self.folder / f"step_{step:07d}_{name}.png",
            self.mixture,
            title=f"training samples at step {step} (DDIM, {self.steps} steps)",
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("train/samples", [str(picture)], step=step)

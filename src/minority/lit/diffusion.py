"""LightningModule training an ε-prediction denoiser (with the hybrid loss when Σ is learned)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor

from minority.diffusion.build import build_diffusion_for
from minority.diffusion.losses import training_losses
from minority.lit.build import build_denoiser


class DiffusionModule(pl.LightningModule):
    """Train ``model_cfg``'s denoiser on x0 batches with t ~ Uniform{0..T−1}.

    Args:
        model_cfg: the ``model`` config node (plain dict).
        diffusion_cfg: ``noise_schedule`` and ``diffusion_steps`` (plain dict).
        lr: Adam learning rate, decayed to 0 along a cosine over ``max_steps``.
        max_steps: the training length (for the learning-rate schedule).
        allowed_targets: module prefixes the backbone's ``_target_`` may name besides
            ``minority`` (the config's ``allowed_targets``).
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        diffusion_cfg: Mapping[str, Any],
        lr: float = 2e-3,
        max_steps: int = 6000,
        allowed_targets: Sequence[str] = (),
    ):
        super().__init__()
        self.save_hyperparameters()
        allowed = OmegaConf.create({"allowed_targets": list(allowed_targets)})
        self.denoiser = build_denoiser(model_cfg, allowed)
        self.diffusion = build_diffusion_for(model_cfg, diffusion_cfg)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x0 = batch[0]
        k = torch.randint(0, self.diffusion.num_timesteps, (x0.shape[0],), device=x0.device)
        losses = training_losses(self.denoiser, self.diffusion, x0, k, torch.randn_like(x0))
        for name, value in losses.items():
            self.log(f"train/{name}", value.mean(), prog_bar=name == "loss")
        return losses["loss"].mean()

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.denoiser.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.hparams.max_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

"""LightningModule training the noise-conditional minority classifier p_ψ(l | x_t, t).

Batches are (x0, label) pairs — e.g. plain DataLoaders over ``TensorDataset(x, labels)`` with the
labels of :func:`minority.scores.labels.minority_labels`. Each step draws t ~ Uniform{0..T−1} on
the **full** T-step schedule (no respacing) and ε ~ N(0, I), forms x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε
and minimises plain cross-entropy, as the official classifier training. AdamW with a linear decay
of the learning rate to 0 over ``max_steps``.

Logged: ``{train,val}/loss``, ``/acc1``, ``/acc5`` (top-min(5, L)), and on validation the same
per quarter of t — ``val/loss_q0`` for t in [0, T/4), …, ``val/loss_q3`` for [3T/4, T).
Validation draws its t and ε from stream (val_seed, batch index, ``validation``), so validation
numbers are comparable across epochs. The hyper-parameters (L, sample shape, schedule,
architecture) are saved with the checkpoint;
:func:`~minority.guidance.classifier.load_minority_classifier` checks them against the sampling
run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from minority.diffusion.gaussian import build_diffusion
from minority.models.classifiers import build_classifier
from minority.seeding import stream_generator

METRICS = ("loss", "acc1", "acc5")
QUARTERS = 4


class MinorityClassifierModule(pl.LightningModule):
    """Train a minority classifier on noisy samples (module docstring).

    Args:
        num_classes: L, the number of minority-score classes.
        sample_shape: shape of one sample, (D,) or (C, H, W).
        arch: classifier architecture for :func:`~minority.models.classifiers.build_classifier`
            ("mlp", "conv", "adm", "adm_cascade").
        arch_kwargs: the architecture's own arguments.
        noise_schedule, diffusion_steps: the denoiser's schedule (T).
        lr: AdamW learning rate at step 0.
        weight_decay: AdamW weight decay.
        max_steps: steps over which the learning rate decays linearly to 0.
        random_flip: flip images horizontally with probability 1/2 (images only).
        val_seed: seed of the validation draws.
    """

    def __init__(
        self,
        num_classes: int,
        sample_shape: Sequence[int],
        arch: str = "mlp",
        arch_kwargs: Mapping[str, Any] | None = None,
        noise_schedule: str = "cosine",
        diffusion_steps: int = 1000,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        max_steps: int = 60000,
        random_flip: bool = False,
        val_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.sample_shape = [int(s) for s in sample_shape]
        self.hparams.arch_kwargs = dict(arch_kwargs or {})
        self.classifier = build_classifier(
            arch, num_classes, sample_shape, **self.hparams.arch_kwargs
        )
        self.diffusion = build_diffusion(noise_schedule, diffusion_steps)
        self.quarter_metrics = nn.ModuleDict(
            {f"val_{name}_q{q}": MeanMetric() for name in METRICS for q in range(QUARTERS)}
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits (B, L) of x_t (B, …) at original timesteps t, int64 (B,)."""
        return self.classifier(x, t)

    def _noisy_loss(
        self, x0: Tensor, labels: Tensor, t: Tensor, eps: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-sample cross-entropy (B,) and logits (B, L) at x_t = q_sample(x0, t, ε)."""
        logits = self.classifier(self.diffusion.q_sample(x0, t, eps), t)
        return F.cross_entropy(logits, labels, reduction="none"), logits

    def _log_metrics(
        self, split: str, loss: Tensor, logits: Tensor, labels: Tensor, t: Tensor
    ) -> None:
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        values = {
            "loss": loss.detach(),
            "acc1": (top[:, 0] == labels).float(),
            "acc5": (top == labels[:, None]).any(dim=-1).float(),
        }
        train = split == "train"
        quarter = t * QUARTERS // self.diffusion.num_timesteps
        for name, value in values.items():
            self.log(
                f"{split}/{name}",
                value.mean(),
                on_step=train,
                on_epoch=True,
                prog_bar=name != "acc5",
                batch_size=len(value),
                sync_dist=not train,
            )
            if train:
                continue
            for q in range(QUARTERS):
                metric = self.quarter_metrics[f"val_{name}_q{q}"]
                metric.update(value, (quarter == q).float())
                self.log(f"{split}/{name}_q{q}", metric, on_step=False, on_epoch=True)

    def _flip(self, x0: Tensor) -> Tensor:
        flip = torch.rand(x0.shape[0], device=x0.device) < 0.5
        return torch.where(flip.reshape(-1, 1, 1, 1), x0.flip(-1), x0)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x0, labels = batch[0], batch[1]
        if self.hparams.random_flip and x0.ndim == 4:
            x0 = self._flip(x0)
        t = torch.randint(0, self.diffusion.num_timesteps, (x0.shape[0],), device=x0.device)
        loss, logits = self._noisy_loss(x0, labels, t, torch.randn_like(x0))
        self._log_metrics("train", loss, logits, labels, t)
        return loss.mean()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x0, labels = batch[0], batch[1]
        generator = stream_generator(self.hparams.val_seed, batch_idx, "validation", x0.device)
        t = torch.randint(
            0,
            self.diffusion.num_timesteps,
            (x0.shape[0],),
            device=x0.device,
            generator=generator,
        )
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        loss, logits = self._noisy_loss(x0, labels, t, eps)
        self._log_metrics("val", loss, logits, labels, t)

    def configure_optimizers(self) -> dict[str, Any]:
        trainable = [p for p in self.classifier.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        max_steps = max(int(self.hparams.max_steps), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - step / max_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

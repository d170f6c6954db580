"""train.py task=diffusion: fit the denoiser on the dataset, save the EMA weights."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, WeightAveraging
from torch import Tensor

from minority.data import build_dataset
from minority.lit.diffusion import DiffusionModule
from minority.lit.previews import SamplePreview
from minority.models.build import save_checkpoint
from minority.tasks.common import close_logger, log, make_trainer, plain, run_dir, tensor_loader
from minority.tasks.provenance import (
    RecordProvenance,
    denoiser_provenance,
    resume_checkpoint,
    up_to_date,
)
from minority.tasks.tracking import log_stage, stage_artifact


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n)/(10 + n)) over n updates, so a
    short run's average is not dominated by the random initial weights."""

    def update(average: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        rate = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        return rate * average + (1 - rate) * current

    return update


def ema_weights(last_ckpt: Path) -> dict[str, Tensor]:
    """The denoiser's EMA weights from a Lightning checkpoint saved with :class:`WeightAveraging`
    (which stores the averaged model as ``state_dict``)."""
    state = torch.load(last_ckpt, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "denoiser.net."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def preview(cfg: DictConfig, folder: Path, data) -> SamplePreview:
    """Sample pictures every ``train.preview.every`` steps into ``<run>/previews``."""
    p = cfg.train.preview
    return SamplePreview(
        int(p.every),
        int(p.count),
        int(p.steps),
        folder / "previews",
        data.sample_shape,
        data.mixture,
    )


def train_diffusion(cfg: DictConfig) -> Path:
    """Train, resuming from ``last.ckpt`` (or ``ckpt_path``) when it was saved with the same
    settings; a denoiser already trained with these settings is left as it is.

    Returns:
        The denoiser checkpoint (``paths.diffusion_ckpt``).
    """
    out = Path(cfg.paths.diffusion_ckpt)
    provenance = denoiser_provenance(cfg)
    if up_to_date(out, provenance, "denoiser"):
        return out
    folder = Path(cfg.run_dir)
    resume = resume_checkpoint(cfg, folder, provenance)
    run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    data = build_dataset(plain(cfg.dataset))
    loader = tensor_loader(data.x, batch_size=int(cfg.train.batch_size), shuffle=True)
    module = DiffusionModule(
        plain(cfg.model), plain(cfg.diffusion), float(cfg.train.lr), int(cfg.trainer.max_steps)
    )
    checkpoints = ModelCheckpoint(
        dirpath=folder / "checkpoints", save_last=True, every_n_train_steps=500
    )
    trainer = make_trainer(
        cfg,
        folder,
        "diffusion",
        resume_step=resume.step if resume else None,
        max_epochs=-1,
        epoch_length=len(loader),
        callbacks=[
            WeightAveraging(avg_fn=ema_with_warmup(float(cfg.train.ema_decay))),
            checkpoints,
            RecordProvenance(provenance),
            LearningRateMonitor(logging_interval="step"),
            preview(cfg, folder, data),
        ],
    )
    trainer.fit(module, loader, ckpt_path=resume.path if resume else None)
    last = folder / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last)
    if trainer.global_rank == 0:
        module.denoiser.net.load_state_dict(ema_weights(last))
        meta = {
            "model": plain(cfg.model),
            "diffusion": plain(cfg.diffusion),
            "dataset": cfg.dataset.name,
            "sample_shape": list(data.sample_shape),
            "provenance": provenance,
        }
        save_checkpoint(out, module.denoiser, meta)
        log.info("denoiser saved to %s (fingerprint %s)", out, provenance["fingerprint"])
    trainer.strategy.barrier()
    log_stage(trainer.loggers, [], [stage_artifact(cfg, "denoiser")])
    close_logger(trainer)
    return out

"""train.py task=diffusion: fit the denoiser on the dataset, save the EMA weights."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, WeightAveraging
from torch import Tensor

from minority.data import build_dataset
from minority.lit.diffusion import DiffusionModule
from minority.lit.previews import SamplePreview
from minority.models.build import save_checkpoint
from minority.tasks.common import (
    close_logger,
    log,
    log_interval,
    make_trainer,
    plain,
    run_dir,
    tensor_loader,
)
from minority.tasks.tracking import log_stage, stage_artifact


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n)/(10 + n)) over n updates, so a
    short run's average is not dominated by the random initial weights."""

    def update(average: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        rate = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        return rate * average + (1 - rate) * current

    return update


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
    """Train, resuming from ``last.ckpt`` in the run folder if a previous run was cut short.

    Returns:
        The denoiser checkpoint (``paths.diffusion_ckpt``).
    """
    folder = run_dir(cfg)
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
        max_epochs=-1,
        log_every_n_steps=log_interval(cfg, loader),
        callbacks=[
            WeightAveraging(avg_fn=ema_with_warmup(float(cfg.train.ema_decay))),
            checkpoints,
            LearningRateMonitor(logging_interval="step"),
            preview(cfg, folder, data),
        ],
    )
    last = folder / "checkpoints" / "last.ckpt"
    trainer.fit(module, loader, ckpt_path=str(last) if last.is_file() else None)
    meta = {
        "model": plain(cfg.model),
        "diffusion": plain(cfg.diffusion),
        "dataset": cfg.dataset.name,
        "sample_shape": list(data.sample_shape),
    }
    path = save_checkpoint(cfg.paths.diffusion_ckpt, module.denoiser, meta)
    log.info("denoiser saved to %s", path)
    log_stage(trainer.loggers, [], [stage_artifact(cfg, "denoiser")])
    close_logger(trainer)
    return path

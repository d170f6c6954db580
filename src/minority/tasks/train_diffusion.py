"""train.py task=diffusion: fit the denoiser on the dataset, save the EMA weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint, WeightAveraging
from torch import Tensor

from minority.data import build_dataset
from minority.data.images import build_image_dataset
from minority.lit.data import RealDataModule
from minority.lit.diffusion import DiffusionModule
from minority.models.build import save_checkpoint
from minority.tasks.common import close_logger, log, make_trainer, plain, run_dir, tensor_loader


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n)/(10 + n)) over n updates, so a
    short run's average is not dominated by the random initial weights."""

    def update(average: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        rate = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        return rate * average + (1 - rate) * current

    return update


def training_data(cfg: DictConfig) -> tuple[Any, tuple[int, ...], dict[str, Any]]:
    """The training batches, the shape of one sample and the Trainer options they need.

    Image formats stream from disk through a :class:`RealDataModule` (``dataset.num_workers``
    decoding processes); embedded data are batched from memory.
    """
    dataset_cfg, batch_size = plain(cfg.dataset), int(cfg.train.batch_size)
    if dataset_cfg.get("format"):
        dataset = build_image_dataset(dataset_cfg)
        workers = int(dataset_cfg.get("num_workers", 0))
        data = RealDataModule(batch_size, workers, train=dataset, seed=int(cfg.seed))
        return data, tuple(dataset[0][0].shape), {"use_distributed_sampler": False}
    real = build_dataset(dataset_cfg)
    return tensor_loader(real.x, batch_size=batch_size, shuffle=True), real.sample_shape, {}


def train_diffusion(cfg: DictConfig) -> Path:
    """Train, resuming from ``last.ckpt`` in the run folder if a previous run was cut short.

    Returns:
        The denoiser checkpoint (``paths.diffusion_ckpt``).
    """
    folder = run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    data, sample_shape, streaming = training_data(cfg)
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
        **streaming,
        callbacks=[
            WeightAveraging(avg_fn=ema_with_warmup(float(cfg.train.ema_decay))),
            checkpoints,
        ],
    )
    last = folder / "checkpoints" / "last.ckpt"
    trainer.fit(module, data, ckpt_path=str(last) if last.is_file() else None)
    meta = {
        "model": plain(cfg.model),
        "diffusion": plain(cfg.diffusion),
        "dataset": cfg.dataset.name,
        "sample_shape": list(sample_shape),
    }
    path = save_checkpoint(cfg.paths.diffusion_ckpt, module.denoiser, meta)
    log.info("denoiser saved to %s", path)
    close_logger(trainer)
    return path

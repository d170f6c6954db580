"""train.py task=diffusion: fit the denoiser on the dataset, save the EMA weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, WeightAveraging
from torch import Tensor

from minority.data.images import build_image_dataset
from minority.lit.build import build_dataset
from minority.lit.data import RealDataModule
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


def preview(cfg: DictConfig, folder: Path, data: TrainingData) -> SamplePreview:
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


class TrainingData(NamedTuple):
    """The training batches and what the Trainer and the previews need to know of them.

    Attributes:
        batches: a DataLoader (embedded data) or a :class:`RealDataModule` (image formats).
        sample_shape: one sample's shape, e.g. (2,) or (3, 64, 64).
        mixture: the toy2d mixture (drawn under preview scatters), else None.
        epoch_length: batches per epoch when known before fitting, else None.
        trainer_options: extra Trainer arguments the batches need.
    """

    batches: Any
    sample_shape: tuple[int, ...]
    mixture: Any
    epoch_length: int | None
    trainer_options: dict[str, Any]


def training_data(cfg: DictConfig) -> TrainingData:
    """The training batches of ``cfg.dataset``.

    Image formats stream from disk through a :class:`RealDataModule` (``dataset.num_workers``
    decoding processes); embedded data are batched from memory.
    """
    dataset_cfg, batch_size = plain(cfg.dataset), int(cfg.train.batch_size)
    if dataset_cfg.get("format"):
        dataset = build_image_dataset(dataset_cfg)
        workers = int(dataset_cfg["num_workers"])
        data = RealDataModule(batch_size, workers, train=dataset, seed=int(cfg.seed))
        shape = tuple(dataset[0][0].shape)
        return TrainingData(data, shape, None, None, {"use_distributed_sampler": False})
    real = build_dataset(dataset_cfg, cfg)
    loader = tensor_loader(real.x, batch_size=batch_size, shuffle=True)
    return TrainingData(loader, real.sample_shape, real.mixture, len(loader), {})


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
    data = training_data(cfg)
    module = DiffusionModule(
        plain(cfg.model),
        plain(cfg.diffusion),
        float(cfg.train.lr),
        int(cfg.trainer.max_steps),
        list(cfg.allowed_targets),
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
        epoch_length=data.epoch_length,
        **data.trainer_options,
        callbacks=[
            WeightAveraging(avg_fn=ema_with_warmup(float(cfg.train.ema_decay))),
            checkpoints,
            RecordProvenance(provenance),
            LearningRateMonitor(logging_interval="step"),
            preview(cfg, folder, data),
        ],
    )
    trainer.fit(module, data.batches, ckpt_path=resume.path if resume else None)
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

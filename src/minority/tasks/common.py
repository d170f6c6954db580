"""What every task shares: plain config containers, the Trainer and its logger, the run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from minority.errors import require
from minority.models.diffusers_unet import DIFFUSERS_ARCH, read_diffusers_folder

log = logging.getLogger("minority")


def plain(node: Any) -> Any:
    """A config node as plain dicts and lists (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def run_dir(cfg: DictConfig) -> Path:
    """The stage's run folder (created), where its config and results go."""
    folder = Path(cfg.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    return folder


def adopt_diffusers_folder(cfg: DictConfig, folder: str | Path) -> None:
    """Fill in a diffusers model's config from its folder (no-op unless model=diffusers_unet2d).

    The folder decides what a config cannot: ``model.flags`` gets the UNet's image size,
    channels, classes and learned-Σ flag; ``diffusion`` becomes its scheduler's schedule and
    variance; ``sampler.clip_denoised`` (when sampling) its ``clip_sample``.
    """
    if cfg.model.get("arch") != DIFFUSERS_ARCH:
        return
    model = read_diffusers_folder(folder)
    with open_dict(cfg):
        cfg.model.flags = model.model_flags()
        cfg.diffusion = model.diffusion()
        if "sampler" in cfg:
            cfg.sampler.clip_denoised = model.clip_denoised
    log.info(
        "diffusers model %s: %s, diffusion %s, clip x0: %s",
        folder,
        plain(cfg.model.flags),
        plain(cfg.diffusion),
        model.clip_denoised,
    )


def make_logger(cfg: DictConfig, folder: Path, name: str) -> Any:
    """CSV logger by default; ``logger=wandb`` logs the composed config to W&B (offline-ready)."""
    if cfg.logger.name == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            save_dir=str(folder),
            name=name,
            tags=list(cfg.logger.tags),
        )
        logger.log_hyperparams(plain(cfg))
        return logger
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=str(folder), name="logs", version="")


def make_trainer(cfg: DictConfig, folder: Path, name: str, **overrides: Any) -> pl.Trainer:
    """A Trainer from the ``trainer`` node, logging into ``folder``."""
    kwargs = {**plain(cfg.trainer), **overrides}
    require(int(kwargs.get("max_steps", 1)) > 0, "trainer.max_steps must be positive.")
    return pl.Trainer(
        default_root_dir=str(folder),
        logger=make_logger(cfg, folder, name),
        enable_model_summary=False,
        **kwargs,
    )


def tensor_loader(*tensors: Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """Batches of in-memory tensors, gathered by one index per batch (not item by item).

    Shuffled loaders drop the last partial batch; the batch size is capped at the data size.
    """
    dataset = TensorDataset(*tensors)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    sampler = BatchSampler(order, min(batch_size, len(dataset)), drop_last=shuffle)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def is_wandb(logger: Any) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def log_results(logger: Any, values: dict[str, Any], picture: Path) -> None:
    """Send a run's metrics, its picture and a one-row metrics table to W&B (no-op otherwise)."""
    if not is_wandb(logger):
        return
    if values:
        logger.log_metrics({f"metrics/{k}": v for k, v in values.items()})
        logger.log_table(key="metrics_table", columns=list(values), data=[list(values.values())])
    logger.log_image(key="samples", images=[str(picture)])


def close_logger(trainer: pl.Trainer | None) -> None:
    """Finish the W&B run, so the next job of a multirun starts its own."""
    if trainer is not None and is_wandb(trainer.logger) and trainer.global_rank == 0:
        trainer.logger.experiment.finish()

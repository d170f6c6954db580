"""What every task shares: plain config containers, the Trainer and its logger, the run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from minority.errors import require
from minority.lit.progress import StepProgressBar, progress_callback

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


def csv_logger(cfg: DictConfig, folder: Path, job_type: str) -> Any:
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=str(folder), name="logs", version="")


def tensorboard_logger(cfg: DictConfig, folder: Path, job_type: str) -> Any:
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(folder), name="tensorboard", version="")


def wandb_logger(cfg: DictConfig, folder: Path, job_type: str) -> Any:
    from minority.tasks.tracking import make_wandb_logger

    return make_wandb_logger(cfg, folder, job_type)


LOGGERS = {"csv": csv_logger, "tensorboard": tensorboard_logger, "wandb": wandb_logger}


def make_logger(cfg: DictConfig, folder: Path, job_type: str) -> Any:
    """The ``logger`` node's logger: ``csv`` (default), ``wandb``, ``tensorboard``, or the
    list named by ``logger.loggers`` (``logger=many``: CSV and W&B)."""
    kinds = list(cfg.logger.get("loggers") or [cfg.logger.name])
    unknown = sorted(set(kinds) - set(LOGGERS))
    require(not unknown, f"Unknown logger {unknown}; choose from {sorted(LOGGERS)}.")
    loggers = [LOGGERS[kind](cfg, folder, job_type) for kind in kinds]
    return loggers if len(loggers) > 1 else loggers[0]


def make_trainer(cfg: DictConfig, folder: Path, name: str, **overrides: Any) -> pl.Trainer:
    """A Trainer from the ``trainer`` node, logging into ``folder``; progress counts steps
    (a bar in a terminal, log lines otherwise)."""
    kwargs = {**plain(cfg.trainer), **overrides}
    require(int(kwargs.get("max_steps", 1)) > 0, "trainer.max_steps must be positive.")
    progress = progress_callback(bool(kwargs.pop("enable_progress_bar", True)))
    callbacks = [*kwargs.pop("callbacks", []), *([progress] if progress else [])]
    return pl.Trainer(
        default_root_dir=str(folder),
        logger=make_logger(cfg, folder, name),
        enable_model_summary=False,
        enable_progress_bar=isinstance(progress, StepProgressBar),
        callbacks=callbacks,
        **kwargs,
    )


def log_interval(cfg: DictConfig, loader: DataLoader) -> int:
    """``trainer.log_every_n_steps``, capped at one epoch of ``loader`` so short epochs log too."""
    return max(1, min(int(cfg.trainer.log_every_n_steps), len(loader)))


def tensor_loader(*tensors: Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """Batches of in-memory tensors, gathered by one index per batch (not item by item).

    Shuffled loaders drop the last partial batch; the batch size is capped at the data size.
    """
    dataset = TensorDataset(*tensors)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    sampler = BatchSampler(order, min(batch_size, len(dataset)), drop_last=shuffle)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def close_logger(trainer: pl.Trainer | None) -> None:
    """Finish the W&B run, so the next job of a multirun starts its own."""
    from minority.tasks.tracking import wandb_run

    if trainer is not None and trainer.global_rank == 0 and (run := wandb_run(trainer.loggers)):
        run.finish()

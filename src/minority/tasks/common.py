"""What every task shares: plain config containers, the Trainer and its logger, the run folder."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from minority.errors import UserError, require

log = logging.getLogger("minority")


def plain(node: Any) -> Any:
    """A config node as plain dicts and lists (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (or the only process); only rank 0 writes stage files."""
    return rank_zero_only.rank == 0


def run_dir(cfg: DictConfig) -> Path:
    """The stage's run folder (created), where its config (written by rank 0) and results go."""
    folder = Path(cfg.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    return folder


def make_logger(cfg: DictConfig, folder: Path, name: str, resume_step: int | None = None) -> Any:
    """CSV logger by default; ``logger=wandb`` logs the composed config to W&B (offline-ready).

    A run resumed at ``resume_step`` keeps its CSV history before that step and appends to it.
    """
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
    from minority.tasks.csv_log import ResumedCSVLogger

    return ResumedCSVLogger(save_dir=str(folder), name="logs", version="", resume_step=resume_step)


def make_trainer(
    cfg: DictConfig,
    folder: Path,
    name: str,
    resume_step: int | None = None,
    **task_defaults: Any,
) -> pl.Trainer:
    """A Trainer from the ``trainer`` node, logging into ``folder`` (appending to the logs of
    a run resumed at ``resume_step``).

    ``task_defaults`` (e.g. ``max_epochs=-1``) apply unless the ``trainer`` node sets the same
    key: what the user configures wins. A null value leaves Lightning's default.

    Raises:
        UserError: an unknown Trainer option, a non-positive ``max_steps``, or settings
            Lightning rejects (e.g. ``trainer=gpu`` where no GPU is visible).
    """
    given = {k: v for k, v in plain(cfg.trainer).items() if v is not None}
    unknown = sorted(set(given) - set(inspect.signature(pl.Trainer).parameters))
    require(not unknown, f"trainer.{', trainer.'.join(unknown)}: not a Lightning Trainer option.")
    kwargs = {"enable_model_summary": False, **task_defaults, **given}
    require(int(kwargs.get("max_steps", 1)) > 0, "trainer.max_steps must be positive.")
    require(
        kwargs.get("accelerator") not in ("gpu", "cuda") or torch.cuda.is_available(),
        f"trainer.accelerator={kwargs.get('accelerator')} needs a CUDA GPU and none is visible "
        "here; use trainer=cpu (or trainer=ddp_cpu for two CPU processes).",
    )
    try:
        return pl.Trainer(
            default_root_dir=str(folder),
            logger=make_logger(cfg, folder, name, resume_step),
            **kwargs,
        )
    except MisconfigurationException as error:
        raise UserError(f"Lightning rejects the trainer settings: {error}") from None


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

"""What every task shares: plain config containers, the Trainer and its logger, the run folder."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
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
from minority.lit.progress import StepProgressBar, progress_callback
from minority.models.diffusers_unet import DIFFUSERS_ARCH, read_diffusers_folder

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


def csv_logger(cfg: DictConfig, folder: Path, job_type: str, resume_step: int | None) -> Any:
    """CSV logs in ``folder/logs``; a run resumed at ``resume_step`` keeps its history before
    that step and appends to it."""
    from minority.tasks.csv_log import ResumedCSVLogger

    return ResumedCSVLogger(save_dir=str(folder), name="logs", version="", resume_step=resume_step)


def tensorboard_logger(
    cfg: DictConfig, folder: Path, job_type: str, resume_step: int | None
) -> Any:
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(folder), name="tensorboard", version="")


def wandb_logger(cfg: DictConfig, folder: Path, job_type: str, resume_step: int | None) -> Any:
    from minority.tasks.tracking import make_wandb_logger

    return make_wandb_logger(cfg, folder, job_type)


LOGGERS = {"csv": csv_logger, "tensorboard": tensorboard_logger, "wandb": wandb_logger}


def make_logger(
    cfg: DictConfig, folder: Path, job_type: str, resume_step: int | None = None
) -> Any:
    """The ``logger`` node's logger: ``csv`` (default), ``wandb``, ``tensorboard``, or the
    list named by ``logger.loggers`` (``logger=many``: CSV and W&B)."""
    kinds = list(cfg.logger.get("loggers") or [cfg.logger.name])
    unknown = sorted(set(kinds) - set(LOGGERS))
    require(not unknown, f"Unknown logger {unknown}; choose from {sorted(LOGGERS)}.")
    loggers = [LOGGERS[kind](cfg, folder, job_type, resume_step) for kind in kinds]
    return loggers if len(loggers) > 1 else loggers[0]


def make_trainer(
    cfg: DictConfig,
    folder: Path,
    name: str,
    resume_step: int | None = None,
    epoch_length: int | None = None,
    **task_defaults: Any,
) -> pl.Trainer:
    """A Trainer from the ``trainer`` node, logging into ``folder`` (appending to the logs of
    a run resumed at ``resume_step``); progress counts steps (a bar in a terminal, log lines
    otherwise).

    ``task_defaults`` (e.g. ``max_epochs=-1``) apply unless the ``trainer`` node sets the same
    key: what the user configures wins. A null value leaves Lightning's default.
    ``log_every_n_steps`` is capped at ``epoch_length`` (batches per epoch) so short epochs log.

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
    if epoch_length is not None:
        every = int(kwargs.get("log_every_n_steps", 50))
        kwargs["log_every_n_steps"] = max(1, min(every, epoch_length))
    progress = progress_callback(bool(kwargs.pop("enable_progress_bar", True)))
    callbacks = [*kwargs.pop("callbacks", []), *([progress] if progress else [])]
    try:
        return pl.Trainer(
            default_root_dir=str(folder),
            logger=make_logger(cfg, folder, name, resume_step),
            enable_progress_bar=isinstance(progress, StepProgressBar),
            callbacks=callbacks,
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


def close_logger(trainer: pl.Trainer | None) -> None:
    """Finish the W&B run, so the next job of a multirun starts its own."""
    from minority.tasks.tracking import wandb_run

    if trainer is not None and trainer.global_rank == 0 and (run := wandb_run(trainer.loggers)):
        run.finish()

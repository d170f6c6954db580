"""What every task shares: plain config containers, the Trainer and its logger, the run folder."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ProgressBar
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
from minority.instantiate import instantiate
from minority.lit.build import arguments, build_with_context
from minority.models.diffusers_unet import DIFFUSERS_ARCH, read_diffusers_folder
from minority.tasks.tracking import LoggerContext, wandb_run

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


def csv_logger(context: LoggerContext) -> Any:
    """CSV logs in ``<run>/logs``; a run resumed at ``resume_step`` keeps its history before
    that step and appends to it."""
    from minority.tasks.csv_log import ResumedCSVLogger

    return ResumedCSVLogger(
        save_dir=str(context.folder), name="logs", version="", resume_step=context.resume_step
    )


def tensorboard_logger(context: LoggerContext) -> Any:
    """TensorBoard event files in ``<run>/tensorboard``."""
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(context.folder), name="tensorboard", version="")


def make_logger(
    cfg: DictConfig, folder: Path, job_type: str, resume_step: int | None = None
) -> Any:
    """The ``logger`` node's logger, or the list of those under ``logger.loggers``
    (``logger=many``: CSV and W&B). Each node's ``_target_`` is called with its keys but
    ``name``, and with a :class:`LoggerContext` as ``context`` when it takes one."""
    node = plain(cfg.logger)
    nodes = list(node["loggers"].values()) if "loggers" in node else [node]
    context = LoggerContext(cfg, folder, job_type, resume_step)
    loggers = [build_with_context(arguments(n, "logger"), context, cfg) for n in nodes]
    return loggers if len(loggers) > 1 else loggers[0]


def make_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The ``callbacks`` node's callbacks (a map of name to node; a node may build None)."""
    built = [instantiate(node, cfg) for node in plain(cfg.callbacks).values()]
    return [callback for callback in built if callback is not None]


def make_trainer(
    cfg: DictConfig,
    folder: Path,
    name: str,
    resume_step: int | None = None,
    epoch_length: int | None = None,
    **task_defaults: Any,
) -> pl.Trainer:
    """A Trainer from the ``trainer`` node, logging into ``folder`` (appending to the logs of
    a run resumed at ``resume_step``), with the ``callbacks`` node's callbacks after the task's
    (``callbacks=default``: progress that counts steps, a bar in a terminal, log lines
    otherwise; ``trainer.enable_progress_bar=false`` switches it off).

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
    kwargs.pop("enable_progress_bar", None)  # the progress callback reads it
    callbacks = [*kwargs.pop("callbacks", []), *make_callbacks(cfg)]
    try:
        return pl.Trainer(
            default_root_dir=str(folder),
            logger=make_logger(cfg, folder, name, resume_step),
            enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
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
    if trainer is not None and trainer.global_rank == 0 and (run := wandb_run(trainer.loggers)):
        run.finish()

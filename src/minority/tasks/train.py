"""Dispatch of train.py's ``task`` choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from minority.errors import UserError


def _diffusion(cfg: DictConfig) -> Any:
    from minority.tasks.train_diffusion import train_diffusion

    return train_diffusion(cfg)


TASKS: dict[str, Callable[[DictConfig], Any]] = {"diffusion": _diffusion}


def run_training_task(cfg: DictConfig) -> Any:
    """Run the stage named by ``cfg.task``."""
    if cfg.task not in TASKS:
        raise UserError(f"Unknown task '{cfg.task}'; choose one of {sorted(TASKS)}.")
    return TASKS[cfg.task](cfg)

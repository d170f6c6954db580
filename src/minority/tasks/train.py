"""Dispatch of train.py's ``task`` choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from minority.errors import UserError


def _diffusion(cfg: DictConfig) -> Any:
    from minority.tasks.train_diffusion import train_diffusion

    return train_diffusion(cfg)


def _scores(cfg: DictConfig) -> Any:
    from minority.tasks.scores import compute_scores

    return compute_scores(cfg)


def _classifier(cfg: DictConfig) -> Any:
    from minority.tasks.train_classifier import train_classifier

    return train_classifier(cfg)


TASKS: dict[str, Callable[[DictConfig], Any]] = {
    "diffusion": _diffusion,
    "scores": _scores,
    "classifier": _classifier,
}


def run_training_task(cfg: DictConfig) -> Any:
    """Run the stage named by ``cfg.task``."""
    if cfg.task not in TASKS:
        raise UserError(f"Unknown task '{cfg.task}'; choose one of {sorted(TASKS)}.")
    return TASKS[cfg.task](cfg)

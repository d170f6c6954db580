"""Glue shared by the ``@hydra.main`` entry points: one clear sentence instead of a traceback."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from minority.errors import UserError

T = TypeVar("T")


def user_errors_exit(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a task so that a :class:`UserError` prints its message and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper


# Lightning's lines that tell the user nothing they can act on: advertisements, and the device
# census (kept when a GPU is asked for, where it confirms the GPU is used).
ADVERTISEMENTS = ("💡 Tip",)
DEVICE_CENSUS = ("GPU available", "TPU available", "HPU available")
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class DropLines(logging.Filter):
    """Drop log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_console(gpu: bool) -> None:
    """Keep the console to what the user can act on, and send Python warnings through the
    logging setup (so they share its format and reach the run's log file).

    Call it after Hydra has configured logging and before Lightning is imported, so that
    Lightning logs through the same handlers instead of its own.
    """
    drop = DropLines(ADVERTISEMENTS if gpu else ADVERTISEMENTS + DEVICE_CENSUS)
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(drop)
    # Lightning's own pytree helper trips a torch deprecation on every loader; nothing to fix
    # on the user's side.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.captureWarnings(True)


def prepare_run(cfg: Any) -> None:
    """What every entry point does first: a quiet console, the ``weights.download`` switch."""
    from minority.weights import allow_downloads

    quiet_console(asks_for_gpu(cfg))
    allow_downloads(bool(cfg.weights.download))


def asks_for_gpu(cfg: Any) -> bool:
    """Whether the config's trainer runs on an accelerator other than the CPU."""
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    return trainer is not None and str(trainer.get("accelerator", "cpu")) != "cpu"

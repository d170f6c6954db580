"""Glue shared by the ``@hydra.main`` entry points: one clear sentence instead of a traceback."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from minority import schema
from minority.errors import UserError

T = TypeVar("T")

schema.register()


def user_errors_exit(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a task so that the values are checked first (:func:`schema.check_values`) and a
    :class:`UserError` prints its message and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig, *args: Any, **kwargs: Any) -> T:
        try:
            schema.check_values(cfg)
            return fn(cfg, *args, **kwargs)
        except UserError as error:
            _fail(str(error))

    return wrapper


def run(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` entry point; a config that cannot be composed (wrong type,
    unknown option, bad override) prints Hydra's message as one line and exits with status 2.

    With ``HYDRA_FULL_ERROR=1`` set by the user, Hydra's own reporting is kept.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing and exiting 1
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        _fail(one_line(error))


def one_line(error: BaseException) -> str:
    """Hydra's / OmegaConf's multi-line message (and its cause) as one sentence."""
    parts = [_summary(str(error))]
    if error.__cause__ is not None:
        parts.append(_summary(str(error.__cause__)))
    return ": ".join(p.rstrip(".") for p in parts if p) + "."


def _summary(message: str) -> str:
    """First line, the ``full_key`` of a validation error and the options Hydra lists."""
    lines = [line.strip() for line in message.split("Config search path")[0].splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    head, rest = lines[0], lines[1:]
    keys = [line for line in rest if line.startswith("full_key:")]
    if keys:
        head += f" ({keys[0]})"
    if rest and rest[0].startswith("Available options"):
        head += f"; {rest[0][0].lower()}{rest[0][1:]} {', '.join(rest[1:])}"
    return head


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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

"""Glue shared by the ``@hydra.main`` entry points: one clear sentence instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys
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

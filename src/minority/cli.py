"""Glue shared by the ``@hydra.main`` entry points: one clear sentence instead of a traceback."""

from __future__ import annotations

import functools
import sys
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

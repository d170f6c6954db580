"""User-facing errors: raised for bad input, printed as one sentence by the entry points."""

from __future__ import annotations

WORKER_TRACEBACK = "Original Traceback"


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, mismatched checkpoint).

    Entry points print ``str(error)`` alone and exit with status 2, never a traceback. A
    UserError raised in a DataLoader worker comes back re-raised with the worker's traceback
    as its message (PyTorch's ``ExceptionWrapper``); only its own last line is kept.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        if WORKER_TRACEBACK in message:
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message, *args)


class MissingWeightsError(UserError, FileNotFoundError):
    """Pretrained weights that cannot be downloaded here and were not found locally."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)

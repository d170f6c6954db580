"""User-facing errors: raised for bad input, printed as one sentence by the entry points."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, mismatched checkpoint).

    Entry points print ``str(error)`` alone and exit with status 2, never a traceback.
    """


class MissingWeightsError(UserError, FileNotFoundError):
    """Pretrained weights that cannot be downloaded here and were not found locally."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)

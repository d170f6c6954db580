"""Offline lookup of pretrained weight files (LPIPS trunks, Inception, VGG, checkpoints).

Nothing is ever downloaded. A file is looked for, in order, at the explicit path given in the
config, in the folders of ``$MINORITY_WEIGHTS`` (``os.pathsep``-separated), in torch hub's
checkpoint cache (``$TORCH_HOME/hub/checkpoints``) and in any extra folders a caller names
(clean-fid's cache, for example). Absent everywhere: one :class:`MissingWeightsError` naming
the file and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from minority.errors import MissingWeightsError

WEIGHTS_ENV = "MINORITY_WEIGHTS"


def torch_hub_checkpoints() -> Path:
    """Torch hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Folders searched for a weight file, in order of preference."""
    dirs = [Path(p) for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    dirs.append(torch_hub_checkpoints())
    dirs.extend(Path(p) for p in extra_dirs)
    return dirs


def find_weights(
    filename: str,
    path: str | os.PathLike | None = None,
    extra_dirs: Iterable[str | os.PathLike] = (),
    purpose: str = "",
) -> Path:
    """Locate ``filename`` without network access.

    Args:
        filename: the canonical file name, e.g. ``"vgg16-397923af.pth"``.
        path: an explicit file (or folder holding ``filename``) from the config; when given and
            absent, nothing else is searched, so a typo is never silently replaced.
        extra_dirs: further folders to search after the standard ones.
        purpose: what the file is for, used in the error message.

    Returns:
        The path of an existing file.

    Raises:
        MissingWeightsError: the file is nowhere to be found.
    """
    what = f" ({purpose})" if purpose else ""
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / filename
        if candidate.is_file():
            return candidate
        raise MissingWeightsError(f"Weight file {candidate}{what} does not exist.")
    dirs = search_dirs(extra_dirs)
    for folder in dirs:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(
        f"Weight file '{filename}'{what} was not found and cannot be downloaded here; "
        f"put it in {torch_hub_checkpoints()} "
        f"(or a folder listed in ${WEIGHTS_ENV}), or give its path in the config."
    )

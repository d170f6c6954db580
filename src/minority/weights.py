"""Lookup of pretrained weight files (LPIPS trunks, Inception, VGG, checkpoints).

A file is looked for, in order, at the explicit path given in the config, in the folders of
``$MINORITY_WEIGHTS`` (``os.pathsep``-separated), in torch hub's checkpoint cache
(``$TORCH_HOME/hub/checkpoints``) and in any extra folders a caller names (clean-fid's cache,
for example). A file found nowhere that has an official URL with a published hash
(:data:`OFFICIAL`) is downloaded into torch hub's cache and checked, unless downloads are off
(``weights.download=false``, or ``MINORITY_OFFLINE=1``) or the network is unreachable. Else:
one :class:`MissingWeightsError` naming the file and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from minority.errors import MissingWeightsError

WEIGHTS_ENV = "MINORITY_WEIGHTS"
OFFLINE_ENV = "MINORITY_OFFLINE"
TORCHVISION = "https://download.pytorch.org/models/"
HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torchvision: name-<sha256 prefix>.pth

log = logging.getLogger("minority")


@dataclass(frozen=True)
class WeightSource:
    """Where a weight file is published, and its hash: ``sha256`` in full, or None for
    torchvision's convention (the file name carries a prefix of its sha256)."""

    url: str
    sha256: str | None = None

    def expected(self, filename: str) -> str:
        if self.sha256:
            return self.sha256
        match = HASH_PREFIX.search(filename)
        if match is None:
            raise ValueError(f"{filename} has neither a published sha256 nor a hash in its name.")
        return match[1]


# Weight files downloaded when missing: each with its official URL and published hash.
OFFICIAL: dict[str, WeightSource] = {
    name: WeightSource(TORCHVISION + name)
    for name in (
        "vgg16-397923af.pth",
        "alexnet-owt-7be5be79.pth",
        "squeezenet1_1-b8a52dc0.pth",
        "resnet50-0676ba61.pth",
        "inception_v3_google-0cc3c7bd.pth",
    )
}

_downloads = {"allowed": True}


def allow_downloads(allowed: bool) -> None:
    """The ``weights.download`` switch (``MINORITY_OFFLINE=1`` turns downloads off anyway)."""
    _downloads["allowed"] = bool(allowed)


def downloads_allowed() -> bool:
    return _downloads["allowed"] and os.environ.get(OFFLINE_ENV, "0") in ("", "0")


def download(filename: str, source: WeightSource, folder: Path) -> Path | None:
    """Fetch ``source`` into ``folder/filename`` if its sha256 matches the published hash.

    Returns:
        The file, or None when the server cannot be reached (nothing is left behind).

    Raises:
        MissingWeightsError: the download does not match the published hash (not kept).
    """
    folder.mkdir(parents=True, exist_ok=True)
    partial, digest = folder / f"{filename}.partial", hashlib.sha256()
    log.info("downloading %s from %s", filename, source.url)
    try:
        with urllib.request.urlopen(source.url, timeout=30) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        log.info("could not download %s (%s)", filename, getattr(error, "reason", error))
        return None
    expected = source.expected(filename)
    if not digest.hexdigest().startswith(expected):
        partial.unlink()
        raise MissingWeightsError(
            f"The download of {filename} from {source.url} has sha256 {digest.hexdigest()}, "
            f"not the published {expected}; it was not kept."
        )
    partial.replace(folder / filename)
    return folder / filename


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
    """Locate ``filename``; download it (hash-checked) when it is missing, official and allowed.

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
    source = OFFICIAL.get(filename)
    if source is not None and downloads_allowed():
        fetched = download(filename, source, torch_hub_checkpoints())
        if fetched is not None:
            return fetched
    raise MissingWeightsError(
        f"Weight file '{filename}'{what} was not found and cannot be downloaded here; "
        f"put it in {torch_hub_checkpoints()} "
        f"(or a folder listed in ${WEIGHTS_ENV}), or give its path in the config."
    )

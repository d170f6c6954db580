"""Checks on metric inputs: sample archives and matching sample sizes, each failing in one sentence.

Sample archives follow guided-diffusion: ``arr_0`` uint8 (N, H, W, C) images with C = 1 or 3
and optional ``arr_1`` (N,) integer labels; embedded runs (toy2d) store ``arr_0`` as float
(N, D) points.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError, require


def _check_samples(samples: np.ndarray, path: Path) -> None:
    require(samples.size > 0, f"The sample archive {path} holds no samples (arr_0 is empty).")
    if samples.dtype == np.uint8:
        require(
            samples.ndim == 4 and samples.shape[3] in (1, 3),
            f"The sample archive {path} has uint8 arr_0 of shape {samples.shape}; "
            "images must be N×H×W×C with C = 1 or 3.",
        )
        black = np.flatnonzero(~samples.reshape(len(samples), -1).any(axis=1))
        require(
            len(black) == 0,
            f"The sample archive {path} holds {len(black)} entirely black images (first: "
            f"{black[0] if len(black) else None}), which is what NaN samples become in uint8; "
            "draw them again.",
        )
        return
    require(
        np.issubdtype(samples.dtype, np.floating) and samples.ndim == 2,
        f"The sample archive {path} has arr_0 of dtype {samples.dtype} and shape "
        f"{samples.shape}; it must be uint8 N×H×W×C images or float N×D points.",
    )
    require(bool(np.isfinite(samples).all()), f"The sample archive {path} holds NaN or inf values.")


def _check_labels(labels: np.ndarray, n: int, path: Path) -> None:
    require(
        np.issubdtype(labels.dtype, np.integer) and labels.shape == (n,),
        f"The sample archive {path} has arr_1 of dtype {labels.dtype} and shape {labels.shape}; "
        f"labels must be {n} integers.",
    )


def load_samples_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check a sample archive.

    Args:
        path: an ``.npz`` with ``arr_0`` and optionally ``arr_1``.

    Returns:
        (samples, labels): uint8 (N, H, W, C) images or float (N, D) points, and int (N,)
        labels or None.

    Raises:
        UserError: missing, unreadable, empty or malformed archive.
    """
    path = Path(path).expanduser()
    require(path.is_file(), f"The sample archive {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            require("arr_0" in archive.files, f"The sample archive {path} holds no arr_0 array.")
            samples = archive["arr_0"]
            labels = archive["arr_1"] if "arr_1" in archive.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise UserError(f"The sample archive {path} is not a readable .npz file.") from error
    _check_samples(samples, path)
    if labels is not None:
        _check_labels(labels, len(samples), path)
    return samples, labels


def sample_size(samples: Tensor | np.ndarray) -> tuple[int, ...]:
    """One sample's size: (H, W) of uint8 NHWC or float NCHW images, else the trailing shape."""
    shape = tuple(samples.shape)
    if len(shape) != 4:
        return shape[1:]
    channels_last = samples.dtype in (np.uint8, torch.uint8)
    return shape[1:3] if channels_last else shape[2:4]


def check_same_sample_size(generated: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> None:
    """Raise :class:`UserError` unless generated and reference samples have the same size."""
    gen, ref = sample_size(generated), sample_size(reference)
    require(
        gen == ref,
        f"Generated samples are {_describe(gen)} but the dataset's are {_describe(ref)}; "
        "evaluate with the dataset the samples were drawn for (dataset=…).",
    )


def _describe(size: tuple[int, ...]) -> str:
    """(H, W) -> "8×8 images"; (D,) -> "2-d points"."""
    return f"{'×'.join(map(str, size))} images" if len(size) == 2 else f"{size[0]}-d points"

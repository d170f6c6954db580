"""Pixel-level helpers shared by the image datasets: listing, ADM's centre crop, scaling, subsets.

The crop follows ADM (guided-diffusion ``image_datasets.py``), which the released checkpoints and
the minority-guidance / self-guided minority code were trained and scored with.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from minority.errors import UserError
from minority.seeding import stream_seed

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "webp"})


def image_file_names(root: Path) -> np.ndarray:
    """Image files under ``root``, recursively, in a fixed order, as paths relative to ``root``.

    Entries of each folder are visited in sorted name order and sub-folders are expanded in place
    (guided-diffusion's order), so the list is the same on every machine. The names are kept as
    one fixed-width bytes array (file-system encoding): a few tens of bytes an image, not a
    Python object each, so millions of files fit in little memory.
    """
    return np.array(list(_walk(root, "")), dtype=bytes)


def _walk(folder: Path, prefix: str) -> Iterator[bytes]:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
        elif Path(entry.name).suffix[1:].lower() in IMAGE_EXTENSIONS:
            yield os.fsencode(prefix + entry.name)


def open_rgb(path: Path) -> Image.Image:
    """Decode an image file as 8-bit RGB (first frame of a GIF, alpha dropped)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"Cannot read the image file {path}: {error}.") from error


def resize_short_side(image: Image.Image, side: int) -> np.ndarray:
    """ADM's resize of the shorter side to ``side``: BOX halvings, then one BICUBIC resize.

    While the shorter side is at least twice ``side`` the image is halved with a BOX filter
    (integer halving, clean anti-aliasing); then one BICUBIC resize brings the shorter side to
    ``side`` (the other side rounded).

    Returns:
        uint8 array (H, W, 3) with min(H, W) = side.
    """
    while min(image.size) >= 2 * side:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = side / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    return np.asarray(image)


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM's centre crop to a square of side ``image_size``: :func:`resize_short_side`, then
    the central square is cut, offsets rounded down.

    Returns:
        uint8 array (image_size, image_size, 3).
    """
    arr = resize_short_side(image, image_size)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def random_crop_arr(
    image: Image.Image,
    image_size: int,
    rng: np.random.Generator,
    short_side: tuple[int, int] | None = None,
) -> np.ndarray:
    """The authors' classifier augmentation (guided-diffusion's ``random_crop_arr``).

    The shorter side is resized (:func:`resize_short_side`) to a size drawn uniformly from
    ``short_side`` (inclusive; default [image_size, ⌈image_size / 0.8⌉], i.e. [256, 320] at
    256), then a ``image_size`` square is cut at a uniformly drawn offset.

    Args:
        image: the decoded RGB image.
        image_size: side of the square cut.
        rng: the item's generator (:func:`item_generator`), which makes the draw reproducible.
        short_side: (lowest, highest) size of the resized shorter side.

    Returns:
        uint8 array (image_size, image_size, 3).
    """
    low, high = short_side or (image_size, math.ceil(image_size / 0.8))
    arr = resize_short_side(image, int(rng.integers(low, high + 1)))
    top = int(rng.integers(arr.shape[0] - image_size + 1))
    left = int(rng.integers(arr.shape[1] - image_size + 1))
    return arr[top : top + image_size, left : left + image_size]


def item_generator(seed: int, index: int, epoch: int = 0) -> np.random.Generator:
    """The generator of item ``index``'s random transforms in ``epoch``, stream (seed, (index,
    epoch), ``augment``): the same draws whatever the worker, batch or process loading the item."""
    return np.random.default_rng(stream_seed(seed, (index, epoch), "augment"))


def central_square(image: Image.Image, side: int) -> Image.Image:
    """The central ``side`` × ``side`` square of ``image`` (offsets rounded down)."""
    width, height = image.size
    if min(width, height) < side:
        raise UserError(f"An image of {width}×{height} is smaller than the {side}-px square crop.")
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_model_range(arr: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [−1, 1], as x / 127.5 − 1."""
    x = arr.transpose(2, 0, 1).astype(np.float32)
    x /= 127.5
    x -= 1.0
    return torch.from_numpy(x)


def subset_indices(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """Indices kept when at most ``max_images`` of ``n`` items are used.

    A seeded uniform draw without replacement (so a folder sorted by class is not cut to its
    first classes), returned in increasing order; all indices when there is no cap.
    """
    if max_images is None or max_images >= n:
        return np.arange(n)
    if max_images < 1:
        raise UserError(f"dataset.max_images must be a positive number, got {max_images}.")
    generator = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(n, generator=generator)[:max_images].numpy())

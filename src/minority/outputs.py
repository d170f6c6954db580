"""Run-folder outputs: shards written as they finish, the merged ``samples.npz``, pictures.

Images are stored as guided-diffusion does (``arr_0`` uint8 NHWC, ``arr_1`` int64 labels);
2-D points as float32 (N, 2). Every file is written to a ``.partial`` name and renamed, so a
killed run never leaves a file that looks complete.
"""

from __future__ import annotations

import re
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError

SHARD_PATTERN = re.compile(r"shard_(\d+)_(\d+)\.npz$")


def to_uint8_nhwc(x: Tensor) -> np.ndarray:
    """Images in [−1, 1], (N, C, H, W) -> uint8 (N, H, W, C) as the authors' samplers save them:
    ``((x + 1) * 127.5).clamp(0, 255).to(uint8)``, truncated (not rounded)."""
    return ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8_nhwc(array: np.ndarray) -> Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [−1, 1]."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_storage(x: Tensor) -> np.ndarray:
    """Samples as stored: uint8 NHWC for images, float32 for points."""
    return to_uint8_nhwc(x) if x.ndim == 4 else x.detach().float().cpu().numpy()


def torch_save_atomic(content: object, path: str | Path) -> Path:
    """``torch.save`` to a ``.partial`` name, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(content, partial)
    partial.replace(path)
    return path


def check_torch_file(path: Path, what: str, remedy: str) -> None:
    """Raise :class:`UserError` unless ``path`` is an intact ``torch.save`` archive (a zip whose
    members all pass their CRC check); nothing is unpickled.

    Args:
        path: the file.
        what: how to call it in the message, e.g. "Training checkpoint".
        remedy: what the user should do, e.g. "delete it to train from scratch".
    """
    intact = zipfile.is_zipfile(path)
    if intact:
        try:
            with zipfile.ZipFile(path) as archive:
                intact = archive.testzip() is None
        except (zipfile.BadZipFile, OSError, EOFError):
            intact = False
    if not intact:
        raise UserError(f"{what} {path} is corrupt or not a PyTorch file; {remedy}.")


def load_torch_file(path: Path, what: str, remedy: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, any failure one sentence naming the file.

    A file holding objects other than tensors and plain containers is refused, not unpickled.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means a damaged or foreign file
        check_torch_file(path, what, remedy)
        raise UserError(
            f"{what} {path} holds objects other than tensors and plain containers, which are "
            f"not loaded; {remedy}."
        ) from None


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    partial.replace(path)
    return path


def shard_path(folder: Path, start: int, end: int) -> Path:
    return folder / f"shard_{start:09d}_{end:09d}.npz"


def write_shard(
    folder: Path, start: int, end: int, samples: np.ndarray, labels: np.ndarray
) -> Path:
    """Save samples [start, end) with their global indices."""
    indices = np.arange(start, end, dtype=np.int64)
    return save_npz_atomic(
        shard_path(folder, start, end), arr_0=samples, arr_1=labels, indices=indices
    )


def completed_ranges(folder: Path) -> set[tuple[int, int]]:
    """(start, end) of every complete shard in ``folder``."""
    if not folder.is_dir():
        return set()
    return {(int(m[1]), int(m[2])) for p in folder.iterdir() if (m := SHARD_PATTERN.match(p.name))}


def merge_shards(folder: Path, num_samples: int, out: Path) -> Path:
    """Concatenate shards covering indices 0..N−1 exactly once into ``out``."""
    parts = sorted(completed_ranges(folder))
    bounds = [0] + [end for _, end in parts]
    if [start for start, _ in parts] != bounds[:-1] or bounds[-1] != num_samples:
        raise UserError(
            f"Shards in {folder} do not cover samples 0..{num_samples - 1} exactly once."
        )
    loaded = [_read_shard(shard_path(folder, s, e)) for s, e in parts]
    samples = np.concatenate([d["arr_0"] for d in loaded])
    labels = np.concatenate([d["arr_1"] for d in loaded])
    return save_npz_atomic(out, arr_0=samples, arr_1=labels)


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as content:
            return {key: content[key] for key in ("arr_0", "arr_1")}
    except Exception:  # noqa: BLE001 - any reading failure means a damaged shard
        raise UserError(
            f"Shard {path} is corrupt; delete it and rerun to draw its samples again."
        ) from None


CELL_PIXELS = 64  # tiny images (8×8 digits) are enlarged to at least this many pixels a side


def mosaic(images: np.ndarray, ncols: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (rows·H', ncols·W', C) picture of enlarged cells with a
    white 2-pixel border, H' = H·zoom (nearest neighbour, zoom so a cell is ≥ 64 pixels)."""
    zoom = max(1, -(-CELL_PIXELS // images.shape[1]))
    big = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    n, h, w, c = big.shape
    rows = -(-n // ncols)
    canvas = np.full((rows * (h + 2) + 2, ncols * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i, image in enumerate(big):
        r, k = divmod(i, ncols)
        canvas[2 + r * (h + 2) : r * (h + 2) + h + 2, 2 + k * (w + 2) : k * (w + 2) + w + 2] = image
    return canvas


def save_grid(rows: list[tuple[str, np.ndarray]], path: Path, title: str | None = None) -> Path:
    """Rows of uint8 (n, H, W, C) images, each row labelled on its left, under a title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(len(images) for _, images in rows)
    pictures = [mosaic(images, ncols) for _, images in rows]
    height, width = sum(p.shape[0] for p in pictures), pictures[0].shape[1]
    dpi = 100
    fig_w = width / dpi + 1.6
    # the title wraps to the figure's width and gets its own band above the images
    lines = textwrap.wrap(title, max(40, int(fig_w * dpi / 6))) if title else []
    header = 0.18 * len(lines) + 0.12
    fig_h = height / dpi + 0.2 + header
    figure = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, _), picture in zip(axes, rows, pictures, strict=True):
        ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
    if lines:
        figure.suptitle("\n".join(lines), fontsize=9, y=1 - 0.06 / fig_h, va="top")
    figure.subplots_adjust(left=1.5 / fig_w, right=0.99, top=1 - header / fig_h, bottom=0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def grid_rows(images: np.ndarray, labels: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    """A square-ish grid's rows, labelled by sample indices (and class labels when given)."""
    ncols = int(np.ceil(np.sqrt(len(images))))
    rows = []
    for start in range(0, len(images), ncols):
        end = min(start + ncols, len(images))
        label = f"#{start}–{end - 1}"
        if labels is not None and (labels[start:end] >= 0).all():
            label += "\nclass " + " ".join(str(int(y)) for y in labels[start:end])
        rows.append((label, images[start:end]))
    return rows


def points_figure() -> tuple:
    """A (figure, axes) pair for 2-D points on the toy2d square."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
    return figure, ax


def save_scatter(points: np.ndarray, path: Path, mixture=None, title: str | None = None) -> Path:
    """2-D points over the exact log-density of ``mixture`` (when given)."""
    figure, ax = points_figure()
    if mixture is not None:
        grid = torch.linspace(-1.3, 1.3, 200)
        xx, yy = torch.meshgrid(grid, grid, indexing="xy")
        density = mixture.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(200, 200)
        filled = ax.contourf(xx, yy, density.clamp(min=-8), levels=20, cmap="Blues")
        figure.colorbar(filled, ax=ax, label="exact log-density of the data (contours)")
    ax.scatter(points[:, 0], points[:, 1], s=3, c="tab:red", alpha=0.6, label="samples")
    ax.set_title(textwrap.fill(title or path.stem, 70), fontsize=9)
    ax.legend(loc="upper right", fontsize=8, title=f"n = {len(points)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def save_picture(
    samples: np.ndarray,
    path: Path,
    mixture=None,
    max_images: int = 64,
    title: str | None = None,
    labels: np.ndarray | None = None,
) -> Path:
    """A sample grid (images, rows labelled) or a scatter plot over the exact log-density
    (toy2d points), titled ``title`` (the method and its settings)."""
    if samples.ndim == 4:
        head = labels[:max_images] if labels is not None else None
        return save_grid(grid_rows(samples[:max_images], head), path, title)
    return save_scatter(samples, path, mixture, title)


def save_score_extremes(
    real: np.ndarray | Callable[[np.ndarray], np.ndarray],
    scores: np.ndarray,
    path: Path,
    title: str,
    count: int = 10,
    mixture=None,
) -> Path:
    """The first paper's Fig. 2: the real samples with the lowest, median and highest minority
    scores (images: one labelled row each; 2-D points: all points coloured by score, the three
    groups marked).

    Args:
        real: stored real data, uint8 (N, H, W, C) or float (N, 2); for images streamed from
            disk, a function from indices (n,) to the stored images uint8 (n, H, W, C).
        scores: minority scores (N,).
        path: the ``.png``.
        title: figure title (dataset and score settings).
        count: samples per group.
    """
    order = np.argsort(scores, kind="stable")
    middle = len(order) // 2 - count // 2
    groups = {
        "lowest": order[:count],
        "median": order[middle : middle + count],
        "highest": order[-count:][::-1],
    }
    if callable(real) or real.ndim == 4:
        fetch = real if callable(real) else real.__getitem__
        rows = [
            (f"{name}\nscores {scores[idx].min():.3g}–{scores[idx].max():.3g}", fetch(idx))
            for name, idx in groups.items()
        ]
        return save_grid(rows, path, title)
    figure, ax = points_figure()
    dots = ax.scatter(real[:, 0], real[:, 1], s=2, c=scores, cmap="viridis")
    figure.colorbar(dots, ax=ax, label="minority score")
    for (name, idx), marker in zip(groups.items(), ("v", "o", "^"), strict=True):
        ax.scatter(*real[idx].T, s=40, marker=marker, edgecolors="k", facecolors="none", label=name)
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.legend(loc="lower left", fontsize=8, title=f"{count} real points each")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path

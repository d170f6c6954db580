"""Run-folder outputs: shards written as they finish, the merged ``samples.npz``, pictures.

Images are stored as guided-diffusion does (``arr_0`` uint8 NHWC, ``arr_1`` int64 labels);
2-D points as float32 (N, 2). Every file is written to a ``.partial`` name and renamed, so a
killed run never leaves a file that looks complete.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    loaded = [np.load(shard_path(folder, s, e)) for s, e in parts]
    samples = np.concatenate([d["arr_0"] for d in loaded])
    labels = np.concatenate([d["arr_1"] for d in loaded])
    return save_npz_atomic(out, arr_0=samples, arr_1=labels)


def save_picture(samples: np.ndarray, path: Path, mixture=None, max_images: int = 64) -> Path:
    """A sample grid (images) or a scatter plot over the exact log-density (toy2d points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        from torchvision.utils import save_image

        grid = from_uint8_nhwc(samples[:max_images])
        zoom = max(1, 32 // grid.shape[-1])  # tiny images (8×8 digits) are shown enlarged
        grid = torch.nn.functional.interpolate(grid, scale_factor=zoom, mode="nearest")
        save_image((grid + 1) / 2, path, nrow=int(np.ceil(np.sqrt(len(grid)))), pad_value=1.0)
        return path
    fig, ax = plt.subplots(figsize=(5, 5))
    if mixture is not None:
        grid = torch.linspace(-1.3, 1.3, 200)
        xx, yy = torch.meshgrid(grid, grid, indexing="xy")
        density = mixture.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(200, 200)
        ax.contourf(xx, yy, density.clamp(min=-8), levels=20, cmap="Blues")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.5)
    ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", title=path.stem)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

"""scikit-learn's bundled 8×8 digits, scaled to [−1, 1], with optionally rare classes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from minority.errors import require

DIGITS_SIZE = 8


def load_digits_images() -> tuple[Tensor, Tensor]:
    """All 1 797 digits. Returns (x float32 (N, 1, 8, 8) in [−1, 1], labels int64 (N,))."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def keep_fraction(labels: Tensor, fractions: Mapping[int, float], seed: int = 0) -> Tensor:
    """Indices kept when class c keeps only ``fractions[c]`` of its members (seeded).

    Args:
        labels: int64 (N,).
        fractions: class -> kept share in (0, 1]; classes not named keep everything.
        seed: selects which members stay.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones_like(labels, dtype=torch.bool)
    for cls, share in fractions.items():
        require(0 < float(share) <= 1, f"digits keep fraction for class {cls} must be in (0, 1].")
        members = (labels == int(cls)).nonzero().squeeze(1)
        n_keep = max(1, round(float(share) * len(members)))
        dropped = members[torch.randperm(len(members), generator=generator)[n_keep:]]
        keep[dropped] = False
    return keep.nonzero().squeeze(1)

"""Reference sets of the most unique real samples (the papers score quality against these)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError
from minority.metrics.density import avg_knn


def most_unique_indices(
    real_features: Tensor | np.ndarray | None = None,
    fraction: float = 0.1,
    *,
    scores: Tensor | np.ndarray | None = None,
    k: int = 5,
    **knn_options,
) -> Tensor:
    """Indices of the most unique ``fraction`` of a real set, most unique first.

    Uniqueness is the given per-sample ``scores`` (higher = more unique, e.g. minority scores)
    or, without them, AvgkNN of each real feature among the other reals.

    Args:
        real_features: (N, D) features; needed when ``scores`` is None.
        fraction: share kept, in (0, 1]; at least one sample is kept.
        scores: (N,) per-sample uniqueness.
        k: AvgkNN neighbourhood size.
        **knn_options: ``chunk_size``, ``dtype``, ``margin`` of :func:`knn`.

    Returns:
        int64 (round(fraction · N),) indices, by decreasing uniqueness (ties by index).
    """
    if not 0 < fraction <= 1:
        raise UserError(f"The reference fraction must be in (0, 1], got {fraction}.")
    if scores is None:
        if real_features is None:
            raise UserError("Selecting a reference set needs real features or per-sample scores.")
        scores = avg_knn(None, real_features, k, **knn_options)
    uniqueness = torch.as_tensor(scores, dtype=torch.float64).cpu()
    n_keep = max(1, round(fraction * len(uniqueness)))
    return torch.sort(-uniqueness, stable=True).indices[:n_keep]

"""Density-based uniqueness of samples relative to real data: AvgkNN and LOF.

Both are higher for samples in sparser regions of the real feature distribution.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from minority.metrics.knn import Neighbors, knn

LRD_EPS = 1e-10  # scikit-learn's guard against a zero mean reach-distance (many duplicates)


def avg_knn_from_neighbors(neighbors: Neighbors) -> Tensor:
    """AvgkNN from precomputed neighbours: (N, k) distances -> float64 (N,) row means."""
    return neighbors.distances.mean(dim=1)


def avg_knn(
    generated: Tensor | np.ndarray | None,
    real: Tensor | np.ndarray,
    k: int = 5,
    **knn_options,
) -> Tensor:
    """AvgkNN (Sehwag et al. 2022): mean L2 distance to the k nearest real features.

    Args:
        generated: (N, D) features, or None to score the real set itself (self excluded).
        real: (M, D) real features.
        k: neighbours averaged.
        **knn_options: ``chunk_size``, ``dtype``, ``margin`` of :func:`knn`.

    Returns:
        float64 (N,) (or (M,) for the real set), higher = lower density.
    """
    if generated is None:
        return avg_knn_from_neighbors(knn(real, None, k, **knn_options))
    return avg_knn_from_neighbors(knn(generated, real, k, **knn_options))


def lof_neighbors_count(k: int, n_real: int) -> int:
    """The k used by scikit-learn's LOF on ``n_real`` points: k clipped to [1, n_real − 1]."""
    return max(1, min(k, n_real - 1))


def local_reachability_density(neighbors: Neighbors, real_k_distance: Tensor) -> Tensor:
    """lrd(p) = 1 / mean_o reach-dist(p, o), reach-dist(p, o) = max(k-dist(o), d(p, o)).

    Args:
        neighbors: the k real neighbours o of each point p, (N, k).
        real_k_distance: float64 (M,) distance of every real point to its k-th real neighbour.

    Returns:
        float64 (N,).
    """
    reach = torch.maximum(neighbors.distances, real_k_distance[neighbors.indices])
    return 1.0 / (reach.mean(dim=1) + LRD_EPS)


def lof_from_neighbors(real_neighbors: Neighbors, query_neighbors: Neighbors) -> Tensor:
    """LOF of query points from the real set's own kNN and the queries' kNN among reals.

    Args:
        real_neighbors: (M, k) neighbours of each real point among the other reals.
        query_neighbors: (N, k) neighbours of each query among the reals; passing
            ``real_neighbors`` again gives the real set's own (training) LOF.

    Returns:
        float64 (N,): mean_o lrd(o) / lrd(p); about 1 for inliers, larger for outliers.
    """
    k_distance = real_neighbors.distances[:, -1]
    real_lrd = local_reachability_density(real_neighbors, k_distance)
    query_lrd = local_reachability_density(query_neighbors, k_distance)
    return (real_lrd[query_neighbors.indices] / query_lrd[:, None]).mean(dim=1)


def lof(
    generated: Tensor | np.ndarray | None,
    real: Tensor | np.ndarray,
    k: int = 20,
    **knn_options,
) -> Tensor:
    """Local Outlier Factor (Breunig et al. 2000), fitted on real features only.

    Generated features are scored as novelties, as scikit-learn's
    ``LocalOutlierFactor(n_neighbors=k, novelty=True)`` with LOF = −``score_samples``.

    Args:
        generated: (N, D) features, or None for the real set's own LOF (self excluded).
        real: (M, D) real features.
        k: neighbourhood size (clipped to M − 1 as scikit-learn does).
        **knn_options: ``chunk_size``, ``dtype``, ``margin`` of :func:`knn`.

    Returns:
        float64 (N,) (or (M,)), +LOF: about 1 for inliers, larger for outliers.
    """
    k = lof_neighbors_count(k, len(real))
    real_neighbors = knn(real, None, k, **knn_options)
    if generated is None:
        return lof_from_neighbors(real_neighbors, real_neighbors)
    return lof_from_neighbors(real_neighbors, knn(generated, real, k, **knn_options))

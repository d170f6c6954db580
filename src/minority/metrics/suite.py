"""One call for several metrics on a pair of feature sets, sharing the kNN searches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError
from minority.metrics.density import avg_knn_from_neighbors, lof_from_neighbors, lof_neighbors_count
from minority.metrics.frechet import fid, kid
from minority.metrics.knn import DEFAULT_CHUNK, Neighbors, as_features, knn
from minority.metrics.manifold import knn_radii, manifold_coverage, rarity_from_radii

METRICS = ("avgknn", "lof", "rarity", "precision", "recall", "fid", "kid")


@dataclass
class MetricResult:
    """Summary values and per-sample scores.

    Attributes:
        values: ``avgknn`` / ``lof`` (means over generated samples), ``rarity`` (mean over
            samples inside the real manifold) and ``rarity_in_ball`` (their share),
            ``precision``, ``recall``, ``fid``, ``kid`` — those requested.
        per_sample: float64 arrays: ``avgknn``, ``lof``, ``rarity`` (NaN outside every real
            ball) for the generated samples, and ``avgknn_real``, ``lof_real`` for the real ones
            (each scored among the other reals) to compare distributions.
    """

    values: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)


def _check_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"Unknown metrics {unknown}; choose among {list(METRICS)}.")
    return list(names)


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def compute_metrics(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    names: Sequence[str] = METRICS,
    *,
    k_avgknn: int = 5,
    k_lof: int = 20,
    k_rarity: int = 3,
    k_manifold: int = 3,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> MetricResult:
    """Compute the named metrics of generated features against real ones.

    One kNN search of the real set against itself and one of the generated set against the
    real set (with the largest k needed) serve AvgkNN, LOF, Rarity and precision.

    Args:
        generated: (N, D) generated features.
        real: (M, D) real (reference) features.
        names: metrics among :data:`METRICS`.
        k_avgknn, k_lof, k_rarity, k_manifold: neighbourhood sizes of AvgkNN, LOF, Rarity and
            precision / recall.
        chunk_size, dtype: kNN tile size and GEMM precision (see :func:`knn`).
        device: where the kNN runs (default: where the features are).
        kid_subsets, kid_subset_size, seed: KID subsets (see :func:`kid`).

    Returns:
        A :class:`MetricResult`.
    """
    names = _check_names(names)
    g, r = as_features(generated, device), as_features(real, device)
    options = {"chunk_size": chunk_size, "dtype": dtype}
    k_lof = lof_neighbors_count(k_lof, len(r))
    real_k = {"avgknn": k_avgknn, "lof": k_lof, "rarity": k_rarity, "precision": k_manifold}
    gen_k = {"avgknn": k_avgknn, "lof": k_lof}
    real_nb = _neighbors(r, None, [real_k[n] for n in names if n in real_k], options)
    gen_nb = _neighbors(g, r, [gen_k[n] for n in names if n in gen_k], options)
    result = MetricResult()
    if "avgknn" in names:
        scores = avg_knn_from_neighbors(gen_nb.head(k_avgknn))
        result.per_sample["avgknn"] = _numpy(scores)
        result.per_sample["avgknn_real"] = _numpy(avg_knn_from_neighbors(real_nb.head(k_avgknn)))
        result.values["avgknn"] = float(scores.mean())
    if "lof" in names:
        real_lof_nb = real_nb.head(k_lof)
        scores = lof_from_neighbors(real_lof_nb, gen_nb.head(k_lof))
        result.per_sample["lof"] = _numpy(scores)
        result.per_sample["lof_real"] = _numpy(lof_from_neighbors(real_lof_nb, real_lof_nb))
        result.values["lof"] = float(scores.mean())
    if "rarity" in names:
        rarity = rarity_from_radii(g, r, real_nb.distances[:, k_rarity - 1], chunk_size)
        result.per_sample["rarity"] = _numpy(rarity.scores)
        result.values["rarity"] = rarity.mean
        result.values["rarity_in_ball"] = rarity.in_ball_fraction
    if "precision" in names:
        radii = real_nb.distances[:, k_manifold - 1]
        result.values["precision"] = manifold_coverage(g, r, radii, chunk_size)
    if "recall" in names:
        radii = knn_radii(g, k_manifold, **options)
        result.values["recall"] = manifold_coverage(r, g, radii, chunk_size)
    if "fid" in names:
        result.values["fid"] = fid(g, r)
    if "kid" in names:
        result.values["kid"] = kid(g, r, kid_subsets, kid_subset_size, seed)
    return result


def _neighbors(
    query: Tensor, reference: Tensor | None, ks: list[int], options: dict
) -> Neighbors | None:
    """One kNN search with the largest k requested, or None when nothing needs it."""
    return knn(query, reference, max(ks), **options) if ks else None

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
from minority.metrics.knn import DEFAULT_CHUNK, Neighbors, as_features, cross_search, knn
from minority.metrics.manifold import Rarity, covered_fraction, knn_radii

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

    A kNN search of the real set against itself (with the largest k needed), one of the
    generated set against itself (recall's radii) and one pass over the generated × real
    distances — the generated samples' real neighbours and the ball covers of Rarity,
    precision and recall from the same tiles — serve AvgkNN, LOF, Rarity, precision and recall:
    about two N × M × D GEMMs in all.

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
    ball_ks = sorted({real_k[n] for n in ("rarity", "precision") if n in names})
    gen_ks = [gen_k[n] for n in names if n in gen_k]
    gen_nb, real_balls, gen_balls = None, [], None
    if gen_ks or ball_ks or "recall" in names:
        gen_radii = knn_radii(g, k_manifold, **options) if "recall" in names else None
        gen_nb, real_balls, gen_balls = cross_search(
            g,
            r,
            max(gen_ks, default=0),
            reference_radii=[real_nb.distances[:, k - 1] for k in ball_ks],
            query_radii=gen_radii,
            **options,
        )
    covers = dict(zip(ball_ks, real_balls, strict=True))
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
        rarity = Rarity.from_smallest(covers[k_rarity].smallest(inclusive=False))
        result.per_sample["rarity"] = _numpy(rarity.scores)
        result.values["rarity"] = rarity.mean
        result.values["rarity_in_ball"] = rarity.in_ball_fraction
    if "precision" in names:
        result.values["precision"] = covered_fraction(covers[k_manifold].smallest(inclusive=True))
    if "recall" in names:
        result.values["recall"] = covered_fraction(gen_balls.smallest(inclusive=True))
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

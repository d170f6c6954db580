"""k-NN ball manifolds of a feature set: Rarity Score and improved precision / recall.

A set's manifold is the union of balls centred at its points, ball i having radius r_i = the
distance from point i to its k-th nearest *other* point of the set.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from minority.metrics.knn import DEFAULT_CHUNK, cross_search, knn, smallest_covering_radius


class Rarity(NamedTuple):
    """Rarity Score of generated samples.

    Attributes:
        scores: float64 (N,) score of each sample, NaN outside every real ball.
        in_ball: bool (N,) whether the sample lies in some real ball.
    """

    scores: Tensor
    in_ball: Tensor

    @classmethod
    def from_smallest(cls, smallest: Tensor) -> Rarity:
        """From the smallest real ball (strict) holding each sample, ``inf`` where none does."""
        in_ball = torch.isfinite(smallest)
        return cls(torch.where(in_ball, smallest, torch.nan), in_ball)

    @property
    def mean(self) -> float:
        """Mean score over the samples inside the real manifold (NaN when none is)."""
        return float(self.scores[self.in_ball].mean()) if bool(self.in_ball.any()) else float("nan")

    @property
    def in_ball_fraction(self) -> float:
        """Share of samples inside the real manifold, in [0, 1]."""
        return float(self.in_ball.double().mean())


def knn_radii(features: Tensor | np.ndarray, k: int = 3, **knn_options) -> Tensor:
    """Radius of each point's ball: float64 (N,) distance to its k-th nearest other point."""
    return knn(features, None, k, **knn_options).distances[:, -1]


def rarity_from_radii(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    real_radii: Tensor,
    chunk_size: int = DEFAULT_CHUNK,
) -> Rarity:
    """Rarity Score given the real balls' radii (see :func:`rarity_score`)."""
    smallest = smallest_covering_radius(
        generated, real, real_radii, inclusive=False, chunk_size=chunk_size
    )
    return Rarity.from_smallest(smallest)


def rarity_score(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    k: int = 3,
    **knn_options,
) -> Rarity:
    """Rarity Score (Han et al. 2023): the smallest real ball a sample falls in.

    Ball i has radius r_i = distance from real i to its k-th nearest other real; a sample g
    lies in it when d(g, real_i) < r_i (strict, as the authors' code); score(g) = min r_i
    over those balls. Samples outside every ball get NaN and are flagged in ``in_ball``.

    Args:
        generated: (N, D) features.
        real: (M, D) real features.
        k: neighbourhood size of the real balls.
        **knn_options: ``chunk_size``, ``dtype``, ``margin`` of :func:`knn`.

    Returns:
        :class:`Rarity`; higher scores = rarer samples.
    """
    radii = knn_radii(real, k, **knn_options)
    return rarity_from_radii(
        generated, real, radii, chunk_size=knn_options.get("chunk_size", DEFAULT_CHUNK)
    )


def covered_fraction(smallest: Tensor) -> float:
    """Share of points held by some ball, from their smallest covering radii (``inf``: none)."""
    return float(torch.isfinite(smallest).double().mean())


def precision_recall(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    k: int = 3,
    **knn_options,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN ball manifolds.

    Precision = share of generated samples inside the real manifold; recall = share of real
    samples inside the generated manifold; a point on a ball's sphere counts as inside.

    Args:
        generated: (N, D) features.
        real: (M, D) real features.
        k: neighbourhood size of the balls.
        **knn_options: ``chunk_size``, ``dtype``, ``margin`` of :func:`knn`.

    Returns:
        (precision, recall), each in [0, 1].
    """
    _, (real_balls,), generated_balls = cross_search(  # one pass over generated × real
        generated,
        real,
        reference_radii=[knn_radii(real, k, **knn_options)],
        query_radii=knn_radii(generated, k, **knn_options),
        **knn_options,
    )
    precision = covered_fraction(real_balls.smallest(inclusive=True))
    return precision, covered_fraction(generated_balls.smallest(inclusive=True))

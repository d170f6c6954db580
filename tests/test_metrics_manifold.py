"""Rarity Score and improved precision / recall against their definitions, computed directly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minority.metrics.manifold import precision_recall, rarity_score


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set."""
    d = distances(points, points)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def direct_rarity(generated: np.ndarray, real: np.ndarray, k: int) -> np.ndarray:
    r = radii(real, k)
    scores = []
    for g in generated:
        containing = [r[i] for i in range(len(real)) if np.linalg.norm(g - real[i]) < r[i]]
        scores.append(min(containing) if containing else math.nan)
    return np.array(scores)


def direct_coverage(points: np.ndarray, manifold: np.ndarray, k: int) -> float:
    r = radii(manifold, k)
    inside = [any(np.linalg.norm(p - manifold, axis=1) <= r) for p in points]
    return float(np.mean(inside))


@pytest.fixture
def sets() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(90, 5)) * 1.2, rng.normal(size=(120, 5))


def test_rarity_equals_the_definition(sets):
    generated, real = sets
    expected = direct_rarity(generated, real, 3)
    got = rarity_score(generated, real, 3, chunk_size=16)
    np.testing.assert_allclose(got.scores.numpy(), expected, rtol=1e-12)
    assert np.array_equal(got.in_ball.numpy(), ~np.isnan(expected))
    assert 0 < got.in_ball_fraction < 1
    assert got.mean == pytest.approx(np.nanmean(expected), rel=1e-12)


def test_rarity_on_a_hand_computed_line():
    real = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])  # k = 1 radii: 1, 1, 2, 3, 4
    generated = np.array([[2.0], [0.5], [20.0]])
    got = rarity_score(generated, real, 1)
    # 2.0 sits on the sphere of ball 1 (strict: outside) and inside ball 3 (radius 2).
    assert got.scores[:2].tolist() == [2.0, 1.0]
    assert math.isnan(got.scores[2]) and got.in_ball.tolist() == [True, True, False]


def test_precision_recall_equal_brute_force(sets):
    generated, real = sets
    expected = (direct_coverage(generated, real, 3), direct_coverage(real, generated, 3))
    assert precision_recall(generated, real, 3, chunk_size=32) == pytest.approx(expected, abs=0)


def test_precision_counts_points_on_the_sphere():
    real = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    generated = np.array([[-1.0], [14.0], [14.5], [20.0]])  # −1 and 14 lie on spheres
    precision, _ = precision_recall(generated, real, 1)
    assert precision == 0.5

"""FID and KID against closed forms and clean-fid's implementation."""

from __future__ import annotations

import numpy as np
import pytest
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from cleanfid.fid import kernel_distance as cleanfid_kernel_distance

from minority.metrics.frechet import feature_statistics, fid, frechet_distance, kid


def random_rotation(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


def test_commuting_gaussians_closed_form():
    a, b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 1.0, 0.5])
    q = random_rotation(4, 0)
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, abs=1e-4)


def test_non_commuting_2d_closed_form():
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2  # tr √M = √(tr M + 2 √det M) for 2 × 2 M with positive eigenvalues
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2)
    assert got == pytest.approx(expected, abs=1e-4)


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert abs(fid(x, x)) < 1e-8


def test_fid_matches_cleanfid_on_features():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(250, 16)) * 1.1 + 0.1
    expected = cleanfid_frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert fid(a, b) == pytest.approx(expected, rel=1e-8)


def test_kid_matches_cleanfid_with_the_same_draws():
    rng = np.random.default_rng(2)
    generated, real = rng.normal(size=(60, 8)), rng.normal(size=(80, 8)) + 0.3
    np.random.seed(5)
    expected = cleanfid_kernel_distance(real, generated, num_subsets=7, max_subset_size=40)
    assert kid(generated, real, num_subsets=7, max_subset_size=40, seed=5) == pytest.approx(
        expected, rel=1e-12
    )


def test_kid_on_full_sets_is_the_unbiased_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 0.5

    def kernel(a, b):
        return (a @ b.T / 4 + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    off = ~np.eye(30, dtype=bool)
    expected = kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()
    assert kid(x, y, num_subsets=1, max_subset_size=30) == pytest.approx(expected, rel=1e-10)

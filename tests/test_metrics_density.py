"""AvgkNN and LOF against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

from minority.metrics.density import avg_knn, lof


@pytest.fixture
def sets() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    generated = np.concatenate([rng.normal(size=(150, 16)), rng.normal(size=(50, 16)) * 3 + 1])
    return generated, real


def sklearn_lof(generated: np.ndarray, real: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(novelty LOF of generated, training LOF of real), both as +LOF."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(real)
    return -model.score_samples(generated), -model.negative_outlier_factor_


def relative_error(got: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got.numpy() / expected - 1)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_avg_knn_equals_sklearn(sets, dtype):
    generated, real = sets
    distances, _ = NearestNeighbors(n_neighbors=5).fit(real).kneighbors(generated)
    assert relative_error(avg_knn(generated, real, 5, dtype=dtype), distances.mean(1)) <= 1e-6


def test_avg_knn_of_the_real_set_excludes_self(sets):
    real = sets[1]
    distances, _ = NearestNeighbors(n_neighbors=5).fit(real).kneighbors()
    assert relative_error(avg_knn(None, real, 5, chunk_size=64), distances.mean(1)) <= 1e-6


@pytest.mark.parametrize("k", [5, 20])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lof_equals_sklearn_novelty_scores(sets, k, dtype):
    generated, real = sets
    expected, expected_real = sklearn_lof(generated, real, k)
    assert relative_error(lof(generated, real, k, dtype=dtype, chunk_size=64), expected) <= 1e-6
    assert relative_error(lof(None, real, k, dtype=dtype), expected_real) <= 1e-6


def test_lof_with_duplicate_real_points_equals_sklearn(sets):
    generated, real = sets
    real = real.copy()
    real[10:14] = real[3]  # five copies, fewer than k
    generated = np.concatenate([generated, real[[3]]])
    expected, _ = sklearn_lof(generated, real, 10)
    got = lof(generated, real, 10, chunk_size=50)
    assert relative_error(got, expected) <= 1e-6


def test_lof_clips_k_to_the_real_set_size_like_sklearn(sets):
    generated, real = sets[0], sets[1][:12]
    expected, _ = sklearn_lof(generated, real, 20)
    assert relative_error(lof(generated, real, 20), expected) <= 1e-6


def test_outliers_score_higher(sets):
    generated, real = sets
    scores = lof(generated, real, 20)
    assert scores[150:].mean() > 1.5 > scores[:150].mean() > 0.8
    assert avg_knn(generated, real)[150:].mean() > avg_knn(generated, real)[:150].mean()

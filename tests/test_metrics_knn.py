"""Exact kNN and ball coverage against brute force."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from minority.errors import UserError
from minority.metrics.knn import knn, smallest_covering_radius

# The package re-exports the function ``knn``, which hides the module of the same name.
knn_module = importlib.import_module("minority.metrics.knn")


def brute_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full (Na, Nb) float64 L2 distances from explicit differences."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def brute_knn(a: np.ndarray, b: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest by a full sort (ties by lower index), self excluded when ``b`` is None."""
    d = brute_distances(a, a if b is None else b)
    if b is None:
        np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


# Distances carry the GEMM's rounding except on rows re-ranked exactly.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture
def features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(23, 6)), rng.normal(size=(19, 6)) * 1.3 + 0.2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_size", [1, 7, 23])
def test_query_against_reference_matches_brute_force(features, chunk_size, dtype):
    query, reference = features
    expected_d, expected_i = brute_knn(query, reference, 4)
    q, r = torch.from_numpy(query), torch.from_numpy(reference)
    got = knn(q, r, 4, chunk_size=chunk_size, dtype=dtype)
    assert torch.equal(got.indices, torch.from_numpy(expected_i))
    np.testing.assert_allclose(got.distances.numpy(), expected_d, rtol=RTOL[dtype])
    assert got.distances.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_size", [1, 7, 23])
def test_self_search_matches_brute_force(features, chunk_size, dtype):
    points = features[0]
    expected_d, expected_i = brute_knn(points, None, 5)
    got = knn(torch.from_numpy(points), None, 5, chunk_size=chunk_size, dtype=dtype)
    assert torch.equal(got.indices, torch.from_numpy(expected_i))
    np.testing.assert_allclose(got.distances.numpy(), expected_d, rtol=RTOL[dtype])


def test_self_is_excluded_by_index_not_by_distance():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(12, 3))
    points[[3, 7, 9, 11]] = points[0]  # five copies of one point
    got = knn(torch.from_numpy(points), None, 3, chunk_size=4)
    own = torch.arange(12)[:, None]
    assert not (got.indices == own).any()
    copies = torch.tensor([0, 3, 7, 9, 11])
    for i in copies:
        assert set(got.indices[i].tolist()) <= set(copies.tolist()) - {int(i)}
        assert torch.equal(got.distances[i], torch.zeros(3, dtype=torch.float64))


def test_copies_of_reference_points_are_at_distance_zero_in_float32():
    rng = np.random.default_rng(3)
    reference = (rng.normal(size=(40, 64)) + 100).astype(np.float32)
    query = np.stack([reference[5], reference[9] + 1e-3]).astype(np.float32)
    got = knn(query, reference, 2, dtype=torch.float32)
    assert got.indices[:, 0].tolist() == [5, 9]
    assert got.distances[0, 0] == 0
    expected = np.linalg.norm(query[1].astype(np.float64) - reference[9])
    assert got.distances[1, 0].item() == pytest.approx(expected, rel=1e-12)


def test_tiles_never_exceed_the_chunk_size(monkeypatch, features):
    seen = []
    original = knn_module._squared_distances

    def recording(*args, **kwargs):
        tile = original(*args, **kwargs)
        seen.append(tuple(tile.shape))
        return tile

    monkeypatch.setattr(knn_module, "_squared_distances", recording)
    knn(torch.from_numpy(features[0]), torch.from_numpy(features[1]), 3, chunk_size=5)
    assert seen and max(max(s) for s in seen) <= 5


def test_k_out_of_range_is_a_user_error(features):
    with pytest.raises(UserError, match="k"):
        knn(features[0], None, 23)
    with pytest.raises(UserError, match="Feature sizes differ"):
        knn(features[0], features[1][:, :4], 2)


@pytest.mark.parametrize("inclusive", [True, False])
def test_smallest_covering_radius_matches_definition(features, inclusive):
    query, centers = features
    radii = np.random.default_rng(2).uniform(0.5, 3.0, size=len(centers))
    d = brute_distances(query, centers)
    inside = d <= radii if inclusive else d < radii
    expected = np.where(inside, radii[None], np.inf).min(axis=1)
    got = smallest_covering_radius(query, centers, radii, inclusive=inclusive, chunk_size=7)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_ball_boundary_is_inclusive_or_strict():
    centers = np.array([[0.0], [4.0]])
    query = np.array([[1.0], [5.5]])
    radii = np.array([1.0, 2.0])
    inclusive = smallest_covering_radius(query, centers, radii, inclusive=True)
    strict = smallest_covering_radius(query, centers, radii, inclusive=False)
    assert inclusive.tolist() == [1.0, 2.0]
    assert strict.tolist() == [np.inf, 2.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_gpu(features):
    query, reference = (torch.from_numpy(f).cuda() for f in features)
    got = knn(query, reference, 3)
    expected_d, expected_i = brute_knn(*features, 3)
    assert got.indices.is_cuda
    assert torch.equal(got.indices.cpu(), torch.from_numpy(expected_i))


def test_float32_ball_tests_near_a_sphere_are_exact():
    """Squared norms ~2e7 put float32 GEMM errors far above the ball radius² (25): only the
    exact recomputation of the pairs near a sphere can tell d² = 24, 25 and 26 apart."""
    rng = np.random.default_rng(7)
    centers = rng.integers(-1000, 1000, size=(30, 64)).astype(np.float32)
    offsets = np.zeros((3, 64), np.float32)
    offsets[0, :3] = (2, 2, 4)  # d² = 24: inside
    offsets[1, :2] = (3, 4)  # d² = 25: on the sphere
    offsets[2, :2] = (1, 5)  # d² = 26: outside
    query = np.concatenate([centers[i : i + 1] + offsets for i in range(10)])
    radii = np.full(30, 5.0)
    inclusive = smallest_covering_radius(query, centers, radii, inclusive=True, chunk_size=16)
    strict = smallest_covering_radius(query, centers, radii, inclusive=False, chunk_size=16)
    assert inclusive.tolist() == [5.0, 5.0, np.inf] * 10
    assert strict.tolist() == [5.0, np.inf, np.inf] * 10

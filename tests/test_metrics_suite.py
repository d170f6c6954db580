"""The metric dispatcher and reference-set selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minority.errors import UserError
from minority.metrics import (
    avg_knn,
    compute_metrics,
    fid,
    kid,
    lof,
    most_unique_indices,
    precision_recall,
    rarity_score,
)


@pytest.fixture
def sets() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(120, 6, generator=generator, dtype=torch.float64)
    generated = torch.randn(80, 6, generator=generator, dtype=torch.float64) * 1.3
    return generated, real


def test_dispatcher_equals_the_single_metrics(sets):
    generated, real = sets
    result = compute_metrics(generated, real, chunk_size=32, kid_subsets=3, kid_subset_size=50)
    rarity = rarity_score(generated, real, 3)
    precision, recall = precision_recall(generated, real, 3)
    assert result.values == pytest.approx(
        {
            "avgknn": float(avg_knn(generated, real, 5).mean()),
            "lof": float(lof(generated, real, 20).mean()),
            "rarity": rarity.mean,
            "rarity_in_ball": rarity.in_ball_fraction,
            "precision": precision,
            "recall": recall,
            "fid": fid(generated, real),
            "kid": kid(generated, real, 3, 50),
        },
        rel=1e-12,
    )
    close = {"rtol": 1e-12, "atol": 0}  # BLAS rounding may vary between calls
    np.testing.assert_allclose(result.per_sample["lof_real"], lof(None, real, 20), **close)
    np.testing.assert_allclose(result.per_sample["avgknn_real"], avg_knn(None, real), **close)
    np.testing.assert_allclose(result.per_sample["rarity"], rarity.scores, **close)
    assert result.per_sample["avgknn"].shape == (80,)


def test_dispatcher_computes_only_what_is_asked(sets):
    result = compute_metrics(*sets, names=["recall", "fid"])
    assert set(result.values) == {"recall", "fid"} and not result.per_sample


def test_unknown_metric_is_a_user_error(sets):
    with pytest.raises(UserError, match="Unknown metrics"):
        compute_metrics(*sets, names=["avgknn", "is"])


def test_most_unique_by_avg_knn_and_by_scores():
    points = torch.cat([torch.zeros(8, 2), torch.tensor([[5.0, 5.0], [-9.0, 0.0]])])
    points[:8] += torch.randn(8, 2) * 0.1
    assert most_unique_indices(points, 0.2, k=2).tolist() == [9, 8]
    scores = np.array([0.1, 0.9, 0.5, 0.9])
    assert most_unique_indices(scores=scores, fraction=0.5).tolist() == [1, 3]
    with pytest.raises(UserError, match="fraction"):
        most_unique_indices(points, 0.0)

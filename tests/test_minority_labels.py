"""Ordinal minority labels against torch.quantile and the official labelling loop; the split."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from minority.errors import UserError
from minority.scores.labels import (
    minority_labels,
    ordinal_labels,
    quantile_thresholds,
    stratified_split,
)


def _official_labels(scores: Tensor, thresholds: Tensor) -> Tensor:
    """The official double loop: label j when q_{j−1} < s ≤ q_j (label 0 when s ≤ q_0)."""
    labels = torch.zeros(len(scores), dtype=torch.int64)
    for i, s in enumerate(scores):
        for j in range(len(thresholds)):
            low = thresholds[j - 1] if j else -float("inf")
            if low < s <= thresholds[j]:
                labels[i] = j
    return labels


def _scores(n: int, ties: bool) -> Tensor:
    scores = torch.rand(n) * torch.randint(1, 4, (n,)).float()
    return torch.round(scores * 20) / 20 if ties else scores


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("num_classes", [1, 3, 10, 100])
@pytest.mark.parametrize("ties", [False, True])
def test_thresholds_equal_torch_quantile_per_level(n: int, num_classes: int, ties: bool) -> None:
    scores = _scores(n, ties)
    expected = torch.stack(
        [torch.quantile(scores, 1 / num_classes * (j + 1)) for j in range(num_classes)]
    )
    assert torch.equal(quantile_thresholds(scores, num_classes), expected)


@pytest.mark.parametrize("ties", [False, True])
def test_labels_equal_the_official_loop(ties: bool) -> None:
    scores = _scores(300, ties)
    labels, thresholds = minority_labels(scores, 7)
    assert torch.equal(labels, _official_labels(scores, thresholds))
    assert thresholds[-1] == scores.max()


def test_bins_have_equal_frequency_and_the_top_bin_is_most_unique() -> None:
    scores = torch.randn(1000)
    labels, _ = minority_labels(scores, 10)
    assert torch.equal(torch.bincount(labels), torch.full((10,), 100))
    top = scores.argsort()[-100:]
    assert bool((labels[top] == 9).all())


def test_scores_above_the_last_threshold_get_the_top_label() -> None:
    thresholds = torch.tensor([0.1, 0.5, 0.9])
    labels = ordinal_labels(torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9, 2.0]), thresholds)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_stratified_split_is_seeded_disjoint_and_keeps_label_shares() -> None:
    labels, _ = minority_labels(torch.rand(2000), 10)
    train, val = stratified_split(labels, 0.05, seed=3)
    assert len(val) == 100 and len(train) == 1900
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(2000))
    assert torch.equal(torch.bincount(labels[val], minlength=10), torch.full((10,), 10))
    again, val_again = stratified_split(labels, 0.05, seed=3)
    assert torch.equal(val, val_again) and torch.equal(train, again)
    assert not torch.equal(stratified_split(labels, 0.05, seed=4)[1], val)


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(UserError):
        quantile_thresholds(torch.tensor([]), 3)
    with pytest.raises(UserError):
        quantile_thresholds(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(UserError):
        stratified_split(torch.tensor([0, 0, 0, 1]), 0.5)
    with pytest.raises(UserError):
        stratified_split(torch.tensor([0, 1]), 1.5)

"""Ordinal minority labels: L equal-frequency bins of the minority score, and a stratified split.

Thresholds follow the official rule exactly: q_j = quantile(ℓ, (1/L)·(j+1)) with linear
interpolation on float32 scores (so q_{L−1} = max ℓ), and

    label(ℓ) = j  with  q_{j−1} < ℓ ≤ q_j   (q_{−1} = −∞),

i.e. the number of thresholds strictly below ℓ. Label L−1 holds the most unique 1/L.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minority.errors import UserError, require
from minority.seeding import stream_seed


def quantile_levels(num_classes: int) -> list[float]:
    """The levels (1/L)·(j+1), j = 0..L−1, as the official code computes them (Python floats)."""
    return [1 / num_classes * (j + 1) for j in range(num_classes)]


def quantile_thresholds(scores: Tensor, num_classes: int) -> Tensor:
    """q_0 ≤ … ≤ q_{L−1}: float32 (L,) linear-interpolation quantiles of ``scores`` (N,).

    Bit-identical to ``torch.quantile(scores.float(), level)`` per level (the level cast to
    float32, its rank (N−1)·level in float64, the interpolation weight in float32), with one
    sort (O(N log N)) and without torch.quantile's limit of 2^24 scores.
    """
    require(num_classes >= 1, f"num_classes must be at least 1 (got {num_classes}).")
    values = scores.detach().reshape(-1).float()
    require(values.numel() > 0, "Cannot bin an empty set of minority scores.")
    require(bool(torch.isfinite(values).all()), "Minority scores must be finite to be binned.")
    values = values.sort().values
    levels = torch.tensor(quantile_levels(num_classes), dtype=torch.float32, device=values.device)
    ranks = levels.double() * (values.numel() - 1)
    below = ranks.long()
    weights = (ranks - below).float()
    return torch.lerp(values[below], values[ranks.ceil().long()], weights)


def ordinal_labels(scores: Tensor, thresholds: Tensor) -> Tensor:
    """Label of each score: the number of thresholds strictly below it. int64 (N,) in [0, L)."""
    values = scores.detach().reshape(-1).to(thresholds.dtype)
    labels = torch.searchsorted(thresholds.contiguous(), values.contiguous(), side="left")
    return labels.clamp_max(thresholds.numel() - 1)


def minority_labels(scores: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Equal-frequency ordinal labels of ``scores`` (N,).

    Returns:
        (labels int64 (N,) in [0, L), thresholds float32 (L,)).
    """
    thresholds = quantile_thresholds(scores, num_classes)
    return ordinal_labels(scores, thresholds), thresholds


def stratified_split(
    labels: Tensor, val_fraction: float = 0.05, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A seeded split keeping each label's share in both parts (scikit-learn's stratified
    shuffle, as the official code uses).

    Args:
        labels: int64 (N,).
        val_fraction: share of the items held out for validation, in (0, 1).
        seed: the shuffle's seed (stream (seed, 0, ``split``) of
            :func:`~minority.seeding.stream_seed`).

    Returns:
        (train_indices, val_indices), int64, sorted, disjoint, covering 0..N−1.

    Raises:
        UserError: the split is impossible (a label with fewer than 2 items, or fewer held-out
            items than labels).
    """
    from sklearn.model_selection import train_test_split

    require(0 < val_fraction < 1, f"val_fraction must lie in (0, 1) (got {val_fraction}).")
    y = labels.detach().reshape(-1).cpu().numpy()
    try:
        train, val = train_test_split(
            range(len(y)),
            test_size=val_fraction,
            random_state=stream_seed(seed, 0, "split") % 2**32,  # scikit-learn's seeds: 32 bits
            stratify=y,
        )
    except ValueError as error:
        raise UserError(f"Cannot make a stratified validation split: {error}") from None
    train_indices, val_indices = (torch.tensor(sorted(p), dtype=torch.int64) for p in (train, val))
    return train_indices, val_indices

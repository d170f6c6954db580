"""Distribution distances between feature sets: Fréchet distance (FID) and kernel distance (KID).

Which FID this is depends on the features given: clean-fid Inception pool3 features give cFID,
the 2023-d ``mixed_6/conv`` features give sFID (see :mod:`minority.metrics.features`).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from minority.errors import UserError


def _float64(features: Tensor | np.ndarray) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    return x.reshape(len(x), -1).astype(np.float64)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64."""
    x = _float64(features)
    if len(x) < 2:
        raise UserError(f"FID needs at least 2 feature vectors per set, got {len(x)}.")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 − mu2||² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^½)``, with the trace term computed as
    the sum of square roots of the eigenvalues of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½ (it has
    the spectrum of Σ1 Σ2); this needs no ε offset for singular covariances.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.

    Returns:
        The distance, ≥ 0 up to rounding.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UserError(f"FID statistics differ in size: {mu1.shape} and {mu2.shape}.")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(generated: Tensor | np.ndarray, real: Tensor | np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D), computed in float64."""
    return frechet_distance(*feature_statistics(generated), *feature_statistics(real))


def kid(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """Kernel Inception Distance: unbiased MMD² with the cubic kernel (x·y / D + 1)³.

    Averaged over ``num_subsets`` random subsets of m = min(N, M, max_subset_size) points of
    each set, drawn without replacement as clean-fid draws them (generated first).

    Args:
        generated: (N, D) features.
        real: (M, D) features.
        num_subsets: subsets averaged.
        max_subset_size: largest subset size m.
        seed: seed of the subset draws.

    Returns:
        The kernel distance (may be slightly negative for near-identical sets).
    """
    x_all, y_all = _float64(generated), _float64(real)
    dim = x_all.shape[1]
    m = min(len(x_all), len(y_all), max_subset_size)
    if m < 2:
        raise UserError(f"KID needs at least 2 feature vectors per set, got {m}.")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        between = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (m - 1) - between.sum() * 2 / m
    return float(total / num_subsets / m)

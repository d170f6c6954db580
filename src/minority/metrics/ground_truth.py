"""Ground-truth metrics for the embedded data sets, where the data distribution is known.

toy2d: the exact mixture density tells how likely and how minority each sample is. digits: a
classifier trained on all of scikit-learn's digits tells which classes the samples belong to.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from sklearn.svm import SVC
from torch import Tensor

from minority.data.digits import load_digits_images
from minority.data.toy2d import GaussianMixture2D
from minority.errors import UserError
from minority.metrics.features import Images, pixels

OFF_MANIFOLD_SIGMAS = 3.0
DIGITS_CLASSES = 10


def toy2d_ground_truth(
    mixture: GaussianMixture2D,
    samples: Tensor | np.ndarray,
    sigmas: float = OFF_MANIFOLD_SIGMAS,
) -> dict[str, float]:
    """Exact-density summary of 2-D samples.

    Every sample within ``sigmas`` standard deviations of some component is *on* the manifold
    and counted for its most responsible component; the others are *off* the manifold. The
    component shares and the off-manifold share therefore sum to 1.

    Args:
        mixture: the data's :class:`GaussianMixture2D`.
        samples: (N, 2) points in data coordinates.
        sigmas: on-manifold radius in component standard deviations.

    Returns:
        ``mean_log_density`` (mean exact log p(x)), ``component_<k>_share`` for each k,
        ``light_share`` (on-manifold samples of every component but the heaviest) and
        ``off_manifold_share``.
    """
    x = torch.as_tensor(samples, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) == 0:
        raise UserError(f"toy2d samples must be a non-empty (N, 2) array, got {tuple(x.shape)}.")
    on_manifold = mixture.within_sigmas(x, sigmas)
    component = torch.where(on_manifold, mixture.component_of(x), -1)
    shares = {
        f"component_{k}_share": float((component == k).double().mean())
        for k in range(mixture.num_components)
    }
    light = torch.isin(component, mixture.light_components())
    return {
        "mean_log_density": float(mixture.log_prob(x).mean()),
        **shares,
        "light_share": float(light.double().mean()),
        "off_manifold_share": float((~on_manifold).double().mean()),
    }


def fit_digits_classifier(x: np.ndarray, labels: np.ndarray) -> SVC:
    """An RBF support-vector classifier on flattened digits (N, 64) in [−1, 1]."""
    return SVC(kernel="rbf", gamma="scale", C=10.0).fit(x, labels)


@functools.lru_cache(maxsize=1)
def digits_classifier() -> SVC:
    """The classifier trained on all 1 797 digits (x / 8 − 1), built once per process."""
    x, labels = load_digits_images()
    return fit_digits_classifier(pixels(x).numpy(), labels.numpy())


def classify_digits(images: Images) -> np.ndarray:
    """Predicted class of each digit: (N, 1, 8, 8) in [−1, 1] or uint8 (N, 8, 8, 1) -> int (N,)."""
    x = pixels(images).numpy()
    if x.shape[1:] != (64,):
        raise UserError(f"Digits samples must be 8×8 images, got {x.shape[1]} values each.")
    return digits_classifier().predict(x)


def digits_class_shares(images: Images, rare_classes: tuple[int, ...] = ()) -> dict[str, float]:
    """Share of samples per predicted class.

    Args:
        images: (N, 1, 8, 8) float in [−1, 1] or uint8 (N, 8, 8, 1).
        rare_classes: classes whose summed share is also reported.

    Returns:
        ``class_<c>_share`` for c = 0..9, plus ``rare_class_share`` when ``rare_classes``.
    """
    predicted = classify_digits(images)
    counts = np.bincount(predicted, minlength=DIGITS_CLASSES) / max(1, len(predicted))
    shares = {f"class_{c}_share": float(counts[c]) for c in range(DIGITS_CLASSES)}
    if rare_classes:
        shares["rare_class_share"] = float(sum(counts[c] for c in rare_classes))
    return shares

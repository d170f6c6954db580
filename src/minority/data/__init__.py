"""Datasets as tensors in [−1, 1]: the embedded ones (toy2d, digits) and real image folders.

A ``dataset`` node names one of the builders here by ``_target_`` (:mod:`minority.lit.build`
calls it with the node's keys); image formats also stream from the same node
(:func:`minority.data.images.build_image_dataset`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from minority.data.real import RealData


def toy2d_dataset(
    name: str,
    num_samples: int,
    seed: int,
    means: Sequence[Sequence[float]],
    stds: Sequence[float],
    weights: Sequence[float],
) -> RealData:
    """``num_samples`` points of the 2-D Gaussian mixture (means, stds, weights), drawn from
    ``seed``; labels are the mixture components."""
    from minority.data.toy2d import GaussianMixture2D

    mixture = GaussianMixture2D(means, stds, weights)
    generator = torch.Generator().manual_seed(int(seed))
    x, component = mixture.sample(int(num_samples), generator=generator)
    return RealData(x=x, labels=component, name=name, mixture=mixture)


def digits_dataset(name: str, seed: int, keep_fraction: Mapping[int, float]) -> RealData:
    """scikit-learn's 8×8 digits; class c keeps the share ``keep_fraction[c]`` of its images
    (drawn from ``seed``), the other classes all."""
    from minority.data.digits import keep_fraction as keep
    from minority.data.digits import load_digits_images

    x, labels = load_digits_images()
    fractions = {int(k): float(v) for k, v in keep_fraction.items()}
    if fractions:
        kept = keep(labels, fractions, seed=int(seed))
        x, labels = x[kept], labels[kept]
    return RealData(x=x, labels=labels, name=name)


def image_dataset(**cfg: Any) -> RealData:
    """Every image of an image ``format``'s dataset, decoded into memory (the keys are those of
    :func:`minority.data.images.build_image_dataset`, which streams the same node)."""
    from minority.data.images import load_image_dataset

    return load_image_dataset(cfg)

"""Datasets as tensors in [−1, 1]: the embedded ones (toy2d, digits) and real image folders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from minority.data.real import RealData
from minority.errors import UserError


def _toy2d(cfg: Mapping[str, Any]) -> RealData:
    from minority.data.toy2d import GaussianMixture2D

    mixture = GaussianMixture2D(cfg["means"], cfg["stds"], cfg["weights"])
    generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    x, component = mixture.sample(int(cfg["num_samples"]), generator=generator)
    return RealData(x=x, labels=component, name="toy2d", mixture=mixture)


def _digits(cfg: Mapping[str, Any]) -> RealData:
    from minority.data.digits import keep_fraction, load_digits_images

    x, labels = load_digits_images()
    fractions = {int(k): float(v) for k, v in (cfg.get("keep_fraction") or {}).items()}
    if fractions:
        kept = keep_fraction(labels, fractions, seed=int(cfg.get("seed", 0)))
        x, labels = x[kept], labels[kept]
    return RealData(x=x, labels=labels, name=str(cfg.get("name", "digits")))


def _images(cfg: Mapping[str, Any]) -> RealData:
    from minority.data.images import load_image_dataset

    return load_image_dataset(cfg)


BUILDERS: dict[str, Callable[[Mapping[str, Any]], RealData]] = {
    "toy2d": _toy2d,
    "digits": _digits,
}


def build_dataset(cfg: Mapping[str, Any]) -> RealData:
    """Build the dataset a ``dataset`` node describes (``source``, else ``name``, picks it)."""
    name = cfg.get("source") or cfg.get("name")
    builder = BUILDERS.get(name, _images if cfg.get("format") else None)
    if builder is None:
        raise UserError(
            f"Unknown dataset '{name}'; choose one of {sorted(BUILDERS)} or give an image 'format'."
        )
    return builder(cfg)

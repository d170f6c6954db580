"""A dataset held in memory, as every data source returns it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass
class RealData:
    """A dataset held in memory.

    Attributes:
        x: float32 (N, 2) points or (N, C, H, W) images, values in about [−1, 1].
        labels: int64 (N,) class / component labels, or None.
        name: the dataset's config name.
        mixture: the exact density for toy2d (a ``GaussianMixture2D``), else None.
    """

    x: Tensor
    labels: Tensor | None
    name: str
    mixture: Any = None

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

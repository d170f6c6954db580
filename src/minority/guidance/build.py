"""What a guidance term's builder is given besides its own config node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TermContext:
    """What the sampling task knows that a guidance term may need.

    Attributes:
        sample_shape: one sample's shape, e.g. (2,) or (3, 64, 64).
        num_steps: T', the respaced number of sampling steps.
        classifier_ckpt: the minority classifier of the stage chain (``paths.classifier_ckpt``).
        diffusion: the ``diffusion`` node (``noise_schedule``, ``diffusion_steps``).
        seed: the run's seed.
    """

    sample_shape: tuple[int, ...]
    num_steps: int
    classifier_ckpt: str | None
    diffusion: Mapping[str, Any]
    seed: int

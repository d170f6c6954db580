"""Every random stream from (seed, index, role), and the noise sources of sampling.

:func:`stream_seed` is the one place a run's ``seed`` becomes a generator seed: numpy's
``SeedSequence`` of (seed, index) with the role as its spawn key, the role's UTF-8 bytes read
as one integer (stable across processes and Python versions, unlike the salted ``hash``).
Streams of the same (seed, index) with different roles are independent, so no stream reuses
another's draws — nor the draws of the run with seed + 1. The streams:

==================  ==========================  =================================================
role                index                       drawn by
==================  ==========================  =================================================
``noise``           global sample / data index  :class:`SeededNoise`: every Gaussian draw of a
                                                sampling trajectory (x_T, ancestral, ddim,
                                                sg_perturb, boost, …) in draw order, and the
                                                minority score's perturbations
``class_label``     global sample index         the label of a class-conditional sample
``target_class``    global sample index         l̃ drawn from a target range (minority guidance)
``shuffle``         epoch                       the training order of streamed data sets
``validation``      batch index                 t and ε of the classifier's validation steps
``augment``         (item index, epoch)         an image's random crop and flip
==================  ==========================  =================================================

``noise`` is the root stream of (seed, index) — the spawn key is empty — so samples and scores
are bitwise those of earlier versions. Drawn from the data set's own ``dataset.seed`` and left
as they were, since they define the data set itself: the toy2d points, the digits kept by
``keep_fraction`` and an image folder's ``max_images`` subset. Training's t, ε and flips come
from the global generators that ``pl.seed_everything(seed)`` seeds per process.

Every random draw in a sampling loop goes through a noise source, tagged with its role
(``x_T``, ``ancestral``, ``ddim``, ``sg_perturb``, …). :class:`SeededNoise` gives sample i its
own generator of stream (seed, i, ``noise``), so sample i receives the same noise whatever the
batch size, the number of processes, or a resume after a crash. :class:`ReplayNoise` serves a
recorded sequence of draws in order, which replays a reference trajectory exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError


class NoiseSource(Protocol):
    """Anything that serves standard normal draws of a batch shape."""

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        """A standard normal tensor of ``shape`` (B, …) for the draw tagged ``role``."""
        ...


NOISE = "noise"


def role_key(role: str) -> int:
    """The role as a non-negative integer: its UTF-8 bytes, big-endian (distinct roles differ)."""
    return int.from_bytes(role.encode("utf-8"), "big")


def stream_seed(seed: int, index: int | Sequence[int], role: str = NOISE) -> int:
    """A well-mixed 63-bit generator seed of stream ``role`` at ``index`` under run ``seed``.

    Args:
        seed: the run's (or data set's) seed, ≥ 0.
        index: where in the stream: a sample, data or batch index, an epoch, or a tuple of
            them (e.g. (item index, epoch)); each ≥ 0.
        role: which stream (module docstring); ``noise``, the sampling noise, is the root.
    """
    position = [index] if isinstance(index, int) else list(index)
    spawn_key = () if role == NOISE else (role_key(role),)
    sequence = np.random.SeedSequence([int(seed), *map(int, position)], spawn_key=spawn_key)
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def stream_generator(
    seed: int, index: int | Sequence[int], role: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`stream_seed` (seed, index, role)."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, index, role))


class SeededNoise:
    """One CPU generator per sample: stream (seed, the sample's global index, ``noise``).

    Draws are made on the CPU in float32 and moved to ``device``, so they are identical on every
    device and for every batch composition.

    Args:
        seed: the run's seed.
        indices: global indices of the samples in this batch, length B.
        device: where the draws are returned.
    """

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.indices = [int(i) for i in indices]
        self.device = torch.device(device)
        self.generators = [stream_generator(seed, i, NOISE) for i in self.indices]

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} samples requested from {len(self.generators)}")
        per_sample = tuple(shape[1:])
        rows = [torch.randn(per_sample, generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device)


class ReplayNoise:
    """Serve a recorded sequence of draws in order, checking roles when they were recorded.

    Args:
        draws: the recorded tensors, in the order they were consumed.
        roles: the role of each draw, or None to skip the check.
    """

    def __init__(self, draws: Sequence[Tensor], roles: Sequence[str] | None = None):
        self.draws = list(draws)
        self.roles = list(roles) if roles is not None else None
        self.position = 0

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        if self.position >= len(self.draws):
            raise UserError(f"The recorded noise ran out at draw {self.position} ('{role}').")
        expected = self.roles[self.position] if self.roles is not None else role
        if expected != role:
            raise UserError(
                f"Recorded draw {self.position} is '{expected}' but the sampler asked for '{role}'."
            )
        draw = self.draws[self.position]
        self.position += 1
        if tuple(draw.shape) != tuple(shape):
            raise UserError(
                f"Recorded draw has shape {tuple(draw.shape)}, expected {tuple(shape)}."
            )
        return draw

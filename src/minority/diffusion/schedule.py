"""β schedules and timestep respacing, with ADM's (guided-diffusion's) exact conventions.

All schedule quantities are float64 numpy arrays. A respaced schedule keeps a subset of the
T original timesteps; ``timestep_map[k]`` is the original timestep of respaced index k — the
one place where indices become timesteps.
"""

from __future__ import annotations

import math

import numpy as np

from minority.errors import UserError, require

MAX_BETA = 0.999


def linear_betas(num_timesteps: int) -> np.ndarray:
    """ADM's linear schedule, scaled so that any T matches the T = 1000 endpoints. (T,)"""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def cosine_alpha_bar(u: float, s: float = 0.008) -> float:
    """ᾱ(u) = cos²(((u + s)/(1 + s))·π/2) for u in [0, 1]."""
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule, β capped at 0.999. (T,)"""
    t = num_timesteps
    return np.array(
        [
            min(1 - cosine_alpha_bar((i + 1) / t) / cosine_alpha_bar(i / t), MAX_BETA)
            for i in range(t)
        ],
        dtype=np.float64,
    )


BETA_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def get_betas(name: str, num_timesteps: int) -> np.ndarray:
    """β_1..β_T of a named schedule ("linear" or "cosine"), float64 (T,)."""
    if name not in BETA_SCHEDULES:
        raise UserError(f"Unknown noise schedule '{name}'; choose one of {sorted(BETA_SCHEDULES)}.")
    require(num_timesteps > 0, "diffusion_steps must be positive.")
    return BETA_SCHEDULES[name](num_timesteps)


def _section_steps(size: int, count: int) -> list[int]:
    """``count`` indices spread over range(size), first and last included (round half even)."""
    if count == 1:
        return [0]
    stride = (size - 1) / (count - 1)
    position, steps = 0.0, []
    for _ in range(count):
        steps.append(round(position))
        position += stride
    return steps


def _ddim_stride(num_timesteps: int, count: int) -> int:
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == count:
            return stride
    raise UserError(f"Cannot make {count} evenly strided DDIM steps out of {num_timesteps}.")


def space_timesteps(num_timesteps: int, spec: str | int | None) -> list[int]:
    """Original timesteps kept by a respacing ``spec``, sorted ascending.

    Forms (as guided-diffusion): ``""``/None = all T steps; ``"250"`` = 250 steps spread evenly
    with first and last kept; ``"10,20"`` = the T steps cut into equal sections with 10 and 20
    steps each; ``"ddim50"`` = ``range(0, T, stride)`` with exactly 50 steps.
    """
    if spec is None or str(spec).strip() == "":
        return list(range(num_timesteps))
    spec = str(spec).strip()
    if spec.startswith("ddim"):
        count = _parse_count(spec[4:], spec)
        return list(range(0, num_timesteps, _ddim_stride(num_timesteps, count)))
    counts = [_parse_count(part, spec) for part in spec.split(",")]
    sizes = [
        num_timesteps // len(counts) + (i < num_timesteps % len(counts)) for i in range(len(counts))
    ]
    kept, start = [], 0
    for size, count in zip(sizes, counts, strict=True):
        require(count <= size, f"Cannot take {count} steps from a section of {size} in '{spec}'.")
        kept.extend(start + step for step in _section_steps(size, count))
        start += size
    return sorted(set(kept))


def _parse_count(text: str, spec: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise UserError(
            f"Bad timestep respacing '{spec}': use e.g. '250', '10,20' or 'ddim50'."
        ) from None
    require(count > 0, f"Bad timestep respacing '{spec}': step counts must be positive.")
    return count

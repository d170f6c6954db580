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


def linear_betas(
    num_timesteps: int, beta_start: float | None = None, beta_end: float | None = None
) -> np.ndarray:
    """β linear in t from ``beta_start`` to ``beta_end`` (diffusers' "linear"). Without
    endpoints, ADM's: 0.0001 and 0.02 scaled by 1000 / T, so that any T matches T = 1000. (T,)"""
    if beta_start is None or beta_end is None:
        scale = 1000 / num_timesteps
        beta_start, beta_end = scale * 0.0001, scale * 0.02
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """√β linear in t from √beta_start to √beta_end (diffusers' "scaled_linear"). (T,)"""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


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


BETA_SCHEDULES = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "scaled_linear": scaled_linear_betas,
}
# How many endpoints (β_start, β_end) each schedule name may carry after ':'.
ENDPOINT_COUNTS = {"linear": (0, 2), "cosine": (0,), "scaled_linear": (2,)}
SCHEDULE_FORMS = (
    "'linear', 'cosine', 'linear:<beta_start>:<beta_end>' "
    "or 'scaled_linear:<beta_start>:<beta_end>'"
)


def get_betas(name: str, num_timesteps: int) -> np.ndarray:
    """β_1..β_T of a named schedule, float64 (T,).

    Names: "linear" and "cosine" (ADM's; "cosine" is diffusers' "squaredcos_cap_v2"), and with
    explicit endpoints "linear:<β_start>:<β_end>" or "scaled_linear:<β_start>:<β_end>"
    (diffusers' "linear" and "scaled_linear", e.g. "linear:0.0001:0.02").
    """
    kind, *ends = str(name).split(":")
    if len(ends) not in ENDPOINT_COUNTS.get(kind, ()):
        raise UserError(f"Unknown noise schedule '{name}'; use {SCHEDULE_FORMS}.")
    require(num_timesteps > 0, "diffusion_steps must be positive.")
    try:
        endpoints = [float(end) for end in ends]
    except ValueError:
        raise UserError(f"Bad noise schedule '{name}': its endpoints must be numbers.") from None
    require(
        all(0 < beta < 1 for beta in endpoints),
        f"Bad noise schedule '{name}': its endpoints must be in (0, 1).",
    )
    return BETA_SCHEDULES[kind](num_timesteps, *endpoints)


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
    steps each; ``"ddim50"`` = ``range(0, T, stride)`` with exactly 50 steps. diffusers'
    ``timestep_spacing`` with N steps: ``"leading50"`` (``"leading50+1"`` with steps_offset 1),
    ``"trailing50"`` and ``"linspace50"``.
    """
    if spec is None or str(spec).strip() == "":
        return list(range(num_timesteps))
    spec = str(spec).strip()
    spacing = next((name for name in DIFFUSERS_SPACINGS if spec.startswith(name)), None)
    if spacing is not None:
        return _diffusers_spacing(num_timesteps, spacing, spec)
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


DIFFUSERS_SPACINGS = ("leading", "trailing", "linspace")


def _diffusers_spacing(num_timesteps: int, spacing: str, spec: str) -> list[int]:
    """diffusers' N timesteps, ascending: leading i·⌊T/N⌋ + offset, trailing
    round(T − i·T/N) − 1, linspace round(i·(T−1)/(N−1)), for i = 0..N−1."""
    count_text, plus, offset_text = spec[len(spacing) :].partition("+")
    count = _parse_count(count_text, spec)
    require(count <= num_timesteps, f"Cannot take {count} steps from {num_timesteps} in '{spec}'.")
    require(not plus or spacing == "leading", f"Only leading spacing takes an offset ('{spec}').")
    require(
        not plus or offset_text.isdigit(),
        f"Bad timestep respacing '{spec}': the steps_offset after '+' is a whole number.",
    )
    offset = int(offset_text) if plus else 0
    if spacing == "leading":
        steps = np.arange(count) * (num_timesteps // count) + offset
    elif spacing == "trailing":
        steps = np.round(np.arange(num_timesteps, 0, -num_timesteps / count)) - 1
    else:
        steps = np.linspace(0, num_timesteps - 1, count).round()
    require(
        int(steps.max()) < num_timesteps,
        f"Respacing '{spec}' reaches past the last timestep {num_timesteps - 1}.",
    )
    return sorted({int(step) for step in steps})


def _parse_count(text: str, spec: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise UserError(
            f"Bad timestep respacing '{spec}': use e.g. '250', '10,20' or 'ddim50'."
        ) from None
    require(count > 0, f"Bad timestep respacing '{spec}': step counts must be positive.")
    return count

"""The generic sampling loop: x_T, the init skip, guidance firing, the NaN check, the callback.

Each step rule is a :class:`~minority.sampling.base.Sampler` (ancestral :class:`DDPM`,
:class:`DDIM` (η), :class:`DPMSolverPP2M`), which owns how a guidance direction enters its step.
The loop draws x_T (role ``x_T``) from the init policy, walks the respaced indices from
T'−1−Δt down to 0, passes the guide to the steps where its schedule fires (never for w = 0, so
a zero scale is exactly the unguided run) and checks every x_{i−1} for NaN / ±inf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from minority.diffusion.gaussian import GaussianDiffusion
from minority.errors import UserError
from minority.guidance.base import Guide
from minority.models.denoiser import Denoiser
from minority.sampling.base import Sampler, StepOutput
from minority.sampling.ddpm import DDPM
from minority.sampling.init import Initialisation
from minority.seeding import NoiseSource


class NonFiniteSamples(UserError):
    """The reverse process produced NaN or ±inf (a setting drove it off every scale)."""


def check_finite(x: Tensor, where: str) -> None:
    """Raise :class:`NonFiniteSamples` naming ``where`` unless every value of x (B, …) is finite.

    The message is a clause without a final period, for callers to extend.
    """
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteSamples(
            f"{int((~finite).sum())} of {len(x)} samples became non-finite (NaN or ±inf) {where}"
        )


def sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: NoiseSource,
    sampler: Sampler | None = None,
    guide: Guide | None = None,
    init: Initialisation | None = None,
    y: Tensor | None = None,
    progress: bool = False,
    callback: Callable[[int, StepOutput], None] | None = None,
) -> Tensor:
    """Run the reverse process from x_T to x_0.

    Args:
        denoiser: ε-prediction model (:class:`Denoiser`).
        diffusion: the respaced diffusion; its T' steps are walked from T'−1 down to 0.
        shape: (B, …) of the samples.
        noise: source of every draw (:mod:`minority.seeding`).
        sampler: the step rule; None = :class:`DDPM` with x̂0 clipped. Its multistep state is
            fresh for every call.
        guide: guidance term and weight schedule, or None.
        init: initial-noise policy (Boost-and-Skip); None = x_T ~ N(0, I), no skip.
        y: class labels for a class-conditional model, int64 (B,).
        progress: show a progress bar.
        callback: called as ``callback(i, step_output)`` after every step.

    Returns:
        x_0, shape ``shape``; in [−1, 1] for DDPM without guidance at the last step.

    Raises:
        NonFiniteSamples: x became NaN or ±inf; the message names the step.
    """
    sampler = sampler or DDPM()
    init = init or Initialisation()
    trajectory = sampler.trajectory(denoiser, diffusion, noise, y)
    num_steps = diffusion.num_timesteps
    x = init.initial_noise(noise, shape)
    check_finite(x, "in the initial noise x_T")
    indices = range(init.start_index(num_steps), -1, -1)
    # disable=None: no bar when the output is not a terminal (no escape codes in log files)
    desc = f"{sampler.name} sampling"
    bar = tqdm(indices, disable=None if progress else True, desc=desc, leave=False)
    # w = 0 never fires: its shift is 0, but the term's own draws would shift the noise stream
    active = guide is not None and guide.schedule.scale > 0
    for i in bar:
        fires = active and guide.schedule.fires(i, num_steps)
        out = sampler.step(trajectory, x, i, guide if fires else None)
        x = out.x_prev.detach()
        check_finite(
            x,
            f"at respaced step {i} of {num_steps} (original timestep {diffusion.timestep_map[i]})",
        )
        if callback is not None:
            callback(i, out)
    return x

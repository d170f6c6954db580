"""Ancestral sampling (Ho et al. 2020, Algorithm 2) with guidance as a shift of the mean.

Per step i (respaced; t = map[i] for the network): x̂0 from ε_θ(x_i, t) (Tweedie, clipped when
asked), μ = posterior mean of q(x_{i−1} | x_i, x̂0), x_{i−1} = μ + 1[i≠0]·σ_i·z.

Guidance (Dhariwal & Nichol 2021, Algorithm 1, guided-diffusion's ``condition_mean``):

* ``var``:   μ ← μ + w·Σ_i·g, with Σ_i guided-diffusion's ``variance``: exp of the model's
  log-variance for learned-range models, the posterior variance β̃_i for fixed_small (0 at
  i = 0, so the last step is not guided; the clipped log-variance, which sets the noise scale,
  would add β̃_1·w·g there), β for fixed_large;
* ``fixed``: μ ← μ + w·g.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from minority.guidance.base import WeightSchedule
from minority.sampling.base import Sampler, StepOutput, Trajectory, not_last

if TYPE_CHECKING:
    from minority.guidance.base import Guide


def mean_shift(g: Tensor, schedule: WeightSchedule, variance: Tensor) -> Tensor:
    """The shift of μ: w·Σ·g ("var") or w·g ("fixed"); Σ broadcastable to g."""
    scaled = g * schedule.scale
    return variance * scaled if schedule.kind == "var" else scaled


class DDPM(Sampler):
    """Ancestral DDPM steps (draws role ``ancestral`` once per step, also at i = 0).

    Args:
        clip_denoised: clip x̂0 to [−1, 1] before the posterior mean.
    """

    name = "ddpm"

    def step(
        self, trajectory: Trajectory, x: Tensor, i: int, guide: Guide | None = None
    ) -> StepOutput:
        diffusion = trajectory.diffusion
        # ε_θ(x_i, t) and x̂0 = (x_i − √(1−ᾱ_i) ε_θ)/√ᾱ_i  (Ho et al. eq. 15)
        model = self.evaluate(trajectory, x, i, guide)
        x, k = model.x.detach(), model.k
        z = trajectory.noise.randn("ancestral", x.shape)
        # μ̃(x_i, x̂0) = c1·x̂0 + c2·x_i, the posterior mean (Ho et al. eq. 7)
        mean = diffusion.posterior_mean(model.pred_xstart, x, k)
        if guide is not None:
            # μ ← μ + w·Σ·g  (Dhariwal & Nichol, Algorithm 1)
            g = model.direction(trajectory, guide)
            mean = mean + mean_shift(g, guide.schedule, model.variance)
        # x_{i−1} = μ + σ_i·z, no noise at the last step  (Algorithm 2, line 4)
        x_prev = mean + not_last(k, x) * (0.5 * model.log_variance).exp() * z
        return StepOutput(x_prev, model.pred_xstart)

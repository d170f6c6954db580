"""DDIM(η) (Song, Meng, Ermon 2021, eq. 12) with guidance as a shift of ε.

Per step i (respaced; ᾱ = ᾱ_i, ᾱ' = ᾱ_{i−1}, ᾱ' = 1 at i = 0): x̂0 from ε_θ (clipped when asked)
and the ε consistent with it, then

    σ = η·√((1−ᾱ')/(1−ᾱ))·√(1−ᾱ/ᾱ'),
    x_{i−1} = √ᾱ'·x̂0 + √(1−ᾱ'−σ²)·ε + 1[i≠0]·σ·z.

Guidance shifts ε; x̂0 and ε are then re-derived from the shifted ε (guided-diffusion's
``condition_score`` followed by ``ddim_sample``):

* ``var``:   ε ← ε − √(1−ᾱ)·w·g  (w·g added to the score ∇ log p = −ε/√(1−ᾱ));
* ``fixed``: ε ← ε + w·g / c, with c = √(1−ᾱ') − √ᾱ'·√(1−ᾱ)/√ᾱ = ∂x_{i−1}/∂ε of the η = 0
  update, so that x_{i−1} moves by exactly w·g as in DDPM's ``fixed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from minority.errors import require
from minority.guidance.base import WeightSchedule
from minority.sampling.base import Sampler, StepOutput, Trajectory, not_last

if TYPE_CHECKING:
    from minority.guidance.base import Guide


def eps_shift(
    g: Tensor, schedule: WeightSchedule, alpha_bar: Tensor, alpha_bar_prev: Tensor
) -> Tensor:
    """The shift of ε (module docstring); ᾱ_i and ᾱ_{i−1} broadcastable to g."""
    scaled = g * schedule.scale
    if schedule.kind == "var":
        return -(1 - alpha_bar).sqrt() * scaled
    c = (1 - alpha_bar_prev).sqrt() - alpha_bar_prev.sqrt() * (
        1 - alpha_bar
    ).sqrt() / alpha_bar.sqrt()
    return scaled / c


class DDIM(Sampler):
    """DDIM steps with stochasticity η (draws role ``ddim`` once per step, also when η = 0).

    Args:
        eta: η ∈ [0, 1]; 0 is deterministic, 1 has DDPM's fixed_large-like noise level.
        clip_denoised: clip x̂0 to [−1, 1] before the update.
    """

    name = "ddim"

    def __init__(self, eta: float = 0.0, clip_denoised: bool = True) -> None:
        super().__init__(clip_denoised)
        require(0 <= eta <= 1, f"sampler.eta must lie in [0, 1] (got {eta}).")
        self.eta = float(eta)

    def step(
        self, trajectory: Trajectory, x: Tensor, i: int, guide: Guide | None = None
    ) -> StepOutput:
        diffusion = trajectory.diffusion
        # ε_θ(x_i, t), x̂0 (clipped) and the ε consistent with it
        model = self.evaluate(trajectory, x, i, guide)
        x, k, pred_xstart = model.x.detach(), model.k, model.pred_xstart
        z = trajectory.noise.randn("ddim", x.shape)
        alpha_bar = diffusion.gather(diffusion.alphas_cumprod, k, x)
        alpha_bar_prev = diffusion.gather(diffusion.alphas_cumprod_prev, k, x)
        eps = diffusion.pred_eps(x, k, pred_xstart)
        if guide is not None:
            # ε ← ε + shift(w·g), then x̂0 and ε from the shifted ε  (condition_score)
            g = model.direction(trajectory, guide)
            eps = eps + eps_shift(g, guide.schedule, alpha_bar, alpha_bar_prev)
            pred_xstart = diffusion.pred_xstart(x, k, eps)
            eps = diffusion.pred_eps(x, k, pred_xstart)
        # σ_i(η)  (Song et al. eq. 16)
        sigma = (
            self.eta
            * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt()
            * (1 - alpha_bar / alpha_bar_prev).sqrt()
        )
        # x_{i−1} = √ᾱ'·x̂0 + √(1−ᾱ'−σ²)·ε + σ·z  (Song et al. eq. 12)
        mean = pred_xstart * alpha_bar_prev.sqrt() + (1 - alpha_bar_prev - sigma**2).sqrt() * eps
        return StepOutput(mean + not_last(k, x) * sigma * z, pred_xstart)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "sampler.eta": self.eta}

"""Self-guided minority sampling (Um & Ye, ECCV 2024): ascend the model's own reconstruction loss.

At a guided step with current x_t (respaced index k):

1. x̂0 = Tweedie(x_t) from the step's ε_θ(x_t, t), **with** gradient (clipped only when asked).
2. For m = 1..M: x̂_s = √ᾱ_s·sg(x̂0) + √(1−ᾱ_s)·z_m with a fresh z_m (role ``sg_perturb``, drawn
   after the step's own noise) and x̂̂0_m = sg(Tweedie(x̂_s) at s), sg = stop-gradient.
3. L̃ = (1/M) Σ_m d(x̂0, x̂̂0_m), per sample; d = LPIPS-AlexNet (the authors' default) or a plain
   distance (``"l2"`` = not-squared norm of the flattened difference).
4. g = ∇_{x_t} Σ_b L̃_b: one backward through the step's own forward pass (no second forward at
   x_t), then g_b / max|g_b| per sample (ℓ∞, no epsilon) unless ``normalize`` is off; a
   sample whose gradient is exactly zero keeps a zero direction (the authors' 0/0 gives NaN:
   with ``clip_denoised`` every clipped element has zero gradient, so near t = T, where the
   unclipped x̂0 is ≈ 1e4 and clips everywhere, g vanishes).

The weight schedule (:class:`~minority.guidance.base.WeightSchedule`) turns g into the shift:
μ + w·Σ_θ·g ("var", the authors' default) or μ + w·g ("fixed"); its sign is + (lower likelihood).

The perturbation time s is either ``p_ratio`` of the respaced grid, k_s = ⌊T'·p_ratio⌋ (the
authors' form: 0.8 of 250 steps is index 200, original timestep 802), or an original timestep
``perturb_t`` (ᾱ_s then from the original schedule, the same for any respacing).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion
from minority.errors import require
from minority.guidance.base import GuidanceContext
from minority.scores.distances import Distance, build_distance


def _tile(x: Tensor, m: int) -> Tensor:
    """``m`` copies of a batch stacked on the batch axis: (B, …) -> (m·B, …)."""
    return x.repeat(m, *([1] * (x.ndim - 1)))


class SelfGuidance:
    """The self-guidance direction g (module docstring); a :class:`GuidanceTerm`.

    Args:
        distance: d(x̂0, x̂̂0) -> (B,): a name for :func:`build_distance` ("lpips-alex",
            "lpips-vgg", "lpips-squeeze", "l2", "mse", "l1") or a callable.
        p_ratio: perturbation time as a fraction of the respaced grid, in (0, 1).
        perturb_t: perturbation time as an original timestep in [0, T); replaces ``p_ratio``.
        num_mc_samples: M ≥ 1 draws of x̂_s, denoised together in one batched call.
        normalize: divide g by its per-sample max |g| (the authors' ``use_normed_grad``); a
            zero gradient gives a zero direction.
        clip_denoised: clip both x̂0 and x̂̂0 to [−1, 1] (the authors' ``mg_clip_denoised``).
        lpips_weights: file or folder of the LPIPS trunk's weights (None: standard caches).

    Raises:
        UserError: p_ratio outside (0, 1), M < 1, negative perturb_t, unknown distance, or
            LPIPS trunk weights that cannot be found.
    """

    needs_graph = True

    def __init__(
        self,
        distance: str | Distance = "lpips-alex",
        p_ratio: float = 0.8,
        perturb_t: int | None = None,
        num_mc_samples: int = 1,
        normalize: bool = True,
        clip_denoised: bool = False,
        lpips_weights: str | None = None,
    ) -> None:
        require(0 < p_ratio < 1, f"p_ratio must lie strictly between 0 and 1 (got {p_ratio}).")
        require(
            int(num_mc_samples) >= 1,
            f"num_mc_samples must be at least 1 (got {num_mc_samples}).",
        )
        require(
            perturb_t is None or int(perturb_t) >= 0,
            f"perturb_t must be a non-negative original timestep (got {perturb_t}).",
        )
        self.p_ratio = float(p_ratio)
        self.perturb_t = None if perturb_t is None else int(perturb_t)
        self.num_mc_samples = int(num_mc_samples)
        self.normalize = normalize
        self.clip_denoised = clip_denoised
        self.distance = (
            build_distance(distance, lpips_weights) if isinstance(distance, str) else distance
        )

    def perturbation(self, diffusion: GaussianDiffusion) -> tuple[GaussianDiffusion, int, int]:
        """(grid, index of s on that grid, original timestep of s) for this diffusion."""
        if self.perturb_t is None:
            k_s = int(diffusion.num_timesteps * self.p_ratio)
            return diffusion, k_s, diffusion.timestep_map[k_s]
        require(
            self.perturb_t < diffusion.num_original_timesteps,
            f"perturb_t {self.perturb_t} is not below the {diffusion.num_original_timesteps} "
            "training timesteps.",
        )
        return diffusion.original(), self.perturb_t, self.perturb_t

    def _tweedie(self, diffusion: GaussianDiffusion, x: Tensor, k: Tensor, eps: Tensor) -> Tensor:
        x0 = diffusion.pred_xstart(x, k, eps)
        return x0.clamp(-1, 1) if self.clip_denoised else x0

    def reconstruction(self, ctx: GuidanceContext, x0: Tensor) -> Tensor:
        """x̂̂0 for M fresh draws, stacked on the batch axis: (M·B, …), no gradient.

        Args:
            ctx: the step's context (its noise source and denoiser are used).
            x0: x̂0 of the step, (B, …); only its value is used.
        """
        grid, k_s, t_s = self.perturbation(ctx.diffusion)
        draws = [ctx.noise.randn("sg_perturb", ctx.x.shape) for _ in range(self.num_mc_samples)]
        x0 = _tile(x0.detach(), self.num_mc_samples)
        k = torch.full((x0.shape[0],), k_s, dtype=torch.int64, device=x0.device)
        y = None if ctx.y is None else _tile(ctx.y, self.num_mc_samples)
        with torch.no_grad():
            x_s = grid.q_sample(x0, k, torch.cat(draws).to(x0))
            eps_s = ctx.denoiser(x_s, torch.full_like(k, t_s), y).eps
            return self._tweedie(grid, x_s, k, eps_s)

    def loss(self, x0: Tensor, x0_hat: Tensor) -> Tensor:
        """L̃ = mean over the M draws of d(x̂0, x̂̂0_m): x0 (B, …), x0_hat (M·B, …) -> (B,)."""
        if isinstance(self.distance, nn.Module):
            self.distance.to(x0.device)
        per_draw = self.distance(_tile(x0, self.num_mc_samples), x0_hat)
        return per_draw.reshape(self.num_mc_samples, x0.shape[0]).T.mean(dim=-1)

    def direction(self, ctx: GuidanceContext) -> Tensor:
        """g = ∇_{x_t} Σ_b L̃_b (ℓ∞-normalised per sample when ``normalize``), detached."""
        with torch.enable_grad():
            x0 = self._tweedie(ctx.diffusion, ctx.x, ctx.k, ctx.eps)
            x0_hat = self.reconstruction(ctx, x0)
            (g,) = torch.autograd.grad(self.loss(x0, x0_hat).sum(), ctx.x)
        if self.normalize:
            g = linf_normalise(g)
        return g.detach()


def linf_normalise(g: Tensor) -> Tensor:
    """g_b / max|g_b| per sample (B, …) -> (B, …), max |·| = 1; an all-zero g_b stays zero."""
    peak = g.abs().amax(dim=tuple(range(1, g.ndim)), keepdim=True)
    return g / torch.where(peak > 0, peak, torch.ones_like(peak))

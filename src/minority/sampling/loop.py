"""The sampling loop: ancestral DDPM, DDIM(η) or DPM-Solver++(2M) steps, with optional guidance
and init policy.

One loop serves the three step rules. Per step (respaced index i, original timestep t = map[i]):

1. ε_θ (and v) at (x_i, t); x̂0 = Tweedie, clipped to [−1, 1] when ``clip_denoised``.
2. the step's own noise is drawn (role ``ancestral`` or ``ddim``; drawn even when unused;
   DPM-Solver++ draws none).
3. if the schedule fires, the guidance direction g shifts μ (DDPM) or ε (DDIM, DPM-Solver++,
   which re-derive x̂0 from the shifted ε).
4. DDPM: x_{i−1} = μ + 1[i≠0]·σ·z.  DDIM: x_{i−1} = √ᾱ_{i−1} x̂0 + √(1−ᾱ_{i−1}−σ²) ε + 1[i≠0]·σ·z.
   DPM-Solver++(2M): the multistep update of :mod:`minority.sampling.dpm_solver` from x̂0.

When the guidance term differentiates through ε_θ (self-guidance), step 1's forward pass is
made with gradient and reused by the term: no second forward at x_i.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from minority.diffusion.gaussian import GaussianDiffusion
from minority.errors import UserError, require
from minority.guidance.base import GuidanceContext, Guide
from minority.models.denoiser import Denoiser
from minority.sampling.dpm_solver import DPMSolverPP2M
from minority.sampling.init import Initialisation
from minority.seeding import NoiseSource

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")


class NonFiniteSamples(UserError):
    """The reverse process produced NaN or ±inf (a setting drove it off every scale)."""


def check_sampler(sampler: str, eta: float) -> None:
    """Raise :class:`UserError` for an unknown sampler or η outside [0, 1] (NaN included)."""
    if sampler not in SAMPLERS:
        raise UserError(f"Unknown sampler '{sampler}'; choose one of {SAMPLERS}.")
    require(0 <= eta <= 1, f"sampler.eta must lie in [0, 1] (got {eta}).")


def check_finite(x: Tensor, where: str) -> None:
    """Raise :class:`NonFiniteSamples` naming ``where`` unless every value of x (B, …) is finite.

    The message is a clause without a final period, for callers to extend.
    """
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteSamples(
            f"{int((~finite).sum())} of {len(x)} samples became non-finite (NaN or ±inf) {where}"
        )


@dataclass
class StepOutput:
    """One step's result. x_prev: x_{i−1}; pred_xstart: the (clipped) x̂0 it used."""

    x_prev: Tensor
    pred_xstart: Tensor


def _predict(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: Tensor,
    k: Tensor,
    y: Tensor | None,
    graph: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Forward pass at x_i. Returns (x_in, ε, v); x_in requires grad when ``graph``."""
    x_in = x.detach().requires_grad_(graph)
    with torch.set_grad_enabled(graph):
        out = denoiser(x_in, diffusion.original_timestep(k), y)
    return x_in, out.eps, out.var_values


def _nonzero(k: Tensor, like: Tensor) -> Tensor:
    return (k != 0).to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def step(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: Tensor,
    i: int,
    noise: NoiseSource,
    sampler: str = "ddpm",
    eta: float = 0.0,
    guide: Guide | None = None,
    clip_denoised: bool = True,
    y: Tensor | None = None,
    solver: DPMSolverPP2M | None = None,
) -> StepOutput:
    """One reverse step from respaced index ``i``; ``guide`` given only when it fires here;
    ``solver``: the trajectory's DPM-Solver++ state, needed when ``sampler`` is "dpmpp2m"."""
    require(sampler != "dpmpp2m" or solver is not None, "dpmpp2m steps need their solver.")
    k = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
    graph = guide is not None and guide.term.needs_graph
    x_in, eps_graph, var_values = _predict(denoiser, diffusion, x, k, y, graph)
    eps = eps_graph.detach()
    x = x.detach()
    pred_xstart = diffusion.pred_xstart(x, k, eps)
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    log_variance = diffusion.log_variance(k, x, None if var_values is None else var_values.detach())
    if sampler != "dpmpp2m":
        z = noise.randn("ancestral" if sampler == "ddpm" else "ddim", x.shape)

    def direction() -> Tensor:
        ctx = GuidanceContext(
            x_in,
            k,
            diffusion.original_timestep(k),
            eps_graph,
            log_variance,
            diffusion,
            denoiser,
            noise,
            y,
        )
        return guide.term.direction(ctx)

    if sampler == "ddpm":
        mean = diffusion.posterior_mean(pred_xstart, x, k)
        if guide is not None:
            mean = mean + guide.schedule.mean_shift(direction(), log_variance)
        x_prev = mean + _nonzero(k, x) * torch.exp(0.5 * log_variance) * z
        return StepOutput(x_prev, pred_xstart)
    alpha_bar = diffusion.gather(diffusion.alphas_cumprod, k, x)
    alpha_bar_prev = diffusion.gather(diffusion.alphas_cumprod_prev, k, x)
    eps = diffusion.pred_eps(x, k, pred_xstart)
    if guide is not None:
        eps = eps + guide.schedule.eps_shift(direction(), alpha_bar, alpha_bar_prev)
        pred_xstart = diffusion.pred_xstart(x, k, eps)
        eps = diffusion.pred_eps(x, k, pred_xstart)
    if solver is not None:  # diffusers' order: guided ε → x̂0 → clipped (thresholding)
        pred_xstart = pred_xstart.clamp(-1, 1) if clip_denoised else pred_xstart
        return StepOutput(solver.step(x, i, pred_xstart), pred_xstart)
    sigma = (
        eta
        * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
        * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    )
    mean = (
        pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    )
    return StepOutput(mean + _nonzero(k, x) * sigma * z, pred_xstart)


def sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: NoiseSource,
    sampler: str = "ddpm",
    eta: float = 0.0,
    guide: Guide | None = None,
    init: Initialisation | None = None,
    clip_denoised: bool = True,
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
        sampler: "ddpm" (ancestral), "ddim" or "dpmpp2m" (DPM-Solver++(2M), draws no noise).
        eta: DDIM's η (0 = deterministic); must be 0 for "dpmpp2m".
        guide: guidance term and weight schedule, or None.
        init: initial-noise policy (Boost-and-Skip); None = x_T ~ N(0, I), no skip.
        clip_denoised: clip x̂0 to [−1, 1] on the main path (as the official samplers do).
        y: class labels for a class-conditional model, int64 (B,).
        progress: show a progress bar.
        callback: called as ``callback(i, step_output)`` after every step.

    Returns:
        x_0, shape ``shape``; in [−1, 1] for DDPM without guidance at the last step.

    Raises:
        NonFiniteSamples: x became NaN or ±inf; the message names the step.
    """
    check_sampler(sampler, eta)
    require(sampler != "dpmpp2m" or eta == 0, f"dpmpp2m draws no noise: eta must be 0 (got {eta}).")
    solver = DPMSolverPP2M(diffusion) if sampler == "dpmpp2m" else None
    init = init or Initialisation()
    num_steps = diffusion.num_timesteps
    x = init.initial_noise(noise, shape)
    check_finite(x, "in the initial noise x_T")
    indices = range(init.start_index(num_steps), -1, -1)
    # disable=None: no bar when the output is not a terminal (no escape codes in log files)
    bar = tqdm(indices, disable=None if progress else True, desc=f"{sampler} sampling", leave=False)
    for i in bar:
        fires = guide is not None and guide.schedule.fires(i, num_steps)
        out = step(
            denoiser,
            diffusion,
            x,
            i,
            noise,
            sampler,
            eta,
            guide if fires else None,
            clip_denoised,
            y,
            solver,
        )
        x = out.x_prev.detach()
        check_finite(
            x,
            f"at respaced step {i} of {num_steps} (original timestep {diffusion.timestep_map[i]})",
        )
        if callback is not None:
            callback(i, out)
    return x

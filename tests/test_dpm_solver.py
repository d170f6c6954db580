"""DPM-Solver++(2M) against closed forms: the probability-flow ODE of Gaussian data, the ε shift
of guidance, Boost-and-Skip as a shorter grid, batch-size invariance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from closed_forms import ConstantTerm, GaussianEps
from torch import Tensor

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.guidance.base import GuidanceContext, Guide, WeightSchedule
from minority.guidance.self_guidance import SelfGuidance
from minority.models.denoiser import Denoiser
from minority.sampling.ddim import DDIM
from minority.sampling.dpm_solver import MIN_STEP_RATIO, DPMSolverPP2M, LogSNRGrid, step_ratio
from minority.sampling.init import Initialisation
from minority.sampling.loop import sample
from minority.seeding import ReplayNoise, SeededNoise

MEAN, STD = 0.3, 0.5
SOLVERS = {"ddim": DDIM(clip_denoised=False), "dpmpp2m": DPMSolverPP2M(clip_denoised=False)}
UNCLIPPED = SOLVERS["dpmpp2m"]


def exact_flow(diffusion: GaussianDiffusion, x_T: Tensor) -> Tensor:
    """The probability-flow ODE's x_0 from x_T for N(MEAN, STD²) data: the marginals
    N(√ᾱ μ, ᾱ s² + 1 − ᾱ) are carried into each other by the affine map that keeps
    (x − √ᾱ μ)/√(ᾱ s² + 1 − ᾱ)."""
    a = diffusion.alphas_cumprod[-1]
    return MEAN + STD * (x_T - math.sqrt(a) * MEAN) / math.sqrt(a * STD**2 + 1 - a)


def solve(sampler: str, grid: str, x_T: Tensor) -> tuple[GaussianDiffusion, Tensor]:
    """x_0 of ``sampler`` (η = 0) from x_T with the exact denoiser, float64, cosine ``grid``."""
    diffusion = build_diffusion("cosine", 1000, grid)
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN)).double()
    steps = diffusion.num_timesteps
    draws = [torch.zeros_like(x_T)] * steps if sampler == "ddim" else []
    noise = ReplayNoise([x_T, *draws])
    x = sample(denoiser, diffusion, x_T.shape, noise, SOLVERS[sampler])
    assert noise.position == 1 + len(draws)  # DPM-Solver++ draws nothing after x_T
    return diffusion, x


def flow_error(sampler: str, grid: str) -> float:
    """Largest |x_0 − exact| over x_T ∈ [−3, 3]."""
    x_T = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    diffusion, x = solve(sampler, grid, x_T)
    return (x - exact_flow(diffusion, x_T)).abs().max().item()


@pytest.mark.parametrize("grid", ["{}", "trailing{}"])
def test_gaussian_flow_error_falls_far_below_ddim(grid: str) -> None:
    """Max error over x_T ∈ [−3, 3] at 20 / 40 / 80 / 160 steps: DDIM's halves per doubling
    (first order); DPM-Solver++(2M)'s falls with every doubling and stays ≥ 15× below DDIM's."""
    errors = {
        sampler: [flow_error(sampler, grid.format(steps)) for steps in (20, 40, 80, 160)]
        for sampler in ("ddim", "dpmpp2m")
    }
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errors["ddim"])]
    assert all(abs(order - 1) < 0.1 for order in orders), (errors, orders)
    assert all(a > b for a, b in itertools.pairwise(errors["dpmpp2m"])), errors
    assert all(d > 15 * e for d, e in zip(errors["ddim"], errors["dpmpp2m"], strict=True)), errors


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("steps", [10, 20, 25, 100])
def test_only_the_long_step_to_t0_of_a_uniform_grid_drops_to_first_order(schedule, steps) -> None:
    """r = h'/h from the grid's λ: guided-diffusion's uniform grid ends with t_1 → 0, a λ-step
    over twice the one before (r < ½); every other step, and every step of a trailing grid,
    has r > ½."""
    for grid, long_steps in ((str(steps), [1]), (f"trailing{steps}", [])):
        diffusion = build_diffusion(schedule, 1000, grid)
        a = diffusion.alphas_cumprod
        lam = 0.5 * np.log(a / (1 - a))  # λ_i; step i goes from λ_i to λ_{i−1}
        ratios = {i: (lam[i] - lam[i + 1]) / (lam[i - 1] - lam[i]) for i in range(1, steps - 1)}
        log_snr = LogSNRGrid.of(diffusion)
        for i, r in ratios.items():
            assert step_ratio(log_snr, i, float(lam[i + 1])) == pytest.approx(r)
        assert [i for i, r in ratios.items() if r < MIN_STEP_RATIO] == long_steps, (grid, ratios)


def test_first_order_long_step_cuts_the_uniform_grid_error() -> None:
    """The uniform grid's long last λ-step taken at first order: the Gaussian flow's error at
    10 / 20 steps stays within 1.3× / 1.1× the trailing grid's (second order there gave 0.43 /
    0.15, 6× / 33× the trailing grid's)."""
    for steps, bound in ((10, 1.3), (20, 1.1)):
        uniform = flow_error("dpmpp2m", str(steps))
        trailing = flow_error("dpmpp2m", f"trailing{steps}")
        assert uniform < bound * trailing, (steps, uniform, trailing)


def test_first_step_is_ddim_and_the_rest_differ() -> None:
    diffusion = build_diffusion("cosine", 1000, "10")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    x_T = SeededNoise(1, range(8)).randn("x_T", (8, 2))
    runs = {}
    for sampler in ("ddim", "dpmpp2m"):
        steps: list[Tensor] = []
        noise = ReplayNoise([x_T, *[torch.zeros_like(x_T)] * 10])
        sample(
            denoiser,
            diffusion,
            x_T.shape,
            noise,
            SOLVERS[sampler],
            callback=lambda i, out, s=steps: s.append(out.x_prev),
        )
        runs[sampler] = steps
    torch.testing.assert_close(runs["dpmpp2m"][0], runs["ddim"][0])
    assert (runs["dpmpp2m"][1] - runs["ddim"][1]).abs().max() > 1e-4


def test_the_long_step_to_t0_is_the_ddim_step_also_when_guided() -> None:
    """Uniform grid, constant guidance: step 1 (t_1 → 0, r < ½) is DDIM's η = 0 step from the
    same x_1 with the same guided, clipped x̂0; step 2 before it is second order."""
    diffusion = build_diffusion("cosine", 1000, "10")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    g = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    guide = Guide(ConstantTerm(g), WeightSchedule(0.5, "var"))
    solver = DPMSolverPP2M(clip_denoised=True)
    trajectory = solver.trajectory(denoiser, diffusion, SeededNoise(0, range(4)))
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    for i in (3, 2):
        x = solver.step(trajectory, x, i, guide).x_prev
    out = solver.step(trajectory, x, 1, guide)
    a_s, a_t = diffusion.alphas_cumprod[1], diffusion.alphas_cumprod[0]
    ddim = math.sqrt(a_t) * out.pred_xstart + math.sqrt(1 - a_t) * (
        x - math.sqrt(a_s) * out.pred_xstart
    ) / math.sqrt(1 - a_s)
    torch.testing.assert_close(out.x_prev, ddim, rtol=1e-5, atol=1e-6)
    log_snr = LogSNRGrid.of(diffusion)
    assert step_ratio(log_snr, 2, float(log_snr.lambda_s[3])) > MIN_STEP_RATIO


def _two_steps(diffusion, denoiser, x, guide: Guide | None, i: int = 6) -> Tensor:
    """Step i unguided (first order), then step i − 1 (second order) with ``guide``."""
    trajectory = UNCLIPPED.trajectory(denoiser, diffusion, SeededNoise(0, range(x.shape[0])))
    first = UNCLIPPED.step(trajectory, x, i)
    return UNCLIPPED.step(trajectory, first.x_prev, i - 1, guide).x_prev


@pytest.mark.parametrize("term", ["constant", "self"])
def test_guidance_shifts_eps_by_the_score_in_closed_form(term: str) -> None:
    """ε̂ = ε − √(1−ᾱ_s)·w·g moves x̂0 by (1−ᾱ_s)/√ᾱ_s·w·g; the second-order update weights
    x̂0_s by b(1 + 1/(2r)), b = α_t − σ_t α_s/σ_s."""
    diffusion = build_diffusion("cosine", 1000, "10")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    x, w, i = torch.randn(4, 2, generator=torch.Generator().manual_seed(3)), 0.7, 5
    if term == "constant":
        g = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
        guide = Guide(ConstantTerm(g), WeightSchedule(w, "var"))
    else:
        guide = Guide(SelfGuidance("l2", normalize=False), WeightSchedule(w, "var"))
        g = None
    plain = _two_steps(diffusion, denoiser, x, None)
    guided = _two_steps(diffusion, denoiser, x, guide)
    if g is None:  # self-guidance: its direction at x_i is that of the loop's x_i
        trajectory = UNCLIPPED.trajectory(denoiser, diffusion, SeededNoise(0, range(4)))
        x_i = UNCLIPPED.step(trajectory, x, i + 1)
        g = _self_direction(diffusion, denoiser, x_i.x_prev, i)
    a_s, a_t, a_prev = (diffusion.alphas_cumprod[j] for j in (i, i - 1, i + 1))
    lam = [0.5 * math.log(a / (1 - a)) for a in (a_prev, a_s, a_t)]
    r = (lam[1] - lam[0]) / (lam[2] - lam[1])
    b = math.sqrt(a_t) - math.sqrt(1 - a_t) * math.sqrt(a_s) / math.sqrt(1 - a_s)
    factor = b * (1 + 1 / (2 * r)) * (1 - a_s) / math.sqrt(a_s)
    torch.testing.assert_close(guided - plain, factor * w * g, rtol=1e-4, atol=1e-6)


def _self_direction(diffusion, denoiser, x: Tensor, i: int) -> Tensor:
    """Self-guidance's direction at (x, i) with the sampler's seeds (its draw after none)."""
    k = torch.full((x.shape[0],), i)
    x_in = x.detach().requires_grad_(True)
    eps = denoiser(x_in, diffusion.original_timestep(k), None).eps
    log_variance = diffusion.log_variance(k, x)
    ctx = GuidanceContext(
        x_in,
        k,
        diffusion.original_timestep(k),
        eps,
        log_variance,
        diffusion,
        denoiser,
        SeededNoise(0, range(x.shape[0])),
    )
    return SelfGuidance("l2", normalize=False).direction(ctx)


def test_boost_and_skip_is_the_solver_on_the_shorter_grid() -> None:
    """Skipping Δt steps from γ·z equals DPM-Solver++ on the grid without its first Δt
    timesteps, started from γ·z (the first run step is first order either way)."""
    diffusion = build_diffusion("cosine", 1000, "20")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    boost, skip = 1.5, 4
    noise = SeededNoise(2, range(8))
    init = Initialisation(boost, skip)
    x = sample(denoiser, diffusion, (8, 2), noise, UNCLIPPED, init=init)
    shorter = GaussianDiffusion(diffusion.original_betas, diffusion.timestep_map[:-skip])
    z = SeededNoise(2, range(8)).randn("x_T", (8, 2))
    expected = sample(
        denoiser,
        shorter,
        (8, 2),
        ReplayNoise([boost * z]),
        UNCLIPPED,
    )
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


def test_lambda_is_half_the_log_snr() -> None:
    diffusion = build_diffusion("linear", 1000, "10")
    a = diffusion.alphas_cumprod
    np.testing.assert_allclose(LogSNRGrid.of(diffusion).lambda_s, 0.5 * np.log(a / (1 - a)))


def test_guided_x0_is_clipped_after_the_shift() -> None:
    """diffusers' order: the guided ε gives x̂0, which is then clipped; the last step returns it."""
    diffusion = build_diffusion("cosine", 1000, "10")
    g = torch.full((4, 2), 50.0)
    guide = Guide(ConstantTerm(g), WeightSchedule(1.0, "var"))
    seen: list[Tensor] = []
    x = sample(
        Denoiser(GaussianEps(diffusion, STD, MEAN)),
        diffusion,
        (4, 2),
        SeededNoise(0, range(4)),
        DPMSolverPP2M(),
        guide=guide,
        callback=lambda i, out: seen.append(out.pred_xstart),
    )
    assert all(p.abs().max() <= 1 for p in seen) and seen[0].max() == 1
    torch.testing.assert_close(x, seen[-1])

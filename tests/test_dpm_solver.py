"""DPM-Solver++(2M) against closed forms: the probability-flow ODE of Gaussian data, the ε shift
of guidance, Boost-and-Skip as a shorter grid, batch-size invariance, bad settings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from closed_forms import ConstantTerm, GaussianEps
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.errors import UserError
from minority.guidance.base import GuidanceContext, Guide, WeightSchedule
from minority.guidance.self_guidance import SelfGuidance
from minority.models.denoiser import Denoiser
from minority.sampling.dpm_solver import DPMSolverPP2M
from minority.sampling.init import Initialisation
from minority.sampling.loop import sample, step
from minority.seeding import ReplayNoise, SeededNoise

MEAN, STD = 0.3, 0.5


def exact_flow(diffusion: GaussianDiffusion, x_T: Tensor) -> Tensor:
    """The probability-flow ODE's x_0 from x_T for N(MEAN, STD²) data: the marginals
    N(√ᾱ μ, ᾱ s² + 1 − ᾱ) are carried into each other by the affine map that keeps
    (x − √ᾱ μ)/√(ᾱ s² + 1 − ᾱ)."""
    a = diffusion.alphas_cumprod[-1]
    return MEAN + STD * (x_T - math.sqrt(a) * MEAN) / math.sqrt(a * STD**2 + 1 - a)


def solve(sampler: str, steps: int, x_T: Tensor) -> tuple[GaussianDiffusion, Tensor]:
    """x_0 of ``sampler`` (η = 0) from x_T with the exact denoiser, float64, cosine "N" grid."""
    diffusion = build_diffusion("cosine", 1000, str(steps))
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN)).double()
    draws = [torch.zeros_like(x_T)] * steps if sampler == "ddim" else []
    noise = ReplayNoise([x_T, *draws])
    x = sample(denoiser, diffusion, x_T.shape, noise, sampler, clip_denoised=False)
    assert noise.position == 1 + len(draws)  # DPM-Solver++ draws nothing after x_T
    return diffusion, x


def test_gaussian_flow_error_falls_at_second_order() -> None:
    """Max error over x_T ∈ [−3, 3] halves twice per doubling of the steps (DDIM: once)."""
    x_T = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    errors: dict[str, list[float]] = {"ddim": [], "dpmpp2m": []}
    for sampler, steps in itertools.product(errors, (20, 40, 80, 160)):
        diffusion, x = solve(sampler, steps, x_T)
        errors[sampler].append((x - exact_flow(diffusion, x_T)).abs().max().item())
    for sampler, expected in (("dpmpp2m", 2.0), ("ddim", 1.0)):
        found = [math.log2(a / b) for a, b in itertools.pairwise(errors[sampler])]
        assert all(abs(order - expected) < 0.25 for order in found), (sampler, errors, found)
    assert errors["dpmpp2m"][-1] < 3e-3 < errors["ddim"][-1]


def test_first_step_is_ddim_and_the_rest_differ() -> None:
    diffusion = build_diffusion("cosine", 1000, "10")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    x_T = SeededNoise(1, range(8)).randn("x_T", (8, 2))
    runs = {}
    for sampler in ("ddim", "dpmpp2m"):
        steps: list[Tensor] = []
        noise = ReplayNoise([x_T, *[torch.zeros_like(x_T)] * 10])
        kwargs = dict(clip_denoised=False, callback=lambda i, out, s=steps: s.append(out.x_prev))
        sample(denoiser, diffusion, x_T.shape, noise, sampler, **kwargs)
        runs[sampler] = steps
    torch.testing.assert_close(runs["dpmpp2m"][0], runs["ddim"][0])
    assert (runs["dpmpp2m"][1] - runs["ddim"][1]).abs().max() > 1e-4


def _two_steps(diffusion, denoiser, x, guide: Guide | None, i: int = 6) -> Tensor:
    """Step i unguided (first order), then step i − 1 (second order) with ``guide``."""
    solver, noise = DPMSolverPP2M(diffusion), SeededNoise(0, range(x.shape[0]))
    first = step(denoiser, diffusion, x, i, noise, "dpmpp2m", clip_denoised=False, solver=solver)
    return step(
        denoiser, diffusion, first.x_prev, i - 1, noise, "dpmpp2m", 0.0, guide, False, solver=solver
    ).x_prev


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
        solver, noise = DPMSolverPP2M(diffusion), SeededNoise(0, range(4))
        x_i = step(
            denoiser, diffusion, x, i + 1, noise, "dpmpp2m", solver=solver, clip_denoised=False
        )
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
    x = sample(denoiser, diffusion, (8, 2), noise, "dpmpp2m", init=init, clip_denoised=False)
    shorter = GaussianDiffusion(diffusion.original_betas, diffusion.timestep_map[:-skip])
    z = SeededNoise(2, range(8)).randn("x_T", (8, 2))
    expected = sample(
        denoiser,
        shorter,
        (8, 2),
        ReplayNoise([boost * z]),
        "dpmpp2m",
        clip_denoised=False,
    )
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


def _mlp_denoiser() -> Denoiser:
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 2))

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.body(torch.cat([x, t[:, None].float() / 1000], dim=1))

    return Denoiser(Net())


def test_same_seed_same_samples_for_any_batch_size() -> None:
    diffusion, denoiser, n = build_diffusion("cosine", 1000, "20"), _mlp_denoiser(), 64

    def run(batch: int) -> Tensor:
        parts = []
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            parts.append(sample(denoiser, diffusion, (len(idx), 2), SeededNoise(7, idx), "dpmpp2m"))
        return torch.cat(parts)

    reference = run(64)
    for batch in (1, 7):
        torch.testing.assert_close(run(batch), reference, rtol=0, atol=1e-6)


def test_eta_must_be_zero() -> None:
    diffusion = build_diffusion("cosine", 1000, "10")
    with pytest.raises(UserError, match="eta must be 0"):
        sample(_mlp_denoiser(), diffusion, (2, 2), SeededNoise(0, range(2)), "dpmpp2m", eta=1.0)


def test_lambda_is_half_the_log_snr() -> None:
    diffusion = build_diffusion("linear", 1000, "10")
    a = diffusion.alphas_cumprod
    np.testing.assert_allclose(DPMSolverPP2M(diffusion).lambda_s, 0.5 * np.log(a / (1 - a)))


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
        "dpmpp2m",
        guide=guide,
        callback=lambda i, out: seen.append(out.pred_xstart),
    )
    assert all(p.abs().max() <= 1 for p in seen) and seen[0].max() == 1
    torch.testing.assert_close(x, seen[-1])

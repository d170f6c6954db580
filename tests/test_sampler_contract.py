"""The sampler and guidance-term contracts, the way diffusers tests every scheduler.

Every sampler (DDPM, DDIM with η = 0 and 1, DPM-Solver++(2M)) passes the same tests: the
closed-form Gaussian test, batch-size invariance, replay of recorded noise, "scale 0 equals no
guidance" and callback order. Every guidance term (minority guidance with a tiny classifier,
self-guidance) passes a finite-difference test of its direction (the gradient of its objective)
and runs on every sampler. A new sampler or term joins by one line in SAMPLERS or TERMS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import pytest
import torch
from closed_forms import GaussianEps
from hydra.errors import ConfigCompositionException
from pipeline_helpers import REPO, make_config
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.errors import UserError
from minority.guidance.base import GuidanceContext, GuidanceTerm, Guide, WeightSchedule
from minority.guidance.classifier import MinorityGuidance
from minority.guidance.self_guidance import SelfGuidance
from minority.models.classifiers import MLPClassifier
from minority.models.denoiser import Denoiser
from minority.sampling.base import Sampler
from minority.sampling.ddim import DDIM
from minority.sampling.ddpm import DDPM
from minority.sampling.dpm_solver import DPMSolverPP2M
from minority.sampling.init import Initialisation
from minority.sampling.loop import sample
from minority.schema import check_values
from minority.seeding import ReplayNoise, SeededNoise
from minority.tasks.sample import build_sampler

SAMPLERS = {
    "ddpm": DDPM,
    "ddim-eta0": partial(DDIM, 0.0),
    "ddim-eta1": partial(DDIM, 1.0),
    "dpmpp2m": DPMSolverPP2M,
}
DETERMINISTIC = ("ddim-eta0", "dpmpp2m")
MEAN, STD, DIM = 0.3, 0.5, 2


@pytest.fixture(params=list(SAMPLERS))
def name(request) -> str:
    return request.param


def _sampler(name: str, clip_denoised: bool = True) -> Sampler:
    return SAMPLERS[name](clip_denoised=clip_denoised)


class TinyEps(nn.Module):
    """ε(x, t) of a fixed random MLP on (B, DIM) points."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(DIM + 1, 32), nn.SiLU(), nn.Linear(32, DIM))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.body(torch.cat([x, t[:, None].to(x.dtype) / 1000], dim=1))


def _tiny_denoiser() -> Denoiser:
    return Denoiser(TinyEps())


def _tiny_classifier() -> MLPClassifier:
    torch.manual_seed(2)
    return MLPClassifier(4, (DIM,), hidden=16, depth=2).eval()


# -- every sampler ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "sampler").glob("*")))
def test_every_sampler_config_builds_its_sampler(option: str, tmp_path) -> None:
    cfg = make_config("sample", tmp_path, f"sampler={option}")
    check_values(cfg)
    sampler = build_sampler(cfg)
    assert isinstance(sampler, Sampler) and sampler.name == cfg.sampler.name
    assert sampler.clip_denoised is cfg.sampler.clip_denoised


def test_eta_is_ddims_alone_and_a_target_must_be_a_sampler(tmp_path) -> None:
    assert (
        build_sampler(make_config("sample", tmp_path, "sampler=ddim", "sampler.eta=0.5")).eta == 0.5
    )
    with pytest.raises(ConfigCompositionException):
        make_config("sample", tmp_path, "sampler.eta=0.5")
    target = ("sampler._target_=collections.OrderedDict", "allowed_targets=[collections]")
    cfg = make_config("sample", tmp_path, *target)  # builds, but is no Sampler
    with pytest.raises(UserError, match="is not a minority.sampling.base.Sampler"):
        build_sampler(cfg)


def _exact_flow(diffusion: GaussianDiffusion, x_T: Tensor) -> Tensor:
    """The probability-flow ODE's x_0 for N(MEAN, STD²) data: the affine map that keeps
    (x − √ᾱ μ)/√(ᾱ s² + 1 − ᾱ) from the last marginal to the data."""
    a = diffusion.alphas_cumprod[-1]
    return MEAN + STD * (x_T - math.sqrt(a) * MEAN) / math.sqrt(a * STD**2 + 1 - a)


def test_exact_gaussian_model_reproduces_the_data_distribution(name: str) -> None:
    """With the exact ε of N(μ, s²I) data (float64), 4000 samples on a 250-step cosine grid
    have the data's mean (±0.02) and standard deviation (±3 %); the ODE samplers map x_T as
    the probability-flow ODE does (±0.02: DDIM's first-order error is about 0.012 there)."""
    diffusion = build_diffusion("cosine", 1000, "250", "fixed_large")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN)).double()
    gen = torch.Generator().manual_seed(0)
    shape = (4000, DIM)
    draws = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(251)]
    x = sample(denoiser, diffusion, shape, ReplayNoise(draws), _sampler(name, clip_denoised=False))
    assert abs(x.mean().item() - MEAN) < 0.02
    assert x.std().item() == pytest.approx(STD, rel=0.03)
    if name in DETERMINISTIC:
        torch.testing.assert_close(x, _exact_flow(diffusion, draws[0]), rtol=0, atol=2e-2)


def test_same_seeds_give_the_same_samples_for_any_batch_size(name: str) -> None:
    diffusion, denoiser, n = build_diffusion("cosine", 1000, "20"), _tiny_denoiser(), 24

    def run(batch: int) -> Tensor:
        parts = []
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            noise = SeededNoise(7, idx)
            parts.append(sample(denoiser, diffusion, (len(idx), DIM), noise, _sampler(name)))
        return torch.cat(parts)

    reference = run(n)
    for batch in (1, 7):
        torch.testing.assert_close(run(batch), reference, rtol=0, atol=1e-5)


class RecordingNoise:
    """A noise source that records every draw and its role."""

    def __init__(self, inner: SeededNoise):
        self.inner, self.indices = inner, inner.indices
        self.draws: list[Tensor] = []
        self.roles: list[str] = []

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        z = self.inner.randn(role, shape)
        self.draws.append(z.clone())
        self.roles.append(role)
        return z


@pytest.mark.parametrize("guided", [False, True], ids=["unguided", "self-guided"])
def test_replaying_the_recorded_noise_reproduces_the_run(name: str, guided: bool) -> None:
    diffusion, denoiser = build_diffusion("cosine", 1000, "10"), _tiny_denoiser()
    guide = Guide(SelfGuidance("l2"), WeightSchedule(0.5, "var", every=2)) if guided else None
    recording = RecordingNoise(SeededNoise(5, range(6)))
    first = sample(denoiser, diffusion, (6, DIM), recording, _sampler(name), guide)
    replay = ReplayNoise(recording.draws, recording.roles)
    again = sample(denoiser, diffusion, (6, DIM), replay, _sampler(name), guide)
    assert replay.position == len(recording.draws)
    assert recording.roles.count("sg_perturb") == 5 * guided
    assert torch.equal(first, again)


def test_a_zero_scale_is_no_guidance(name: str, term_name: str) -> None:
    """w = 0 gives the unguided samples exactly, although self-guidance would draw noise."""
    diffusion, denoiser = build_diffusion("cosine", 1000, "10"), _tiny_denoiser()
    guide = Guide(TERMS[term_name](), WeightSchedule(0.0, "var"))

    def run(guide: Guide | None) -> Tensor:
        noise = SeededNoise(4, range(8))
        return sample(denoiser, diffusion, (8, DIM), noise, _sampler(name), guide)

    assert torch.equal(run(guide), run(None))


@pytest.mark.parametrize("skip", [0, 3])
def test_the_callback_sees_every_step_once_in_order(name: str, skip: int) -> None:
    diffusion = build_diffusion("cosine", 1000, "10")
    seen: list[tuple[int, tuple[int, ...]]] = []
    sample(
        _tiny_denoiser(),
        diffusion,
        (3, DIM),
        SeededNoise(0, range(3)),
        _sampler(name),
        init=Initialisation(1.0, skip),
        callback=lambda i, out: seen.append((i, tuple(out.x_prev.shape))),
    )
    assert seen == [(i, (3, DIM)) for i in range(9 - skip, -1, -1)]


def test_one_sampler_object_serves_many_runs(name: str) -> None:
    """The multistep state lives in each run's trajectory: a second run repeats the first."""
    diffusion, denoiser, sampler = (
        build_diffusion("cosine", 1000, "10"),
        _tiny_denoiser(),
        _sampler(name),
    )
    runs = [
        sample(denoiser, diffusion, (4, DIM), SeededNoise(1, range(4)), sampler) for _ in range(2)
    ]
    assert torch.equal(*runs)


# -- every guidance term ---------------------------------------------------------------------

TERMS: dict[str, Callable[[], GuidanceTerm]] = {
    "minority": lambda: MinorityGuidance(_tiny_classifier(), 3),
    "self": lambda: SelfGuidance("l2", normalize=False),
}


@pytest.fixture(params=list(TERMS))
def term_name(request) -> str:
    return request.param


def _objective(term_name: str, term: GuidanceTerm, ctx: GuidanceContext) -> Callable:
    """The function of x whose gradient the term's direction is, at the context's step."""
    if term_name == "minority":
        target = torch.full((len(ctx.x),), 3)

        def log_prob(x: Tensor) -> Tensor:
            log_probs = torch.log_softmax(term.classifier(x, ctx.t), dim=-1)
            return log_probs[torch.arange(len(x)), target].sum()

        return log_prob
    # self-guidance: d(x̂0(x), sg[x̂̂0]) with x̂̂0 fixed at the step's value (stop-gradient)
    x0 = ctx.diffusion.pred_xstart(ctx.x, ctx.k, ctx.eps).detach()
    with torch.no_grad():
        target = term.reconstruction(ctx, x0)

    def loss(x: Tensor) -> Tensor:
        eps = ctx.denoiser(x, ctx.t).eps
        return term.loss(ctx.diffusion.pred_xstart(x, ctx.k, eps), target).sum()

    return loss


def _context(denoiser: Denoiser, diffusion: GaussianDiffusion, x: Tensor, draws: list[Tensor]):
    k = torch.full((len(x),), 5)
    t = diffusion.original_timestep(k)
    x = x.detach().requires_grad_(True)
    noise = ReplayNoise(draws)
    log_variance = diffusion.log_variance(k, x)
    return GuidanceContext(x, k, t, denoiser(x, t).eps, log_variance, diffusion, denoiser, noise)


def test_direction_is_the_gradient_of_its_objective(term_name: str) -> None:
    """Central differences (h = 1e-6, float64) of the term's objective equal its direction."""
    diffusion, denoiser = build_diffusion("cosine", 1000, "10"), _tiny_denoiser().double()
    term = TERMS[term_name]()
    if term_name == "minority":
        term.classifier.double()
    gen = torch.Generator().manual_seed(3)
    x, z = (torch.randn(3, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
    direction = term.direction(_context(denoiser, diffusion, x, [z]))
    objective = _objective(term_name, term, _context(denoiser, diffusion, x, [z]))
    h, numeric = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for index in range(x.numel()):
            dx = torch.zeros_like(x).view(-1).index_fill_(0, torch.tensor(index), h).view_as(x)
            numeric.view(-1)[index] = (objective(x + dx) - objective(x - dx)) / (2 * h)
    assert numeric.abs().max() > 1e-3
    torch.testing.assert_close(direction, numeric, rtol=1e-5, atol=1e-7)


def test_term_works_on_every_sampler(term_name: str, name: str) -> None:
    """With the exact Gaussian model, guided samples (w = 1) are finite and differ from the
    unguided ones, sample by sample (x̂0 not clipped, which would hide a shift at ±1)."""
    diffusion = build_diffusion("cosine", 1000, "10")
    denoiser = Denoiser(GaussianEps(diffusion, STD, MEAN))
    guide = Guide(TERMS[term_name](), WeightSchedule(1.0, "var"))

    def run(guide: Guide | None) -> Tensor:
        noise = SeededNoise(6, range(16))
        return sample(denoiser, diffusion, (16, DIM), noise, _sampler(name, False), guide)

    guided, plain = run(guide), run(None)
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().amax(dim=1).min() > 1e-3

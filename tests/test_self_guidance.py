"""Self-guidance: its gradient against finite differences, stop-gradient, normalisation, DDIM,
LPIPS and bad input. The golden parity of self-guided DDPM runs is in test_ancestral_parity.py."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.errors import MissingWeightsError, UserError
from minority.guidance.base import GuidanceContext, Guide, WeightSchedule
from minority.guidance.self_guidance import SelfGuidance
from minority.models.denoiser import Denoiser
from minority.sampling.loop import sample, step
from minority.seeding import ReplayNoise, SeededNoise

DIM, STEPS, I = 3, 10, 5


class TinyEps(nn.Module):
    """ε(x, t) of a random MLP on (B, DIM) vectors; records the labels it receives."""

    def __init__(self, num_classes: int = 0):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Linear(DIM + 1, 32), nn.Tanh(), nn.Linear(32, DIM))
        self.label = nn.Embedding(num_classes, DIM) if num_classes else None
        self.double()
        self.seen_y: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.body(torch.cat([x, t[:, None].to(x.dtype) / 1000], dim=1))
        if self.label is not None:
            self.seen_y.append(y)
            out = out + self.label(y)
        return out


def _setup(num_mc_samples: int = 1, batch: int = 2, num_classes: int = 0):
    """A 10-step cosine diffusion, a float64 tiny denoiser, x_t and M perturbation draws."""
    diffusion = build_diffusion("cosine", 1000, str(STEPS))
    denoiser = Denoiser(TinyEps(num_classes), class_cond=num_classes > 0)
    gen = torch.Generator().manual_seed(1)
    x, *draws = (
        torch.randn(batch, DIM, generator=gen, dtype=torch.float64)
        for _ in range(1 + num_mc_samples)
    )
    return diffusion, denoiser, x, draws


def _context(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: Tensor,
    draws: list[Tensor],
    y: Tensor | None = None,
) -> GuidanceContext:
    """The context the sampling loop builds at respaced index I, serving ``draws``."""
    k = torch.full((x.shape[0],), I, dtype=torch.int64)
    t = diffusion.original_timestep(k)
    x = x.detach().requires_grad_(True)
    eps = denoiser(x, t, y).eps
    noise = ReplayNoise(draws, ["sg_perturb"] * len(draws))
    log_variance = diffusion.log_variance(k, x)
    return GuidanceContext(x, k, t, eps, log_variance, diffusion, denoiser, noise, y)


def _tweedie(denoiser: Denoiser, x: Tensor, t: int, alpha_bar: float) -> Tensor:
    """x̂0 = (x − √(1−ᾱ)·ε(x, t)) / √ᾱ, written out from the formula."""
    eps = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.int64)).eps
    return (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def _x0(denoiser: Denoiser, diffusion: GaussianDiffusion, x: Tensor) -> Tensor:
    return _tweedie(denoiser, x, diffusion.timestep_map[I], diffusion.alphas_cumprod[I])


def _reconstructions(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: Tensor,
    draws: list[Tensor],
    perturbation: tuple[int, float],
    stop_gradient: bool = True,
) -> list[Tensor]:
    """x̂̂0_m = Tweedie(√ᾱ_s·x̂0 + √(1−ᾱ_s)·z_m) at s; stop-gradient on x̂_s when asked."""
    t_s, alpha_bar_s = perturbation
    x0 = _x0(denoiser, diffusion, x)
    source = x0.detach() if stop_gradient else x0
    noisy = [math.sqrt(alpha_bar_s) * source + math.sqrt(1 - alpha_bar_s) * z for z in draws]
    return [_tweedie(denoiser, x_s, t_s, alpha_bar_s) for x_s in noisy]


def _loss(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x: Tensor, targets: list[Tensor]
) -> Tensor:
    """L̃(x) = mean_m ‖x̂0(x) − x̂̂0_m‖₂, per sample (B,)."""
    x0 = _x0(denoiser, diffusion, x)
    return torch.stack([(x0 - target).norm(dim=1) for target in targets]).mean(dim=0)


PERTURBATIONS = {
    "p_ratio": (dict(p_ratio=0.8), lambda d: (d.timestep_map[8], d.alphas_cumprod[8])),
    "perturb_t": (dict(perturb_t=500), lambda d: (500, d.original_alphas_cumprod[500])),
}


@pytest.mark.parametrize("form", sorted(PERTURBATIONS))
@pytest.mark.parametrize("num_mc_samples", [1, 3])
def test_gradient_equals_finite_differences_of_the_loss(form: str, num_mc_samples: int) -> None:
    """Central differences of L̃ with the reconstructions x̂̂0_m held fixed (stop-gradient)."""
    diffusion, denoiser, x, draws = _setup(num_mc_samples)
    kwargs, perturbation = PERTURBATIONS[form]
    term = SelfGuidance("l2", num_mc_samples=num_mc_samples, normalize=False, **kwargs)
    g = term.direction(_context(denoiser, diffusion, x, draws))
    h, fd = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        targets = _reconstructions(denoiser, diffusion, x, draws, perturbation(diffusion))
        for index in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=x.dtype)
            e[index] = h
            e = e.reshape(x.shape)
            up = _loss(denoiser, diffusion, x + e, targets).sum()
            down = _loss(denoiser, diffusion, x - e, targets).sum()
            fd.view(-1)[index] = (up - down) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


def test_gradient_does_not_flow_through_the_perturbed_sample() -> None:
    diffusion, denoiser, x, draws = _setup(num_mc_samples=2)
    g = SelfGuidance("l2", num_mc_samples=2, normalize=False).direction(
        _context(denoiser, diffusion, x, draws)
    )
    perturbation = PERTURBATIONS["p_ratio"][1](diffusion)
    gradients = {}
    for stop_gradient in (True, False):
        x_in = x.clone().requires_grad_(True)
        targets = _reconstructions(denoiser, diffusion, x_in, draws, perturbation, stop_gradient)
        if stop_gradient:
            targets = [target.detach() for target in targets]
        loss = _loss(denoiser, diffusion, x_in, targets).sum()
        (gradients[stop_gradient],) = torch.autograd.grad(loss, x_in)
    torch.testing.assert_close(g, gradients[True], rtol=1e-10, atol=1e-12)
    assert (g - gradients[False]).norm() > 0.05 * g.norm()


def test_linf_normalisation_gives_unit_max_per_sample() -> None:
    diffusion, denoiser, x, draws = _setup(batch=4)
    ctx = _context(denoiser, diffusion, x, draws)
    raw = SelfGuidance("l2", normalize=False).direction(ctx)
    ctx = _context(denoiser, diffusion, x, draws)
    g = SelfGuidance("l2").direction(ctx)
    assert torch.equal(g.abs().amax(dim=1), torch.ones(4, dtype=g.dtype))
    torch.testing.assert_close(g, raw / raw.abs().amax(dim=1, keepdim=True))
    assert not g.requires_grad


def test_zero_gradient_gives_a_zero_direction() -> None:
    """x̂0 clipped everywhere (|x| huge): the gradient vanishes and ĝ is 0, not 0/0 = NaN."""
    diffusion, denoiser, x, draws = _setup(batch=3)
    g = SelfGuidance("l2", clip_denoised=True).direction(
        _context(denoiser, diffusion, 1e4 * x, draws)
    )
    assert torch.equal(g, torch.zeros_like(g))


def test_class_labels_reach_the_denoiser_at_the_perturbation_time() -> None:
    diffusion, denoiser, x, draws = _setup(num_mc_samples=2, num_classes=5)
    y = torch.tensor([3, 1])
    SelfGuidance("l2", num_mc_samples=2).direction(_context(denoiser, diffusion, x, draws, y))
    seen = denoiser.net.seen_y
    assert len(seen) == 2 and torch.equal(seen[0], y) and torch.equal(seen[1], y.repeat(2))


def test_p_ratio_acts_on_the_respaced_grid() -> None:
    term = SelfGuidance("l2", p_ratio=0.8)
    diffusion = build_diffusion("cosine", 1000, "250")
    grid, k_s, t_s = term.perturbation(diffusion)
    assert (grid, k_s, t_s) == (diffusion, 200, 802)
    grid, k_s, t_s = SelfGuidance("l2", perturb_t=605).perturbation(diffusion)
    assert (k_s, t_s, grid.num_timesteps) == (605, 605, 1000)
    assert grid.alphas_cumprod[605] == pytest.approx(diffusion.original_alphas_cumprod[605])


@pytest.mark.parametrize("kind", ["var", "fixed"])
def test_ddim_step_shifts_eps_by_the_self_guidance_direction(kind: str) -> None:
    """x_{i−1}(guided) − x_{i−1}(plain) = factor·w·g with g the direction at x_i (η = 0)."""
    diffusion, denoiser, x, draws = _setup()
    z_ddim = torch.zeros_like(x)
    term, w = SelfGuidance("l2"), 0.3
    g = term.direction(_context(denoiser, diffusion, x, draws))
    guide = Guide(term, WeightSchedule(w, kind))
    noise = ReplayNoise([z_ddim, *draws], ["ddim", "sg_perturb"])
    guided = step(denoiser, diffusion, x, I, noise, "ddim", guide=guide, clip_denoised=False)
    plain = step(denoiser, diffusion, x, I, ReplayNoise([z_ddim]), "ddim", clip_denoised=False)
    a, a_prev = diffusion.alphas_cumprod[I], diffusion.alphas_cumprod[I - 1]
    c = math.sqrt(1 - a_prev) - math.sqrt(a_prev) * math.sqrt(1 - a) / math.sqrt(a)
    factor = -math.sqrt(1 - a) * c if kind == "var" else 1.0
    assert noise.position == 2
    torch.testing.assert_close(guided.x_prev - plain.x_prev, factor * w * g)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_self_guided_sampling_runs_and_moves_the_samples(sampler: str) -> None:
    diffusion, denoiser, _, _ = _setup()
    denoiser.float()
    guide = Guide(SelfGuidance("l2"), WeightSchedule(1.0, "fixed", every=2))

    def run(g: Guide | None) -> Tensor:
        noise = SeededNoise(seed=4, indices=range(16))
        return sample(denoiser, diffusion, (16, DIM), noise, sampler, guide=g)

    guided, plain = run(guide), run(None)
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().amax(dim=1).min() > 1e-3


@pytest.fixture
def lpips_home(tmp_path, monkeypatch):
    """An empty torch home and no $MINORITY_WEIGHTS: nothing to find unless a test puts it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("MINORITY_WEIGHTS", raising=False)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


class TinyConvEps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.tanh(self.conv(x)) * (1 + t[:, None, None, None] / 1000)


def test_lpips_distance_is_differentiated_through_its_trunk(lpips_home) -> None:
    """With a (random) SqueezeNet trunk in the torch cache, g is ∇ LPIPS(x̂0(x), x̂̂0)."""
    trunk = torchvision.models.squeezenet1_1(weights=None)
    torch.save(trunk.state_dict(), lpips_home / "squeezenet1_1-b8a52dc0.pth")
    term = SelfGuidance("lpips-squeeze", normalize=False)
    diffusion = build_diffusion("cosine", 1000, str(STEPS))
    denoiser = Denoiser(TinyConvEps())
    x = torch.randn(2, 3, 32, 32)
    z = torch.randn(2, 3, 32, 32)
    k = torch.full((2,), I, dtype=torch.int64)
    t = diffusion.original_timestep(k)
    x_in = x.clone().requires_grad_(True)
    ctx = GuidanceContext(
        x_in,
        k,
        t,
        denoiser(x_in, t).eps,
        diffusion.log_variance(k, x),
        diffusion,
        denoiser,
        ReplayNoise([z]),
    )
    g = term.direction(ctx)
    x_ref = x.clone().requires_grad_(True)
    x0 = diffusion.pred_xstart(x_ref, k, denoiser(x_ref, t).eps)
    k_s = torch.full((2,), 8, dtype=torch.int64)
    x_s = diffusion.q_sample(x0.detach(), k_s, z)
    target = diffusion.pred_xstart(x_s, k_s, denoiser(x_s, diffusion.original_timestep(k_s)).eps)
    (expected,) = torch.autograd.grad(term.distance(x0, target.detach()).sum(), x_ref)
    assert expected.abs().max() > 0
    torch.testing.assert_close(g, expected)


def _one_sentence(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    assert message.count(". ") == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(p_ratio=0.0),
        dict(p_ratio=1.0),
        dict(p_ratio=-0.2),
        dict(p_ratio=1.5),
        dict(num_mc_samples=0),
        dict(perturb_t=-1),
        dict(distance="l3"),
    ],
)
def test_bad_self_guidance_settings_are_one_sentence_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserError) as error:
        SelfGuidance(**{"distance": "l2", **kwargs})
    _one_sentence(error)


def test_perturbation_time_beyond_the_schedule_is_a_user_error() -> None:
    with pytest.raises(UserError) as error:
        SelfGuidance("l2", perturb_t=1000).perturbation(build_diffusion("cosine", 1000, "10"))
    _one_sentence(error)


def test_negative_scale_is_a_user_error() -> None:
    with pytest.raises(UserError) as error:
        WeightSchedule(-0.5)
    _one_sentence(error)


def test_absent_lpips_weights_are_a_user_error(lpips_home) -> None:
    with pytest.raises(MissingWeightsError) as error:
        SelfGuidance()
    _one_sentence(error)
    assert "alexnet-owt-7be5be79.pth" in str(error.value)

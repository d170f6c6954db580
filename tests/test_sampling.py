"""The sampling loop against Gaussian closed forms, seeding and the guidance contract."""

from __future__ import annotations

import math

import pytest
import torch
from closed_forms import ConstantTerm, GaussianEps
from torch import Tensor, nn

from minority.diffusion.gaussian import build_diffusion
from minority.errors import UserError
from minority.guidance.base import Guide, WeightSchedule
from minority.models.denoiser import Denoiser
from minority.sampling.init import Initialisation
from minority.sampling.loop import sample, step
from minority.seeding import ReplayNoise, SeededNoise


@pytest.mark.parametrize(
    ("sampler", "variance"),
    [("ddim", "fixed_small"), ("ddpm", "fixed_large")],
)
def test_exact_gaussian_denoiser_recovers_data_std(sampler: str, variance: str) -> None:
    std = 0.5
    diffusion = build_diffusion("linear", 1000, "200", variance)
    denoiser = Denoiser(GaussianEps(diffusion, std))
    noise = SeededNoise(seed=3, indices=range(4000))
    x = sample(denoiser, diffusion, (4000, 2), noise, sampler=sampler, clip_denoised=False)
    assert x.std().item() == pytest.approx(std, rel=0.04)
    assert x.mean().abs().item() < 0.03


def test_ancestral_sampler_matches_its_exact_linear_recursion() -> None:
    """For Gaussian data each step is x_{i−1} = a_i x_i + σ_i z: Var follows in closed form."""
    std, steps = 0.5, 50
    diffusion = build_diffusion("linear", 1000, str(steps), "fixed_small")
    variance = 1.0
    for i in reversed(range(steps)):
        a_bar, a_prev = diffusion.alphas_cumprod[i], diffusion.alphas_cumprod[i - 1] if i else 1.0
        alpha = a_bar / a_prev
        shrink = math.sqrt(a_bar) * std**2 / (a_bar * std**2 + 1 - a_bar)  # E[x0|x_t] = shrink·x_t
        c1 = math.sqrt(a_prev) * (1 - alpha) / (1 - a_bar)
        c2 = math.sqrt(alpha) * (1 - a_prev) / (1 - a_bar)
        sigma2 = (1 - alpha) * (1 - a_prev) / (1 - a_bar) if i else 0.0
        variance = (c1 * shrink + c2) ** 2 * variance + sigma2
    denoiser = Denoiser(GaussianEps(diffusion, std))
    x = sample(denoiser, diffusion, (8000, 2), SeededNoise(3, range(8000)), clip_denoised=False)
    assert x.std().item() == pytest.approx(math.sqrt(variance), rel=0.02)
    assert math.sqrt(variance) < 0.49  # fixed_small at 50 steps is visibly too narrow


def _tiny_denoiser() -> Denoiser:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 2))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = net

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.body(torch.cat([x, t[:, None].float() / 1000], dim=1))

    return Denoiser(Net())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_samples_for_any_batch_size(sampler: str) -> None:
    diffusion = build_diffusion("cosine", 1000, "20")
    denoiser = _tiny_denoiser()
    n = 64

    def run(batch: int) -> Tensor:
        parts = []
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            noise = SeededNoise(seed=7, indices=idx)
            parts.append(
                sample(denoiser, diffusion, (len(idx), 2), noise, sampler=sampler, eta=1.0)
            )
        return torch.cat(parts)

    reference = run(64)
    for batch in (1, 7):
        assert (run(batch) - reference).abs().max().item() <= 1e-4


def test_seeded_noise_is_bitwise_identical_per_sample() -> None:
    a = SeededNoise(seed=11, indices=range(10)).randn("x_T", (10, 3, 2, 2))
    b = SeededNoise(seed=11, indices=[4, 5, 6]).randn("x_T", (3, 3, 2, 2))
    assert torch.equal(a[4:7], b)
    c = SeededNoise(seed=12, indices=[4]).randn("x_T", (1, 3, 2, 2))
    assert not torch.equal(a[4:5], c)


def test_replay_noise_checks_roles_and_runs_out() -> None:
    replay = ReplayNoise([torch.zeros(1, 2)], ["x_T"])
    with pytest.raises(UserError):
        replay.randn("ancestral", (1, 2))
    replay = ReplayNoise([torch.zeros(1, 2)])
    replay.randn("x_T", (1, 2))
    with pytest.raises(UserError):
        replay.randn("ancestral", (1, 2))


def _one_step(sampler: str, guide: Guide | None, i: int = 5):
    diffusion = build_diffusion("cosine", 1000, "10")
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    noise = SeededNoise(seed=0, indices=range(4))
    out = step(_tiny_denoiser(), diffusion, x, i, noise, sampler, 0.0, guide, clip_denoised=False)
    return diffusion, out


@pytest.mark.parametrize("kind", ["var", "fixed"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_weight_schedule_shifts_match_closed_forms(sampler: str, kind: str) -> None:
    g, w, i = torch.randn(4, 2, generator=torch.Generator().manual_seed(5)), 0.7, 5
    diffusion, plain = _one_step(sampler, None, i)
    _, guided = _one_step(sampler, Guide(ConstantTerm(g), WeightSchedule(w, kind)), i)
    shift = guided.x_prev - plain.x_prev
    a, a_prev = diffusion.alphas_cumprod[i], diffusion.alphas_cumprod[i - 1]
    if sampler == "ddpm":
        factor = diffusion.posterior_variance[i] if kind == "var" else 1.0
    else:
        c = math.sqrt(1 - a_prev) - math.sqrt(a_prev) * math.sqrt(1 - a) / math.sqrt(a)
        factor = -math.sqrt(1 - a) * c if kind == "var" else 1.0
    torch.testing.assert_close(shift, factor * w * g, rtol=1e-4, atol=1e-5)


def test_firing_rule_matches_official_intermittent_schedule() -> None:
    schedule = WeightSchedule(0.5, "var", every=2)
    assert [i for i in reversed(range(10)) if schedule.fires(i, 10)] == [8, 6, 4, 2, 0]
    stopped = WeightSchedule(0.5, "var", every=1, stop_fraction=0.5)
    assert [i for i in reversed(range(10)) if stopped.fires(i, 10)] == [9, 8, 7, 6]


@pytest.mark.parametrize(
    "bad", [dict(scale=-1.0), dict(scale=1.0, every=0), dict(scale=1.0, kind="x")]
)
def test_bad_schedule_is_user_error(bad: dict) -> None:
    with pytest.raises(UserError):
        WeightSchedule(**bad)


def test_boost_and_skip_starts_late_from_boosted_noise() -> None:
    diffusion = build_diffusion("cosine", 1000, "10")
    seen: list[int] = []
    init = Initialisation(gamma=4.0, skip=3)
    noise = SeededNoise(seed=0, indices=range(2000))
    sample(
        _tiny_denoiser(),
        diffusion,
        (2000, 2),
        noise,
        init=init,
        callback=lambda i, _: seen.append(i),
    )
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    x_T = Initialisation(gamma=4.0).initial_noise(SeededNoise(0, range(2000)), (2000, 2))
    assert x_T.std().item() == pytest.approx(4.0, rel=0.05)
    with pytest.raises(UserError):
        Initialisation(gamma=0.0)

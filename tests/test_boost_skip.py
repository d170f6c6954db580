"""Boost-and-Skip (x_T ~ N(0, γ²I), first Δt respaced steps skipped) on both samplers, alone and
composed with self-guidance."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from closed_forms import GaussianEps
from torch import Tensor, nn

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.guidance.base import Guide, WeightSchedule
from minority.guidance.self_guidance import SelfGuidance
from minority.models.denoiser import Denoiser
from minority.sampling.init import Initialisation
from minority.sampling.loop import sample
from minority.seeding import SeededNoise

STD = 0.5


def _ddim_gain(diffusion: GaussianDiffusion, i: int) -> float:
    """x_{i−1} = gain·x_i for one η = 0 DDIM step with the exact denoiser of N(0, STD²) data."""
    a = diffusion.alphas_cumprod[i]
    a_prev = diffusion.alphas_cumprod_prev[i]
    shrink = math.sqrt(a) * STD**2 / (a * STD**2 + 1 - a)  # x̂0 = shrink·x_i
    eps_gain = (1 / math.sqrt(a) - shrink) / math.sqrt(1 / a - 1)
    return math.sqrt(a_prev) * shrink + math.sqrt(1 - a_prev) * eps_gain


@pytest.mark.parametrize(("boost", "skip"), [(1.0, 0), (2.5, 3), (4.0, 10)])
def test_boosted_skipped_ddim_matches_closed_form(boost: float, skip: int) -> None:
    """DDIM with the exact Gaussian denoiser is linear: x_0 = Π gains of the run steps · γ·z."""
    diffusion = build_diffusion("cosine", 1000, "20", "fixed_small")
    init = Initialisation(boost, skip)
    start = init.start_index(diffusion.num_timesteps)
    gain = math.prod(_ddim_gain(diffusion, i) for i in range(start, -1, -1))
    denoiser = Denoiser(GaussianEps(diffusion, STD))
    x = sample(
        denoiser,
        diffusion,
        (8, 2),
        SeededNoise(5, range(8)),
        "ddim",
        init=init,
        clip_denoised=False,
    )
    z_T = SeededNoise(5, range(8)).randn("x_T", (8, 2))
    torch.testing.assert_close(x, gain * boost * z_T, rtol=1e-5, atol=1e-6)
    if skip:
        assert gain * boost > 2 * STD  # the boosted start ends far outside the data (std STD)


class Recorder:
    """Logs every denoiser call (timesteps, grad enabled, input) and every draw's role."""

    def __init__(self, net: nn.Module, noise: SeededNoise):
        self.net, self.noise = net, noise
        self.calls: list[tuple[int, bool]] = []
        self.inputs: list[Tensor] = []
        self.roles: list[str] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls.append((int(t[0]), torch.is_grad_enabled()))
        self.inputs.append(x.detach().clone())
        return self.net(x, t)

    def randn(self, role: str, shape: Sequence[int]) -> Tensor:
        self.roles.append(role)
        return self.noise.randn(role, shape)


class Wrapped(nn.Module):
    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.recorder(x, t)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_boost_and_skip_composes_with_self_guidance(sampler: str) -> None:
    diffusion = build_diffusion("cosine", 1000, "10", "fixed_small")
    boost, skip, shape = 2.0, 3, (6, 2)
    recorder = Recorder(GaussianEps(diffusion, STD), SeededNoise(seed=2, indices=range(6)))
    denoiser = Denoiser(Wrapped(recorder))
    guide = Guide(SelfGuidance("l2", p_ratio=0.8), WeightSchedule(1.0, "var", every=2))
    init = Initialisation(boost, skip)
    steps: list[int] = []
    x = sample(
        denoiser,
        diffusion,
        shape,
        recorder,
        sampler,
        guide=guide,
        init=init,
        callback=lambda i, _: steps.append(i),
    )
    assert steps == [6, 5, 4, 3, 2, 1, 0]
    z_T = SeededNoise(seed=2, indices=range(6)).randn("x_T", shape)
    assert torch.equal(recorder.inputs[0], boost * z_T)
    expected_calls, expected_roles = [], ["x_T"]
    for i in steps:
        guided = i % 2 == 0
        expected_calls.append((diffusion.timestep_map[i], guided))
        expected_calls += [(diffusion.timestep_map[8], False)] if guided else []
        expected_roles += [sampler if sampler == "ddim" else "ancestral"]
        expected_roles += ["sg_perturb"] if guided else []
    assert recorder.calls == expected_calls
    assert recorder.roles == expected_roles
    unguided = sample(
        Denoiser(GaussianEps(diffusion, STD)),
        diffusion,
        shape,
        SeededNoise(seed=2, indices=range(6)),
        sampler,
        init=init,
    )
    assert torch.isfinite(x).all()
    assert (x - unguided).abs().amax(dim=1).min() > 1e-4

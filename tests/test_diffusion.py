"""The diffusion core against closed forms and guided-diffusion's conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minority.diffusion.gaussian import build_diffusion
from minority.diffusion.schedule import cosine_betas, get_betas, linear_betas, space_timesteps
from minority.errors import UserError


def test_linear_schedule_endpoints() -> None:
    betas = linear_betas(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert linear_betas(500)[0] == pytest.approx(2e-4)


def test_cosine_schedule_matches_alpha_bar() -> None:
    alphas_cumprod = np.cumprod(1 - cosine_betas(1000))
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 605, 900):
        assert alphas_cumprod[t] == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)
    assert cosine_betas(1000).max() == pytest.approx(0.999)


@pytest.mark.parametrize(
    ("spec", "index", "timestep", "length"),
    [
        ("250", 200, 802, 250),
        ("100", 60, 605, 100),
        ("10", 1, 111, 10),
        ("ddim50", 1, 20, 50),
        ("", 7, 7, 1000),
        ("10,20", 10, 500, 30),
    ],
)
def test_space_timesteps(spec: str, index: int, timestep: int, length: int) -> None:
    kept = space_timesteps(1000, spec)
    assert len(kept) == length and kept[index] == timestep
    assert kept == sorted(kept) and kept[0] == 0


def test_bad_specs_are_user_errors() -> None:
    for bad in ("abc", "0", "2000", "ddim7000"):
        with pytest.raises(UserError):
            space_timesteps(1000, bad)
    with pytest.raises(UserError):
        get_betas("quadratic", 1000)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respaced_alpha_bar_equals_original(schedule: str) -> None:
    diffusion = build_diffusion(schedule, 1000, "250")
    original = np.cumprod(1 - get_betas(schedule, 1000))
    np.testing.assert_allclose(
        diffusion.alphas_cumprod, original[diffusion.timestep_map], rtol=1e-12
    )


def test_matches_golden_respaced_schedule(load_golden) -> None:
    golden = load_golden("traj_ancestral")
    diffusion = build_diffusion("cosine", 1000, "10", "learned_range")
    assert diffusion.timestep_map == golden["timestep_map"]
    np.testing.assert_array_equal(diffusion.betas, golden["respaced_betas_f64"].numpy())
    np.testing.assert_array_equal(
        diffusion.posterior_log_variance_clipped,
        golden["respaced_posterior_log_variance_clipped_f64"].numpy(),
    )


def test_tweedie_inverts_q_sample() -> None:
    diffusion = build_diffusion("linear", 1000, "100")
    x0, eps = (
        torch.randn(6, 3, 4, 4, dtype=torch.float64),
        torch.randn(6, 3, 4, 4, dtype=torch.float64),
    )
    k = torch.tensor([0, 10, 30, 60, 90, 99])
    xt = diffusion.q_sample(x0, k, eps)
    torch.testing.assert_close(diffusion.pred_xstart(xt, k, eps), x0)
    torch.testing.assert_close(diffusion.pred_eps(xt, k, x0), eps)


def test_posterior_matches_bayes_rule() -> None:
    """q(x_{k−1} | x_k, x0) from the product of Gaussians, per coordinate, in closed form."""
    diffusion = build_diffusion("cosine", 1000, "50")
    for i in (1, 10, 49):
        a_bar, a_bar_prev = diffusion.alphas_cumprod[i], diffusion.alphas_cumprod[i - 1]
        alpha = a_bar / a_bar_prev
        # prior x_{k-1} ~ N(√ā_prev x0, 1−ā_prev); likelihood x_k ~ N(√α x_{k−1}, 1−α)
        precision = 1 / (1 - a_bar_prev) + alpha / (1 - alpha)
        c1 = math.sqrt(a_bar_prev) / (1 - a_bar_prev) / precision
        c2 = math.sqrt(alpha) / (1 - alpha) / precision
        assert diffusion.posterior_mean_coef1[i] == pytest.approx(c1, rel=1e-9)
        assert diffusion.posterior_mean_coef2[i] == pytest.approx(c2, rel=1e-9)
        assert diffusion.posterior_variance[i] == pytest.approx(1 / precision, rel=1e-9)


def test_learned_range_interpolates_log_variance() -> None:
    diffusion = build_diffusion("cosine", 1000, "10", "learned_range")
    x = torch.zeros(3, 1)
    k = torch.tensor([5, 5, 5])
    v = torch.tensor([[-1.0], [1.0], [0.0]])
    log_var = diffusion.log_variance(k, x, v).squeeze(1).double()
    lo, hi = diffusion.posterior_log_variance_clipped[5], math.log(diffusion.betas[5])
    np.testing.assert_allclose(log_var.numpy(), [lo, hi, (lo + hi) / 2], rtol=1e-6)
    with pytest.raises(UserError):
        diffusion.log_variance(k, x, None)


def test_fixed_variances_at_last_step() -> None:
    small = build_diffusion("linear", 1000, "10", "fixed_small")
    large = build_diffusion("linear", 1000, "10", "fixed_large")
    k, x = torch.tensor([0, 3]), torch.zeros(2, 1)
    expected_small = small.posterior_log_variance_clipped[[0, 3]]
    expected_large = np.log([small.posterior_variance[1], small.betas[3]])
    np.testing.assert_allclose(
        small.log_variance(k, x).squeeze(1).numpy(), expected_small, rtol=1e-6
    )
    np.testing.assert_allclose(
        large.log_variance(k, x).squeeze(1).numpy(), expected_large, rtol=1e-6
    )


def test_schedules_with_endpoints_are_closed_forms() -> None:
    linear = get_betas("linear:0.001:0.03", 50)
    assert linear[0] == pytest.approx(0.001) and linear[-1] == pytest.approx(0.03)
    np.testing.assert_allclose(np.diff(linear), 0.029 / 49)
    scaled = get_betas("scaled_linear:0.00085:0.012", 1000)
    assert scaled[0] == pytest.approx(0.00085) and scaled[-1] == pytest.approx(0.012)
    np.testing.assert_allclose(np.diff(np.sqrt(scaled)), (0.012**0.5 - 0.00085**0.5) / 999)
    for bad in ("scaled_linear", "cosine:0.1:0.2", "linear:0.1", "linear:a:b", "linear:0:0.02"):
        with pytest.raises(UserError):
            get_betas(bad, 1000)


def test_diffusers_spacing_forms() -> None:
    assert space_timesteps(1000, "leading4+1") == [1, 251, 501, 751]
    assert space_timesteps(1000, "trailing4") == [249, 499, 749, 999]
    assert space_timesteps(1000, "linspace4") == [0, 333, 666, 999]
    for bad in ("trailing4+1", "leading4+x", "leading1000+1", "linspace0", "leading2000"):
        with pytest.raises(UserError):
            space_timesteps(1000, bad)

"""Second-implementation parity: the project's DDPM and DDIM against diffusers' schedulers.

The same tiny random UNet2DModel, loaded by the project from its saved folder and run by
diffusers directly, walks the same timesteps from the same x_T with the same recorded noise
(:class:`ReplayNoise` for the project; diffusers' DDPM draw replaced by it, its DDIM given it as
``variance_noise``). Every step's x_{t−1} must agree to float tolerance. diffusers computes its
schedule in float32, the project in float64: that is the whole difference.

Respacing correspondence (T = num_train_timesteps, N = steps):

* diffusers ``linspace`` = guided-diffusion's ``"N"`` (first and last step kept) for the usual N;
  a few N differ by one timestep where (T−1)·i/(N−1) is a half integer (T = 1000, N = 21).
* ``leading`` with ``steps_offset`` 0 = ``"ddimN"`` exactly when N divides T (N > 1).
* ``trailing`` and ``leading`` with ``steps_offset`` > 0 have no guided-diffusion form.

Every diffusers spacing has its own respacing form, equal to diffusers' timesteps for every N:
``"leadingN"`` (``"leadingN+1"`` with steps_offset 1), ``"trailingN"``, ``"linspaceN"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers_helpers import BETA_SCHEDULES, diffusers, save_folder, tiny_unet

from minority.diffusion.build import build_diffusion_for
from minority.diffusion.schedule import get_betas, space_timesteps
from minority.errors import UserError
from minority.lit.build import load_denoiser
from minority.models.diffusers_unet import DIFFUSERS_ARCH, read_diffusers_folder
from minority.sampling.ddim import DDIM
from minority.sampling.ddpm import DDPM
from minority.sampling.dpm_solver import DPMSolverPP2M
from minority.sampling.loop import sample
from minority.seeding import ReplayNoise

BATCH, STEPS = 2, 10
TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}
ddpm_module = diffusers.schedulers.scheduling_ddpm


def project_model(folder: Path, respacing: str | None = None):
    """The project's denoiser and (respaced) diffusion of a diffusers folder, built as the
    sampling task builds them."""
    model = read_diffusers_folder(folder)
    denoiser = load_denoiser({"arch": DIFFUSERS_ARCH}, folder)
    model_cfg = {"arch": DIFFUSERS_ARCH, "flags": model.model_flags()}
    return denoiser, build_diffusion_for(model_cfg, model.diffusion(), respacing)


def recorded_noise(num_steps: int, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x_T and one draw per step, (B, 1, 8, 8) each."""
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, 1, 8, 8)
    x_T = torch.randn(shape, generator=generator)
    return x_T, [torch.randn(shape, generator=generator) for _ in range(num_steps)]


def project_trajectory(denoiser, diffusion, x_T, draws, sampler, eta=0.0, clip=True, y=None):
    role = "ancestral" if sampler == "ddpm" else "ddim"
    noise = ReplayNoise([x_T, *draws], ["x_T"] + [role] * len(draws))
    steps: list[torch.Tensor] = []
    rules = {"ddpm": DDPM(clip), "ddim": DDIM(eta, clip), "dpmpp2m": DPMSolverPP2M(clip)}
    sample(
        denoiser,
        diffusion,
        x_T.shape,
        noise,
        rules[sampler],
        y=y,
        callback=lambda i, out: steps.append(out.x_prev),
    )
    assert noise.position == len(draws) + 1
    return steps


@torch.no_grad()
def diffusers_trajectory(unet, scheduler, x_T, draws, monkeypatch, eta=None, y=None):
    """diffusers' loop over ``scheduler.timesteps`` (set by the caller): DDPM when ``eta`` is
    None, else DDIM(eta) with ε re-derived from the clipped x̂0 as guided-diffusion does."""
    x, steps = x_T, []
    for t, z in zip(scheduler.timesteps, draws, strict=True):
        out = unet(x, t, class_labels=y).sample
        if eta is None:
            monkeypatch.setattr(ddpm_module, "randn_tensor", lambda *args, z=z, **kwargs: z)
            x = scheduler.step(out, t, x).prev_sample
        else:
            noise = z if eta > 0 else None
            x = scheduler.step(
                out, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise
            ).prev_sample
        steps.append(x)
    return steps


def assert_same_steps(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], tolerance: dict = TOLERANCE
) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m, i=i: f"step {i}: {m}")


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_ddpm_equals_diffusers_ddpm_scheduler(tmp_path, monkeypatch, beta_schedule) -> None:
    config = {"beta_schedule": beta_schedule, "timestep_spacing": "linspace"}
    unet = tiny_unet()
    folder = save_folder(tmp_path, unet, **config)
    scheduler = diffusers.DDPMScheduler(**config)
    scheduler.set_timesteps(STEPS)
    denoiser, diffusion = project_model(folder, str(STEPS))
    assert diffusion.timestep_map == sorted(scheduler.timesteps.tolist())
    x_T, draws = recorded_noise(STEPS)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddpm"),
        diffusers_trajectory(unet, scheduler, x_T, draws, monkeypatch),
    )


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_ddim_equals_diffusers_ddim_scheduler(tmp_path, monkeypatch, beta_schedule, eta) -> None:
    config = {"beta_schedule": beta_schedule, "timestep_spacing": "leading", "steps_offset": 0}
    unet = tiny_unet()
    folder = save_folder(tmp_path, unet, **config)
    scheduler = diffusers.DDIMScheduler(**config, set_alpha_to_one=True)
    scheduler.set_timesteps(STEPS)
    denoiser, diffusion = project_model(folder, f"ddim{STEPS}")
    assert diffusion.timestep_map == sorted(scheduler.timesteps.tolist())
    x_T, draws = recorded_noise(STEPS)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddim", eta),
        diffusers_trajectory(unet, scheduler, x_T, draws, monkeypatch, eta),
    )


@pytest.mark.parametrize(
    ("prediction_type", "variance_type", "clip"),
    [
        ("v_prediction", "learned_range", True),
        ("sample", "fixed_large", False),
        ("epsilon", "fixed_small_log", False),
        ("v_prediction", "fixed_small", False),
    ],
)
def test_predictions_variances_and_clipping_follow_the_scheduler(
    tmp_path, monkeypatch, prediction_type, variance_type, clip
) -> None:
    """ε from v or x̂0, learned-range and fixed variances at respaced steps, clip on and off,
    on a class-conditional UNet: DDPM and DDIM(η = 1) both equal diffusers'."""
    config = {
        "beta_schedule": "linear",
        "prediction_type": prediction_type,
        "variance_type": variance_type,
        "clip_sample": clip,
    }
    unet = tiny_unet(num_classes=3, learn_sigma=variance_type == "learned_range")
    folder = save_folder(tmp_path, unet, **config)
    assert read_diffusers_folder(folder).clip_denoised is clip
    y = torch.tensor([2, 0])
    x_T, draws = recorded_noise(STEPS)
    ddpm = diffusers.DDPMScheduler(**config, timestep_spacing="leading")
    ddpm.set_timesteps(STEPS)
    denoiser, diffusion = project_model(folder, f"ddim{STEPS}")
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddpm", clip=clip, y=y),
        diffusers_trajectory(unet, ddpm, x_T, draws, monkeypatch, y=y),
    )
    if variance_type == "learned_range":
        return  # DDIM ignores the learned variance; diffusers' DDIM expects C channels
    config.pop("variance_type")
    ddim = diffusers.DDIMScheduler(**config)
    ddim.set_timesteps(STEPS)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddim", 1.0, clip=clip, y=y),
        diffusers_trajectory(unet, ddim, x_T, draws, monkeypatch, 1.0, y=y),
    )


@pytest.mark.parametrize(
    ("spacing", "offset", "respacing"),
    [("trailing", 0, "trailing10"), ("leading", 1, "leading10+1")],
    ids=["trailing", "leading+1"],
)
def test_spacings_without_a_guided_diffusion_form(
    tmp_path, monkeypatch, spacing, offset, respacing
) -> None:
    """trailing (ends at t = T/N − 1) and leading + steps_offset: DDIM(η = 0) and DDPM agree
    step by step (fixed_small: the noise diffusers adds at a last step t > 0 has σ = 1e-10)."""
    config = {"beta_schedule": "scaled_linear", "timestep_spacing": spacing, "steps_offset": offset}
    unet = tiny_unet()
    folder = save_folder(tmp_path, unet, **config)
    x_T, draws = recorded_noise(STEPS)
    ddim = diffusers.DDIMScheduler(**config)
    ddim.set_timesteps(STEPS)
    timesteps = ddim.timesteps.tolist()
    denoiser, diffusion = project_model(folder, respacing)
    assert timesteps[-1] > 0 and diffusion.timestep_map == timesteps[::-1]
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddim"),
        diffusers_trajectory(unet, ddim, x_T, draws, monkeypatch, 0.0),
    )
    ddpm = diffusers.DDPMScheduler(**config)
    ddpm.set_timesteps(timesteps=timesteps)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddpm"),
        diffusers_trajectory(unet, ddpm, x_T, draws, monkeypatch),
    )


def test_full_schedule_ddpm_equals_diffusers(tmp_path, monkeypatch) -> None:
    """No respacing: every one of T = 40 steps, cosine schedule."""
    config = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 40}
    unet = tiny_unet()
    folder = save_folder(tmp_path, unet, **config)
    scheduler = diffusers.DDPMScheduler(**config)
    denoiser, diffusion = project_model(folder)
    assert diffusion.num_timesteps == 40
    x_T, draws = recorded_noise(40)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, draws, "ddpm"),
        diffusers_trajectory(unet, scheduler, x_T, draws, monkeypatch),
    )


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_betas_equal_diffusers_to_float32(tmp_path, beta_schedule) -> None:
    config = {"beta_schedule": beta_schedule, "beta_start": 0.00085, "beta_end": 0.012}
    folder = save_folder(tmp_path, tiny_unet(), **config)
    node = read_diffusers_folder(folder).diffusion()
    ours = get_betas(node["noise_schedule"], node["diffusion_steps"])
    theirs = diffusers.DDPMScheduler(**config).betas.double().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_linspace_spacing_is_guided_diffusions_even_respacing() -> None:
    scheduler = diffusers.DDPMScheduler(timestep_spacing="linspace")
    for steps in (10, 20, 25, 50, 100, 250, 500, 1000):
        scheduler.set_timesteps(steps)
        assert sorted(scheduler.timesteps.tolist()) == space_timesteps(1000, str(steps))
    scheduler.set_timesteps(21)
    differ = set(scheduler.timesteps.tolist()) ^ set(space_timesteps(1000, "21"))
    assert differ == {499, 500}


def test_leading_spacing_is_ddim_respacing_when_the_steps_divide_t() -> None:
    scheduler = diffusers.DDIMScheduler(timestep_spacing="leading", steps_offset=0)
    equal = []
    for steps in range(2, 1001):
        scheduler.set_timesteps(steps)
        try:
            ddim = space_timesteps(1000, f"ddim{steps}")
        except UserError:  # no stride gives that many steps
            continue
        if sorted(scheduler.timesteps.tolist()) == ddim:
            equal.append(steps)
    assert equal == [n for n in range(2, 1001) if 1000 % n == 0]


@pytest.mark.parametrize("num_timesteps", [1000, 50])
def test_diffusers_spacing_forms_equal_diffusers_timesteps(num_timesteps: int) -> None:
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=num_timesteps)
    for spacing, offset, form in (
        ("leading", 0, "leading{}"),
        ("leading", 1, "leading{}+1"),
        ("trailing", 0, "trailing{}"),
        ("linspace", 0, "linspace{}"),
    ):
        scheduler.register_to_config(timestep_spacing=spacing, steps_offset=offset)
        for steps in range(2, num_timesteps + 1):
            scheduler.set_timesteps(steps)
            expected = scheduler.timesteps.tolist()[::-1]
            if expected[-1] >= num_timesteps:  # diffusers' steps_offset runs past T − 1
                with pytest.raises(UserError, match="reaches past the last timestep"):
                    space_timesteps(num_timesteps, form.format(steps))
                continue
            assert space_timesteps(num_timesteps, form.format(steps)) == expected, (form, steps)


def dpm_solver_trajectory(unet, scheduler, x_T, y=None) -> list[torch.Tensor]:
    """diffusers' DPMSolverMultistepScheduler loop over ``scheduler.timesteps``."""
    x, steps = x_T, []
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, class_labels=y).sample, t, x).prev_sample
            steps.append(x)
    return steps


def dpm_solver(config: dict, clip: bool):
    """DPM-Solver++(2M) as the project runs it; clipping x̂0 to [−1, 1] is diffusers' dynamic
    thresholding with ``sample_max_value`` 1 (its threshold max(quantile, 1) clamped to 1)."""
    return diffusers.DPMSolverMultistepScheduler(
        **config,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        thresholding=clip,
        sample_max_value=1.0,
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_dpm_solver_equals_diffusers_dpm_solver_multistep(
    tmp_path, beta_schedule, prediction_type
) -> None:
    """trailing spacing on both sides: first-order start, second-order steps, first-order last
    step to σ = 0, from the same x_T (no noise is drawn). Cosine with v at t = T − 1 (√ᾱ = 5e-5):
    the project's ε = √ᾱ v + √(1−ᾱ) x in float32 gives back x̂0 = (x − √(1−ᾱ) ε)/√ᾱ only to
    ulp(x)/√ᾱ ≈ 1e-3, where diffusers forms x̂0 = √ᾱ x − √(1−ᾱ) v directly."""
    config = {
        "beta_schedule": beta_schedule,
        "prediction_type": prediction_type,
        "timestep_spacing": "trailing",
    }
    cosine_v = (beta_schedule, prediction_type) == ("squaredcos_cap_v2", "v_prediction")
    unet = tiny_unet()
    folder = save_folder(tmp_path, unet, clip_sample=False, **config)
    scheduler = dpm_solver(config, clip=False)
    scheduler.set_timesteps(STEPS)
    denoiser, diffusion = project_model(folder, f"trailing{STEPS}")
    assert diffusion.timestep_map == scheduler.timesteps.tolist()[::-1]
    x_T, _ = recorded_noise(0)
    assert_same_steps(
        project_trajectory(denoiser, diffusion, x_T, [], "dpmpp2m", clip=False),
        dpm_solver_trajectory(unet, scheduler, x_T),
        {"atol": 2e-3, "rtol": 1e-4} if cosine_v else TOLERANCE,
    )


@pytest.mark.parametrize("respacing", [str(STEPS), f"ddim{STEPS}", "25"])
def test_dpm_solver_on_guided_diffusion_respacing_with_clipping(tmp_path, respacing) -> None:
    """guided-diffusion's respacings (ending at t = 0) given to diffusers as its timesteps, x̂0
    clipped, a class-conditional UNet: equal step by step up to the long λ-step t_1 → 0, which
    the project takes at first order (r < ½, :mod:`minority.sampling.dpm_solver`) and
    diffusers at second order."""
    config = {"beta_schedule": "linear"}
    unet = tiny_unet(num_classes=3)
    folder = save_folder(tmp_path, unet, **config)
    denoiser, diffusion = project_model(folder, respacing)
    scheduler = dpm_solver(config, clip=True)
    scheduler.set_timesteps(timesteps=diffusion.timestep_map[::-1])
    y = torch.tensor([1, 2])
    x_T, _ = recorded_noise(0)
    ours = project_trajectory(denoiser, diffusion, x_T, [], "dpmpp2m", clip=True, y=y)
    theirs = dpm_solver_trajectory(unet, scheduler, x_T, y=y)
    same = diffusion.num_timesteps - 2  # steps T'−1 … 2; step 1 is t_1 → 0
    assert_same_steps(ours[:same], theirs[:same])
    assert (ours[same] - theirs[same]).abs().max() > 1e-4

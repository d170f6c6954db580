"""The diffusion and sampler a golden trajectory was recorded with, read from the fixture."""

from __future__ import annotations

import numpy as np

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.sampling.base import Sampler
from minority.sampling.ddim import DDIM
from minority.sampling.ddpm import DDPM


def golden_diffusion(fixture: dict) -> GaussianDiffusion:
    """guided-diffusion's ``create_gaussian_diffusion`` from the fixture's flags (learned Σ →
    learned_range, else sigma_small → fixed_small, else fixed_large), checked against the
    respaced grid and ᾱ the fixture recorded."""
    flags = fixture["flags"]
    variance = "learned_range" if flags["learn_sigma"] else "fixed_large"
    if not flags["learn_sigma"] and flags.get("sigma_small"):
        variance = "fixed_small"
    diffusion = build_diffusion(
        flags["noise_schedule"], flags["diffusion_steps"], flags["timestep_respacing"], variance
    )
    assert diffusion.timestep_map == list(fixture["timestep_map"])
    np.testing.assert_allclose(
        diffusion.alphas_cumprod, np.asarray(fixture["respaced_alphas_cumprod_f64"]), rtol=1e-12
    )
    return diffusion


def golden_sampler(fixture: dict) -> Sampler:
    """The fixture's sampler ("ddpm" or "ddim" with its η) with its ``clip_denoised``."""
    clip = bool(fixture["clip_denoised"])
    if fixture["sampler"] == "ddim":
        return DDIM(float(fixture["eta"]), clip)
    assert fixture["sampler"] == "ddpm", fixture["sampler"]
    return DDPM(clip)

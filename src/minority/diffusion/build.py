"""A ``model`` node's trained denoiser and the diffusion it samples with.

:func:`load_denoiser` reads a project checkpoint, a public guided-diffusion state dict or a
diffusers folder (whose v / ε conversion needs the ᾱ of its noise schedule) into the
:class:`~minority.models.denoiser.Denoiser` of :mod:`minority.models.build`;
:func:`build_diffusion_for` gives the (respaced) diffusion a model samples with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.diffusion.schedule import get_betas
from minority.errors import UserError
from minority.models.build import (
    build_denoiser,
    check_trained_diffusion,
    learns_sigma,
    load_checkpoint,
)
from minority.models.denoiser import Denoiser
from minority.models.diffusers_unet import (
    DIFFUSERS_ARCH,
    DiffusersUNet,
    load_unet2d,
    read_diffusers_folder,
)


def load_denoiser(
    model_cfg: Mapping[str, Any],
    path: str | Path,
    diffusion_cfg: Mapping[str, Any] | None = None,
) -> Denoiser:
    """Build the ``model`` node's denoiser and load ``path`` into it.

    ``path`` is a project checkpoint (a dict with ``state_dict``, ``model`` and ``diffusion``)
    or a public guided-diffusion state dict. A project checkpoint trained with another
    architecture, or (when ``diffusion_cfg`` is given) another noise schedule or number of
    diffusion steps, or a state dict that does not fit, raises :class:`UserError` naming the
    difference. For
    ``diffusers_unet2d``, ``path`` is the diffusers folder.
    """
    if model_cfg.get("arch") == DIFFUSERS_ARCH:
        return load_diffusers_denoiser(path)
    content = load_checkpoint(path)
    denoiser = build_denoiser(model_cfg)
    if "state_dict" in content and "model" in content:
        saved = dict(content["model"])
        if saved != dict(model_cfg):
            raise UserError(
                f"Checkpoint {path} was trained with model {saved}, which differs from the "
                f"configured model {dict(model_cfg)}; pick the matching model config."
            )
        if diffusion_cfg is not None:
            check_trained_diffusion(path, content.get("diffusion") or {}, diffusion_cfg)
        content = content["state_dict"]
    if model_cfg.get("arch", "").startswith("adm"):
        from minority.models.adm import load_adm_checkpoint

        load_adm_checkpoint(denoiser.net, content, name=path)
    else:
        _load_strict(denoiser.net, content, path)
    return denoiser.eval()


def load_diffusers_denoiser(path: str | Path) -> Denoiser:
    """The UNet2DModel of a diffusers folder as an ε (and v) :class:`Denoiser`, eval mode."""
    folder = read_diffusers_folder(path)
    diffusion = folder.diffusion()
    betas = get_betas(diffusion["noise_schedule"], diffusion["diffusion_steps"])
    net = DiffusersUNet(
        load_unet2d(folder), folder.prediction_type, np.cumprod(1.0 - betas), folder.learn_sigma
    )
    return Denoiser(net, folder.learn_sigma, folder.num_classes > 0).eval()


def _load_strict(net: nn.Module, state_dict: Mapping[str, Any], path: str | Path) -> None:
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"Checkpoint {path} does not fit the configured model: {first}") from None


def build_diffusion_for(
    model_cfg: Mapping[str, Any], diffusion_cfg: Mapping[str, Any], timestep_respacing: Any = None
) -> GaussianDiffusion:
    """The (respaced) diffusion a model samples with: learned Σ when the model outputs v,
    else ``diffusion_cfg.variance_type`` (the posterior variance β̃ by default)."""
    variance = (
        "learned_range"
        if learns_sigma(model_cfg)
        else diffusion_cfg.get("variance_type", "fixed_small")
    )
    return build_diffusion(
        diffusion_cfg["noise_schedule"],
        int(diffusion_cfg["diffusion_steps"]),
        timestep_respacing,
        variance,
    )

"""A ``model`` node's trained denoiser and the diffusion it samples with.

:func:`load_into` reads a project checkpoint or a public guided-diffusion state dict into a
:class:`~minority.models.denoiser.Denoiser` built from the node (by :mod:`minority.lit.build`);
:func:`load_diffusers_denoiser` reads a diffusers folder (whose v / ε conversion needs the ᾱ of
its noise schedule);
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
    check_trained_diffusion,
    learns_sigma,
    load_checkpoint,
    same_model,
)
from minority.models.denoiser import Denoiser
from minority.models.diffusers_unet import (
    DiffusersUNet,
    load_unet2d,
    read_diffusers_folder,
)


def load_into(
    denoiser: Denoiser,
    model_cfg: Mapping[str, Any],
    path: str | Path,
    diffusion_cfg: Mapping[str, Any] | None = None,
) -> Denoiser:
    """Load ``path`` into ``denoiser``, the ``model`` node's (freshly built); eval mode.

    ``path`` is a project checkpoint (a dict with ``state_dict``, ``model`` and ``diffusion``)
    or a public guided-diffusion state dict. A project checkpoint trained with another
    model node, or (when ``diffusion_cfg`` is given) another noise schedule or number of
    diffusion steps, or a state dict that does not fit, raises :class:`UserError` naming the
    difference.
    """
    content = load_checkpoint(path)
    if "state_dict" in content and "model" in content:
        saved = dict(content["model"])
        if not same_model(saved, model_cfg):
            raise UserError(
                f"Checkpoint {path} was trained with model {saved}, which differs from the "
                f"configured model {dict(model_cfg)}; pick the matching model config."
            )
        if diffusion_cfg is not None:
            check_trained_diffusion(path, content.get("diffusion") or {}, diffusion_cfg)
        content = content["state_dict"]
    if str(model_cfg["arch"]).startswith("adm"):
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

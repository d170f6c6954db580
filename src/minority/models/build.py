"""Denoisers around the backbone a ``model`` config node describes; the project's checkpoints.

A ``model`` node names its backbone by ``_target_`` (built by :mod:`minority.lit.build`) with
the backbone's arguments, and keeps ``arch``, the name checkpoints record: "mlp", "adm" and
"adm_sr" (the super-resolution UNet; both take guided-diffusion flags under ``flags``), or a
user's own name. A
project checkpoint is a ``.pt`` dict holding the EMA state dict with the model and diffusion
config it was trained with, so sampling can check that what it loads fits. A public
guided-diffusion ``.pt`` (a bare state dict) loads through ``model.checkpoint`` with the flags
of the ``model`` node. ``diffusers_unet2d`` is a diffusers UNet2DModel loaded from its folder
(the checkpoint path), which also gives its diffusion (:mod:`minority.models.diffusers_unet`).
Loading a trained denoiser and building the diffusion it samples with sit one layer up, in
:mod:`minority.diffusion.build` (a diffusers UNet's ε needs the diffusion's ᾱ).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from minority.errors import UserError
from minority.models.denoiser import Denoiser
from minority.outputs import load_torch_file, torch_save_atomic
from minority.weights import find_weights


def learns_sigma(model_cfg: Mapping[str, Any]) -> bool:
    """Whether the network outputs [ε, v] (learned variance): the node's ``learn_sigma``, else
    that of its guided-diffusion ``flags``; a backbone that names neither outputs ε alone."""
    if "learn_sigma" in model_cfg:
        return bool(model_cfg["learn_sigma"])
    return bool((model_cfg.get("flags") or {}).get("learn_sigma"))


def is_class_conditional(model_cfg: Mapping[str, Any]) -> bool:
    """Whether the network takes class labels (guided-diffusion's ``flags.class_cond``)."""
    return bool((model_cfg.get("flags") or {}).get("class_cond"))


def denoiser_for(net: nn.Module, model_cfg: Mapping[str, Any]) -> Denoiser:
    """A :class:`Denoiser` around ``net``, the backbone the ``model`` node describes."""
    return Denoiser(
        net,
        learns_sigma(model_cfg),
        is_class_conditional(model_cfg),
        super_res=model_cfg["arch"] == "adm_sr",
    )


def save_checkpoint(path: str | Path, denoiser: Denoiser, meta: Mapping[str, Any]) -> Path:
    """Write ``{"state_dict", **meta}`` atomically (a partial file never looks complete)."""
    return torch_save_atomic({"state_dict": denoiser.net.state_dict(), **meta}, path)


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself; a bare file name absent from the working directory (a preset's
    ``lsun_bedroom.pt``) is looked up in the weight folders (:func:`minority.weights.find_weights`).
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"Checkpoint {path} is a folder; give the checkpoint file inside it.")
    if path.parent == Path("."):
        return find_weights(path.name, purpose="diffusion checkpoint")
    raise UserError(f"Checkpoint {path} does not exist; train it first or give its path.")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file: a dict (a project checkpoint or a state dict); a clear error when
    it is missing, a folder, unreadable or something else (e.g. a bare tensor)."""
    path = checkpoint_file(path)
    content = load_torch_file(path, "Checkpoint", "give a denoiser checkpoint (.pt) instead")
    if not isinstance(content, Mapping):
        raise UserError(
            f"Checkpoint {path} holds a {type(content).__name__}, not a state dict or a "
            "checkpoint of train.py task=diffusion."
        )
    return content


TRAINED_DIFFUSION_KEYS = ("noise_schedule", "diffusion_steps")


def check_trained_diffusion(
    path: str | Path, saved: Mapping[str, Any], diffusion_cfg: Mapping[str, Any]
) -> None:
    """Stop when a project checkpoint was trained on another noise schedule or number of
    diffusion steps than the configured ``diffusion`` node."""
    for key in TRAINED_DIFFUSION_KEYS:
        if key in saved and str(saved[key]) != str(diffusion_cfg.get(key)):
            raise UserError(
                f"Checkpoint {path} was trained with diffusion.{key}={saved[key]}, but "
                f"diffusion.{key}={diffusion_cfg.get(key)} is configured; pick the matching "
                "diffusion config."
            )


def same_model(saved: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's ``model`` node is the configured one. A checkpoint written before
    backbones were named by ``_target_`` records only ``arch`` and the arguments; its ``arch``
    then stands for the backbone."""
    configured = dict(model_cfg)
    if "_target_" not in saved:
        configured.pop("_target_", None)
    return dict(saved) == configured

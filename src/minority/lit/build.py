"""The objects the config's ``_target_`` nodes describe: backbone, data source, guidance term,
weight schedule and initialisation policy (loggers, callbacks: :mod:`minority.tasks.common`).

Each group's node is the ``_target_``'s arguments, except a few descriptive keys the rest of
the project reads (run names, checkpoints, the report): ``model.arch``, ``guidance.name`` /
``guidance.scale``, ``init.name`` and ``logger.name`` are not passed. What the task knows
beyond a node (the guidance scale, a :class:`~minority.guidance.build.TermContext`) is passed
as keyword arguments. ``cfg`` is the whole config, for its ``allowed_targets``; None allows
``minority`` only. The built objects are plain Python classes that need no config (e.g.
``WeightSchedule(4.0, "var")``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minority.data.real import RealData
from minority.diffusion.build import load_diffusers_denoiser, load_into
from minority.errors import require
from minority.guidance.base import Guide, WeightSchedule
from minority.guidance.build import TermContext
from minority.instantiate import instantiate
from minority.models.build import denoiser_for
from minority.models.denoiser import Denoiser
from minority.models.diffusers_unet import DIFFUSERS_ARCH
from minority.sampling.init import Initialisation

# Keys of a group's node that describe it rather than being arguments of its _target_.
DESCRIPTIVE_KEYS = {
    "model": ("arch",),
    "guidance": ("name", "scale"),
    "init": ("name",),
    "logger": ("name",),
}


def arguments(node: Mapping[str, Any], group: str) -> dict[str, Any]:
    """``node`` without the group's descriptive keys: its ``_target_`` and arguments."""
    return {k: v for k, v in node.items() if k not in DESCRIPTIVE_KEYS.get(group, ())}


def build_network(model_cfg: Mapping[str, Any], cfg: Any = None) -> Any:
    """The bare backbone of a ``model`` node (random weights)."""
    require(
        model_cfg["arch"] != DIFFUSERS_ARCH,
        "A diffusers_unet2d model is loaded from its diffusers folder (checkpoint=<folder>); "
        "it cannot be built to train here.",
    )
    return instantiate(arguments(model_cfg, "model"), cfg)


def build_denoiser(model_cfg: Mapping[str, Any], cfg: Any = None) -> Denoiser:
    """A :class:`Denoiser` around the backbone of a ``model`` node (random weights)."""
    return denoiser_for(build_network(model_cfg, cfg), model_cfg)


def load_denoiser(
    model_cfg: Mapping[str, Any],
    path: str | Path,
    diffusion_cfg: Mapping[str, Any] | None = None,
    cfg: Any = None,
) -> Denoiser:
    """The ``model`` node's denoiser with the weights of ``path``, eval mode
    (:func:`minority.diffusion.build.load_into`); a diffusers model is its folder ``path``."""
    if model_cfg["arch"] == DIFFUSERS_ARCH:
        return load_diffusers_denoiser(path)
    return load_into(build_denoiser(model_cfg, cfg), model_cfg, path, diffusion_cfg)


def build_dataset(dataset_cfg: Mapping[str, Any], cfg: Any = None) -> RealData:
    """The in-memory dataset of a ``dataset`` node (toy2d, digits, or any ``format``'s
    images loaded whole)."""
    for key, value in dataset_cfg.items():
        require(value != "???", f"dataset.{key} is not set; give it with dataset.{key}=<value>.")
    return instantiate(dataset_cfg, cfg)


def build_schedule(
    scale: float, schedule_cfg: Mapping[str, Any], cfg: Any = None
) -> WeightSchedule:
    """The ``schedule`` node's weight schedule with guidance scale w = ``scale``."""
    return instantiate(schedule_cfg, cfg, scale=float(scale))


def build_init(init_cfg: Mapping[str, Any], cfg: Any = None) -> Initialisation:
    """The ``init`` node's initialisation policy."""
    return instantiate(arguments(init_cfg, "init"), cfg)


def build_guide(
    guidance_cfg: Mapping[str, Any],
    schedule_cfg: Mapping[str, Any],
    context: TermContext,
    cfg: Any = None,
) -> Guide | None:
    """The guide a config asks for; None for a ``guidance`` node without ``_target_``
    (``guidance=none``). The term's ``_target_`` is called with the node's arguments, and
    with ``context`` when it takes one (:func:`build_with_context`)."""
    if "_target_" not in guidance_cfg:
        return None
    term = build_with_context(arguments(guidance_cfg, "guidance"), context, cfg)
    return Guide(term, build_schedule(guidance_cfg["scale"], schedule_cfg, cfg))


def build_with_context(node: Mapping[str, Any], context: Any, cfg: Any = None) -> Any:
    """The object ``node`` describes, its ``_target_`` called with ``context=context`` when it
    has a parameter of that name. ``context`` is given to the partial Hydra builds, so that it
    arrives as it is (Hydra would turn a dataclass into a config)."""
    make = instantiate(node, cfg, _partial_=True)
    return make(context=context) if "context" in inspect.signature(make).parameters else make()

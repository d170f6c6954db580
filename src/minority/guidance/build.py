"""Build a :class:`Guide` (term + weight schedule) from plain ``guidance`` / ``schedule`` nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minority.errors import UserError
from minority.guidance.base import Guide, WeightSchedule
from minority.guidance.terms import TERMS


def build_schedule(scale: float, schedule_cfg: Mapping[str, Any]) -> WeightSchedule:
    return WeightSchedule(
        scale=float(scale),
        kind=str(schedule_cfg.get("kind", "var")),
        every=int(schedule_cfg.get("every", 1)),
        stop_fraction=float(schedule_cfg.get("stop_fraction", -1.0)),
    )


def build_guide(
    guidance_cfg: Mapping[str, Any], schedule_cfg: Mapping[str, Any], context: Mapping[str, Any]
) -> Guide | None:
    """The guide a config asks for; None for ``guidance=none``.

    ``context`` carries what terms may need beyond their own node (e.g. ``sample_shape``,
    ``num_steps``, ``classifier_ckpt``).
    """
    name = guidance_cfg.get("name", "none")
    if name == "none":
        return None
    if name not in TERMS:
        raise UserError(f"Unknown guidance '{name}'; choose one of {['none', *sorted(TERMS)]}.")
    schedule = build_schedule(guidance_cfg.get("scale", 0.0), schedule_cfg)
    return Guide(TERMS[name](guidance_cfg, context), schedule)

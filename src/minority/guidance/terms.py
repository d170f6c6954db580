"""The guidance terms selectable as ``guidance=<name>``, built from plain config nodes.

``context`` holds what the sampling task knows: ``sample_shape``, ``classifier_ckpt``,
``diffusion`` (its ``noise_schedule`` / ``diffusion_steps`` node) and ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from minority.guidance.base import GuidanceTerm
from minority.guidance.classifier import MinorityGuidance, load_minority_classifier
from minority.guidance.self_guidance import SelfGuidance
from minority.models.classifiers import classifier_spec

TermBuilder = Callable[[Mapping[str, Any], Mapping[str, Any]], GuidanceTerm]
TERMS: dict[str, TermBuilder] = {}


def register(name: str) -> Callable[[TermBuilder], TermBuilder]:
    """Register a builder ``(guidance_cfg, context) -> GuidanceTerm`` under ``guidance.name``."""

    def wrap(builder: TermBuilder) -> TermBuilder:
        TERMS[name] = builder
        return builder

    return wrap


@register("minority")
def minority_guidance(cfg: Mapping[str, Any], context: Mapping[str, Any]) -> MinorityGuidance:
    """Classifier guidance towards l̃ = ``target_class`` (None: L−1, the most unique class;
    a pair [low, high]: drawn per sample)."""
    diffusion = context["diffusion"]
    classifier = load_minority_classifier(
        cfg.get("classifier_ckpt") or context["classifier_ckpt"],
        sample_shape=context["sample_shape"],
        noise_schedule=diffusion["noise_schedule"],
        diffusion_steps=int(diffusion["diffusion_steps"]),
        extractor_weights=cfg.get("extractor_weights"),
    )
    target = cfg.get("target_class")
    target = classifier_spec(classifier)[0] - 1 if target is None else target
    return MinorityGuidance(classifier, target, seed=int(context.get("seed", 0)))


@register("self")
def self_guidance(cfg: Mapping[str, Any], context: Mapping[str, Any]) -> SelfGuidance:
    """Self-guidance: ascent on the reconstruction loss against the posterior mean."""
    return SelfGuidance(
        distance=cfg.get("distance", "lpips-alex"),
        p_ratio=float(cfg.get("p_ratio", 0.8)),
        perturb_t=cfg.get("perturb_t"),
        num_mc_samples=int(cfg.get("num_mc_samples", 1)),
        normalize=bool(cfg.get("normalize", True)),
        clip_denoised=bool(cfg.get("clip_denoised", False)),
        lpips_weights=cfg.get("lpips_weights"),
    )

"""Builders of the guidance terms that need what the task knows (a :class:`TermContext`).

A ``guidance`` node's ``_target_`` is called with the node's settings, and with ``context``
when it takes one; terms that need nothing from the task are named directly (self-guidance's
``_target_`` is :class:`~minority.guidance.self_guidance.SelfGuidance`).
"""

from __future__ import annotations

from minority.guidance.build import TermContext
from minority.guidance.classifier import MinorityGuidance, load_minority_classifier
from minority.models.classifiers import classifier_spec


def minority_guidance(
    context: TermContext,
    target_class: int | list[int] | None,
    classifier_ckpt: str | None,
    extractor_weights: str | None,
) -> MinorityGuidance:
    """Classifier guidance towards l̃ = ``target_class`` (None: L−1, the most unique class;
    a pair [low, high]: drawn per sample), with the classifier ``classifier_ckpt`` (None: the
    stage chain's, ``context.classifier_ckpt``)."""
    classifier = load_minority_classifier(
        classifier_ckpt or context.classifier_ckpt,
        sample_shape=context.sample_shape,
        noise_schedule=context.diffusion["noise_schedule"],
        diffusion_steps=int(context.diffusion["diffusion_steps"]),
        extractor_weights=extractor_weights,
    )
    target = classifier_spec(classifier)[0] - 1 if target_class is None else target_class
    return MinorityGuidance(classifier, target, seed=context.seed)

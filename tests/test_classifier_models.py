"""Minority-classifier networks: shapes, the spec used for mismatch checks, the ADM variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minority.errors import UserError
from minority.guidance.classifier import MinorityGuidance, check_classifier_fits
from minority.models.adm import MinorityCascadeClassifier
from minority.models.classifiers import build_classifier, classifier_spec

SMALL_ADM = {
    "classifier_width": 32,
    "classifier_depth": 1,
    "classifier_channel_mult": "1,2",
    "classifier_attention_resolutions": "4",
    "classifier_num_head_channels": 32,
}


@pytest.mark.parametrize(
    ("arch", "shape", "kwargs"),
    [
        ("mlp", (2,), {"hidden": 32}),
        ("mlp", (1, 8, 8), {"hidden": 32, "depth": 1}),
        ("conv", (1, 8, 8), {"width": 16}),
        ("conv", (3, 16, 16), {"width": 8, "channel_mult": [1, 2, 2]}),
        ("adm", (1, 8, 8), SMALL_ADM),
    ],
)
def test_classifiers_map_noisy_samples_to_logits(arch: str, shape: tuple, kwargs: dict) -> None:
    classifier = build_classifier(arch, 5, shape, **kwargs)
    logits = classifier(torch.randn(3, *shape), torch.tensor([0, 500, 999]))
    assert logits.shape == (3, 5)
    assert classifier_spec(classifier) == (5, shape)
    check_classifier_fits(classifier, 5, shape)
    with pytest.raises(UserError):
        check_classifier_fits(classifier, 6, shape)


def test_classifier_output_depends_on_the_timestep() -> None:
    classifier = build_classifier("conv", 4, (1, 8, 8), width=16)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(
        classifier(x, torch.tensor([0, 0])), classifier(x, torch.tensor([900, 900]))
    )


def test_unknown_arch_and_bad_shapes_are_user_errors() -> None:
    with pytest.raises(UserError):
        build_classifier("transformer", 4, (2,))
    with pytest.raises(UserError):
        build_classifier("conv", 4, (1, 6, 6), channel_mult=[1, 2, 2])
    with pytest.raises(UserError):
        build_classifier("adm", 4, (1, 8, 16), **SMALL_ADM)


def test_spec_of_an_unknown_module_is_a_user_error() -> None:
    with pytest.raises(UserError):
        classifier_spec(torch.nn.Linear(2, 3))
    term = MinorityGuidance(torch.nn.Linear(2, 3), 1, num_classes=3)
    assert term.num_classes == 3


def test_cascade_loads_its_frozen_extractor_and_trains_only_the_head(
    tmp_path: Path, load_golden
) -> None:
    fixture = load_golden("adm_classifier")
    extractor_file = tmp_path / "extractor.pt"
    torch.save(fixture["state_dict"], extractor_file)
    head = {
        "image_size": 8,
        "in_channels": 64,
        "classifier_width": 32,
        "classifier_depth": 1,
        "classifier_channel_mult": "1",
        "classifier_attention_resolutions": "8",
        "classifier_resblock_updown": False,
        "classifier_num_head_channels": 32,
    }
    cascade = build_classifier(
        "adm_cascade",
        7,
        (3, 32, 32),
        extractor_flags={**fixture["flags"], "classifier_channel_mult": "1,2,2"},
        head_flags=head,
        extractor_weights=str(extractor_file),
    )
    assert isinstance(cascade, MinorityCascadeClassifier)
    assert classifier_spec(cascade) == (7, (3, 32, 32))
    features = cascade.extractor.features(fixture["x"], fixture["t"])
    torch.testing.assert_close(features, fixture["f_out_features"], atol=1e-5, rtol=1e-5)
    assert cascade(fixture["x"], fixture["t"]).shape == (2, 7)
    trainable = {n.split(".")[0] for n, p in cascade.named_parameters() if p.requires_grad}
    assert trainable == {"head"}
    with pytest.raises(UserError):
        build_classifier("adm_cascade", 7, (3, 64, 64), extractor_flags=fixture["flags"])

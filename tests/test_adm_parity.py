"""ADM networks against the golden fixtures produced by the official guided-diffusion code."""

from __future__ import annotations

import pytest
import torch

from minority.models.adm import (
    EncoderUNetModel,
    create_classifier,
    create_model,
    load_adm_checkpoint,
)

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["adm_unet", "adm_unet_cond"])
@pytest.mark.parametrize(
    ("flags_key", "out_key"),
    [("flags", "out"), ("flags_new_attention_order", "out_new_attention_order")],
)
def test_unet_reproduces_official_output(load_golden, fixture, flags_key, out_key):
    golden = load_golden(fixture)
    model = create_model(golden[flags_key]).eval()
    load_adm_checkpoint(model, golden["state_dict"])
    with torch.no_grad():
        out = model(golden["x"], golden["t"], golden.get("y"))
    torch.testing.assert_close(out, golden[out_key], **TOL)


def test_attention_orders_differ_on_the_same_weights(load_golden):
    golden = load_golden("adm_unet")
    gap = (golden["out"] - golden["out_new_attention_order"]).abs().max()
    assert gap > 1e-3, "the fixture could not tell the two attention orders apart"


@pytest.fixture(scope="module")
def golden_classifier(load_golden):
    golden = load_golden("adm_classifier")
    mult = ",".join(str(m) for m in golden["ctor_kwargs"]["channel_mult"])
    classifier = create_classifier({**golden["flags"], "classifier_channel_mult": mult}).eval()
    load_adm_checkpoint(classifier, golden["state_dict"])
    return golden, classifier


def test_classifier_reproduces_official_logits(golden_classifier):
    golden, classifier = golden_classifier
    with torch.no_grad():
        logits = classifier(golden["x"], golden["t"])
    torch.testing.assert_close(logits, golden["logits"], **TOL)


def test_classifier_middle_block_features(golden_classifier):
    golden, classifier = golden_classifier
    with torch.no_grad():
        features = classifier.features(golden["x"], golden["t"])
    torch.testing.assert_close(features, golden["f_out_features"], **TOL)


def test_constructor_kwargs_build_the_same_classifier(golden_classifier):
    golden, classifier = golden_classifier
    direct = EncoderUNetModel(**golden["ctor_kwargs"]).eval()
    load_adm_checkpoint(direct, golden["state_dict"])
    with torch.no_grad():
        assert torch.equal(direct(golden["x"], golden["t"]), classifier(golden["x"], golden["t"]))

"""Ground-truth metrics of the embedded data: toy2d by hand, digits classifier accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minority.data.digits import load_digits_images
from minority.data.toy2d import GaussianMixture2D
from minority.errors import UserError
from minority.metrics.ground_truth import (
    classify_digits,
    digits_class_shares,
    fit_digits_classifier,
    toy2d_ground_truth,
)


def test_toy2d_ground_truth_by_hand():
    mixture = GaussianMixture2D(means=[[0, 0], [10, 0]], stds=[1.0, 0.5], weights=[0.9, 0.1])
    samples = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 1.2], [50.0, 50.0]])

    def density(x, y):
        heavy = 0.9 / (2 * math.pi) * math.exp(-(x**2 + y**2) / 2)
        light = 0.1 / (2 * math.pi * 0.25) * math.exp(-((x - 10) ** 2 + y**2) / (2 * 0.25))
        return heavy + light

    # The last point's density underflows: log-density by hand from the heavy component,
    # log(0.9 / 2π) − (50² + 50²) / 2, plus the negligible light term.
    far = math.log(0.9 / (2 * math.pi)) - 2500.0
    expected_log = [math.log(density(0, 0)), math.log(density(10, 0)), math.log(density(10, 1.2))]
    got = toy2d_ground_truth(mixture, samples)
    assert got["mean_log_density"] == pytest.approx((sum(expected_log) + far) / 4, rel=1e-9)
    assert got["component_0_share"] == 0.25
    assert got["component_1_share"] == 0.5  # (10, 1.2) is 2.4 stds from the light mean
    assert got["light_share"] == 0.5
    assert got["off_manifold_share"] == 0.25


def test_toy2d_ground_truth_rejects_images():
    mixture = GaussianMixture2D(means=[[0, 0]], stds=[1.0], weights=[1.0])
    with pytest.raises(UserError, match="toy2d samples"):
        toy2d_ground_truth(mixture, torch.zeros(3, 1, 8, 8))


def test_digits_classifier_generalises():
    x, labels = load_digits_images()
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    flat = x.reshape(len(x), -1).numpy()
    classifier = fit_digits_classifier(flat[train], labels.numpy()[train])
    accuracy = (classifier.predict(flat[test]) == labels.numpy()[test]).mean()
    assert accuracy > 0.95


def test_digits_shares_from_float_and_uint8_samples():
    x, labels = load_digits_images()
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(classify_digits(x[:50]), classify_digits(as_uint8[:50]))
    shares = digits_class_shares(x, rare_classes=(3, 8))
    true_shares = np.bincount(labels.numpy(), minlength=10) / len(labels)
    got = np.array([shares[f"class_{c}_share"] for c in range(10)])
    np.testing.assert_allclose(got, true_shares, atol=0.01)
    assert shares["rare_class_share"] == pytest.approx(got[3] + got[8])

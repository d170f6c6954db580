"""The papers' metric conventions: truncated uint8 samples, TensorFlow's legacy bilinear resize,
and a real-feature cache that is reused until its source files change."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pipeline_helpers import make_config

from minority.data.images import build_image_dataset
from minority.metrics import features as features_module
from minority.metrics.features import (
    FeatureExtractor,
    cached_dataset_features,
    pixels,
    tf_legacy_resize_bilinear,
)
from minority.outputs import to_uint8_nhwc
from minority.provenance import file_fingerprint


def legacy_bilinear_reference(image: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow's legacy rule pixel by pixel: src = dst · in / out, floor and clamp."""
    height, width = image.shape
    out = np.empty((size, size), np.float64)
    for i in range(size):
        y = i * height / size
        y0 = math.floor(y)
        y1, wy = min(y0 + 1, height - 1), y - y0
        for j in range(size):
            x = j * width / size
            x0 = math.floor(x)
            x1, wx = min(x0 + 1, width - 1), x - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * wx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * wx
            out[i, j] = top + (bottom - top) * wy
    return out


@pytest.mark.parametrize(("shape", "size"), [((7, 5), 11), ((16, 16), 23), ((30, 12), 8)])
def test_tf_legacy_resize_equals_the_closed_form(shape, size):
    image = np.random.default_rng(0).uniform(0, 255, shape)
    got = tf_legacy_resize_bilinear(torch.tensor(image)[None, None], size)[0, 0].double().numpy()
    np.testing.assert_allclose(got, legacy_bilinear_reference(image, size), atol=1e-3)


def test_tf_legacy_resize_differs_from_half_pixel_bilinear():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    half_pixel = torch.nn.functional.interpolate(x, (12, 12), mode="bilinear", align_corners=False)
    legacy = tf_legacy_resize_bilinear(x, 12)
    assert legacy[0, 0, 0, 0] == 0 and not torch.allclose(legacy, half_pixel)


@pytest.mark.slow
def test_tf_legacy_resize_equals_tensorflows_own():
    tf = pytest.importorskip("tensorflow")
    image = np.random.default_rng(1).uniform(0, 255, (2, 37, 45, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(image, (299, 299), align_corners=False).numpy()
    got = tf_legacy_resize_bilinear(torch.from_numpy(image).permute(0, 3, 1, 2), 299)
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, atol=1e-3)


def test_saved_samples_are_truncated_as_the_authors_samplers_do():
    x = torch.linspace(-1.2, 1.2, 2001).reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
    expected = ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    stored = to_uint8_nhwc(x)
    np.testing.assert_array_equal(stored, expected)
    just_below = torch.full((1, 3, 1, 1), (200.9 / 127.5) - 1)
    assert to_uint8_nhwc(just_below).item(0) == 200  # truncated, where rounding gives 201


class CountingPixels(FeatureExtractor):
    """The ``pixels`` extractor counting the images it sees (a timing-free hook)."""

    def __init__(self) -> None:
        super().__init__("pixels", None, pixels, batch_size=4)
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return super().__call__(images)


def write_images(root, count: int) -> None:
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")


def test_real_features_are_computed_once_and_recomputed_when_a_source_file_changes(tmp_path):
    images, cache = tmp_path / "images", tmp_path / "cache"
    write_images(images, 10)
    cfg = {"name": "fake", "format": "folder", "root": str(images), "image_size": 8}

    def features(extractor):
        dataset = build_image_dataset(cfg)
        return cached_dataset_features(extractor, dataset, dataset.source_files, cfg, cache)

    extractor = CountingPixels()
    first = features(extractor)
    assert first.shape == (10, 192) and extractor.seen == 10
    again = features(extractor)
    assert extractor.seen == 10 and torch.equal(again, first)  # reused, not recomputed
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "3.png")
    os.utime(images / "3.png", ns=(1, 1))
    changed = features(extractor)
    assert extractor.seen == 20 and not torch.equal(changed, first)
    np.testing.assert_array_equal(changed[3].numpy(), -np.ones(192, np.float32))
    assert len(list(cache.glob("pixels-*.pt"))) == 2
    assert features_module.source_key(cfg, []) != features_module.source_key(
        cfg | {"image_size": 4}, []
    )


def test_a_changed_extractor_version_or_weight_file_recomputes_the_real_features(
    tmp_path, monkeypatch
):
    images, cache = tmp_path / "images", tmp_path / "cache"
    write_images(images, 6)
    cfg = {"name": "fake", "format": "folder", "root": str(images), "image_size": 8}
    dataset = build_image_dataset(cfg)
    extractor = CountingPixels()

    def features():
        return cached_dataset_features(extractor, dataset, dataset.source_files, cfg, cache)

    features()
    features()
    assert extractor.seen == 6  # same identity: reused
    monkeypatch.setattr(features_module, "FEATURES_VERSION", features_module.FEATURES_VERSION + 1)
    features()
    assert extractor.seen == 12  # new code version: recomputed
    extractor.weights = "another weight file"
    features()
    assert extractor.seen == 18  # new weights: recomputed
    extractor.preprocess = lambda x: pixels(x) * 1
    features()
    assert extractor.seen == 24  # new preprocessing: recomputed
    features()
    assert extractor.seen == 24 and len(list(cache.glob("pixels-*.pt"))) == 4


def test_the_extractor_identity_carries_the_weight_files_content(tmp_path):
    name = "torchvision:mobilenet_v3_small"
    weights = tmp_path / features_module.torchvision_spec("mobilenet_v3_small").filename
    model = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(model.state_dict(), weights)
    first = features_module.get_feature_extractor(name, weights_path=weights)
    assert first.identity()["weights"] == file_fingerprint(weights)
    model.classifier[0].bias.data += 1
    torch.save(model.state_dict(), weights)
    second = features_module.get_feature_extractor(name, weights_path=weights)
    assert second.identity()["weights"] == file_fingerprint(weights) != first.identity()["weights"]
    assert first.identity()["preprocess"] == second.identity()["preprocess"]


def test_evaluate_streams_the_reference_once_and_prints_its_values(tmp_path, monkeypatch, capsys):
    from pipeline_helpers import make_config

    from minority.tasks.evaluate import evaluate_task

    images = tmp_path / "images"
    write_images(images, 30)
    samples = np.random.default_rng(4).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    passes = []
    compute = features_module.dataset_features
    monkeypatch.setattr(
        features_module,
        "dataset_features",
        lambda *args, **kwargs: passes.append(1) or compute(*args, **kwargs),
    )
    cfg = make_config(
        "evaluate",
        tmp_path,
        "dataset=image_folder",
        f"dataset.root={images}",
        "dataset.image_size=8",
        f"npz={tmp_path / 'samples.npz'}",
        "metrics.columns.fid.reference=unique",
        "metrics.unique_fraction=0.5",
        "metrics.k_lof=5",
        "run_dir=null",
    )
    first = evaluate_task(cfg)
    second = evaluate_task(cfg)
    assert len(passes) == 1 and first == second
    printed = capsys.readouterr().out
    lines = dict(line.split(maxsplit=1) for line in printed.strip().splitlines()[-9:])
    assert lines["fid"] == f"{first['fid']:.6g}" and lines["recall"] == f"{first['recall']:.6g}"


def test_the_number_of_loader_workers_reuses_the_cached_features(tmp_path):
    from omegaconf import OmegaConf

    from minority.tasks.evaluate import RealSet

    write_images(tmp_path / "images", 6)
    mcfg = OmegaConf.create({"cache_dir": str(tmp_path / "cache")})
    cfg = {"name": "fake", "format": "folder", "root": str(tmp_path / "images"), "image_size": 8}
    extractor = CountingPixels()
    first = RealSet(cfg | {"num_workers": 0}, mcfg).features(extractor)
    again = RealSet(cfg | {"num_workers": 1}, mcfg).features(extractor)
    assert extractor.seen == 6 and torch.equal(again, first)
    assert len(list((tmp_path / "cache").glob("pixels-*.pt"))) == 1


def test_one_unique_subset_chosen_in_its_space_serves_every_column_of_a_row(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from minority.metrics.reference import most_unique_indices
    from minority.tasks import evaluate

    write_images(tmp_path / "images", 40)
    first_channel = FeatureExtractor("first_channel", None, lambda x: pixels(x)[:, :64])
    monkeypatch.setattr(
        evaluate,
        "get_feature_extractor",
        lambda name, *args: (
            first_channel if name == "first_channel" else FeatureExtractor("pixels", None, pixels)
        ),
    )
    seen = []
    compute = evaluate.compute_metrics
    monkeypatch.setattr(
        evaluate,
        "compute_metrics",
        lambda g, r, *a, **kw: seen.append(r) or compute(g, r, *a, **kw),
    )
    columns = {
        "fid": {"features": "pixels", "metric": "fid", "reference": "unique"},
        "precision": {"features": "first_channel", "metric": "precision", "reference": "unique"},
    }
    mcfg = OmegaConf.create(
        {
            "columns": columns,
            "unique_features": "first_channel",
            "unique_fraction": 0.25,
            "k_avgknn": 5,
            "k_lof": 5,
            "k_rarity": 3,
            "k_manifold": 3,
            "weights": {},
            "device": "cpu",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    composed = make_config(
        "evaluate",
        tmp_path,
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'images'}",
        "dataset.image_size=8",
    )
    dataset = OmegaConf.to_container(composed.dataset, resolve=True)
    real = evaluate.RealSet(dataset, mcfg)
    samples = np.random.default_rng(5).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    evaluate.feature_metrics(samples, real, mcfg)
    all_pixels = real.features(FeatureExtractor("pixels", None, pixels))
    unique = most_unique_indices(all_pixels[:, :64], 0.25)
    assert len(unique) == 10 and not torch.equal(unique, most_unique_indices(all_pixels, 0.25))
    expected = {64: all_pixels[unique][:, :64], 192: all_pixels[unique]}
    assert sorted(r.shape[1] for r in seen) == [64, 192]
    for used in seen:
        torch.testing.assert_close(torch.as_tensor(used), expected[used.shape[1]], rtol=0, atol=0)

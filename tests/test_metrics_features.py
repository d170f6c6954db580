"""Feature extractors: preprocessing, offline weight lookup and loading, the feature cache.

No pretrained weights exist here, so the loading paths are exercised with small stand-ins saved
under the canonical file names: a scripted network with the TorchScript Inception's layer names,
and a randomly initialised torchvision model.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from cleanfid.resize import make_resizer
from torch import nn

from minority.errors import MissingWeightsError, UserError
from minority.metrics import features as features_module
from minority.metrics.features import (
    CLEANFID_INCEPTION,
    INCEPTION_TRUNK_TO_MIXED_6,
    cached_features,
    clean_resize,
    drop_last_linear,
    get_feature_extractor,
    imagenet_input,
    to_float255,
)


class Mixed6(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 9, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 2


class FakeInception(nn.Module):
    """Layer names of NVIDIA's TorchScript Inception; 17 × 17 maps at ``mixed_6`` from 299."""

    def __init__(self) -> None:
        super().__init__()
        stages: OrderedDict[str, nn.Module] = OrderedDict(
            (name, nn.Identity()) for name in INCEPTION_TRUNK_TO_MIXED_6
        )
        stages["conv"] = nn.Conv2d(3, 4, 3, stride=2)
        stages["pool1"] = nn.AdaptiveAvgPool2d(35)
        stages["mixed_3"] = nn.AdaptiveMaxPool2d(17)
        stages["mixed_6"] = Mixed6()
        stages["mixed_7"] = nn.Conv2d(9, 2048, 1)
        stages["pool2"] = nn.AdaptiveAvgPool2d(1)
        self.layers = nn.Sequential(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(autouse=True)
def no_standard_weights(monkeypatch, tmp_path):
    """Empty standard search folders, so only the files a test creates are found."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(empty))
    monkeypatch.delenv("MINORITY_WEIGHTS", raising=False)
    monkeypatch.setattr(features_module, "cleanfid_cache_dir", lambda: empty)


@pytest.fixture
def inception_dir(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(FakeInception().eval()).save(str(folder / CLEANFID_INCEPTION))
    return folder


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_clean_resize_matches_cleanfid(images):
    x = to_float255(images)
    resize = make_resizer("PIL", False, "bicubic", (299, 299))
    expected = np.stack([resize(img.permute(1, 2, 0).numpy()) for img in x])
    got = clean_resize(x).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, expected)


def test_uint8_nhwc_and_grayscale_inputs():
    gray = torch.randint(0, 256, (2, 5, 5, 1), dtype=torch.uint8)
    x = to_float255(gray)
    assert x.shape == (2, 3, 5, 5)
    assert torch.equal(x[:, 2], gray[..., 0].float())
    float_input = gray.permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(to_float255(float_input), x, rtol=0, atol=1e-4)


def test_inception_pool3_and_sfid_features(inception_dir, images):
    fake = features_module.load_cleanfid_inception(inception_dir, torch.device("cpu"))
    x = (clean_resize(to_float255(images)) - 128) / 128
    pool3 = get_feature_extractor("inception", weights_path=inception_dir, batch_size=2)
    got = pool3(images)
    assert got.shape == (3, 2048) and pool3.dim == 2048
    torch.testing.assert_close(got, fake.layers(x).flatten(1))

    sfid = get_feature_extractor("sfid_inception", weights_path=inception_dir)
    got = sfid(images)
    assert got.shape == (3, 2023) and sfid.dim == 2023
    trunk = x
    for name in INCEPTION_TRUNK_TO_MIXED_6:
        trunk = getattr(fake.layers, name)(trunk)
    expected = fake.layers.mixed_6.conv(trunk)[:, :7].permute(0, 2, 3, 1).flatten(1)
    torch.testing.assert_close(got, expected)


def test_inception_is_found_in_the_weights_folders(monkeypatch, inception_dir, images):
    monkeypatch.setenv("MINORITY_WEIGHTS", str(inception_dir))
    assert get_feature_extractor("inception")(images[:1]).shape == (1, 2048)
    monkeypatch.delenv("MINORITY_WEIGHTS")
    monkeypatch.setattr(features_module, "cleanfid_cache_dir", lambda: inception_dir)
    assert get_feature_extractor("sfid_inception")(images[:1]).shape == (1, 2023)


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("inception", CLEANFID_INCEPTION),
        ("sfid_inception", CLEANFID_INCEPTION),
        ("vgg16_fc2", "vgg16-397923af.pth"),
        ("resnet50_pool", "resnet50-0676ba61.pth"),
        ("inception_v3_pool", "inception_v3_google-0cc3c7bd.pth"),
        ("torchvision:resnet18", "resnet18-f37072fd.pth"),
    ],
)
def test_missing_weights_name_the_file(name, filename):
    with pytest.raises(MissingWeightsError, match=filename):
        get_feature_extractor(name)


def test_torchvision_model_by_name_loads_a_weight_file(tmp_path, images):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    path = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    torch.save(model.state_dict(), path)
    extractor = get_feature_extractor("torchvision:mobilenet_v3_small", weights_path=tmp_path)
    got = extractor(images)
    assert got.shape == (3, 1024) and extractor.dim == 1024
    with torch.no_grad():
        expected = drop_last_linear(model)(imagenet_input(to_float255(images), 224))
    torch.testing.assert_close(got, expected)


def test_a_wrong_weight_file_is_a_user_error(tmp_path):
    path = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    torch.save({"unrelated": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="does not fit"):
        get_feature_extractor("torchvision:mobilenet_v3_small", weights_path=path)


def test_unknown_extractor_is_a_user_error():
    with pytest.raises(UserError, match="Unknown feature extractor"):
        get_feature_extractor("clip")


def test_pixels_flatten_samples():
    digits = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(get_feature_extractor("pixels")(digits), digits.reshape(4, 64))
    points = torch.randn(5, 2)
    assert torch.equal(get_feature_extractor("pixels")(points), points)


@pytest.mark.slow
def test_vgg16_fc2_is_the_second_fully_connected_layer_after_relu():
    vgg = torchvision.models.vgg16().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = vgg.classifier[:5](torch.flatten(vgg.avgpool(vgg.features(x)), 1))
        got = drop_last_linear(vgg)(x)
    assert got.shape == (1, 4096)
    torch.testing.assert_close(got, expected)


def test_cached_features_compute_once_per_data(tmp_path):
    calls = []

    def extractor(images):
        calls.append(len(images))
        return torch.as_tensor(images, dtype=torch.float32).reshape(len(images), -1) * 2

    a, b = np.arange(12.0).reshape(3, 4), np.arange(12.0).reshape(3, 4) + 1
    first = cached_features(extractor, a, tmp_path, name="double")
    again = cached_features(extractor, a, tmp_path, name="double")
    other = cached_features(extractor, b, tmp_path, name="double")
    assert calls == [3, 3]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len(list(tmp_path.glob("double-*.pt"))) == 2

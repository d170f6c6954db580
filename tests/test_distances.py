"""Distances: closed forms, and LPIPS loading its trunk from a local file only."""

from __future__ import annotations

import pytest
import torch
import torchvision

from minority.errors import MissingWeightsError, UserError
from minority.scores.distances import build_distance


def test_plain_distances_closed_forms() -> None:
    a = torch.zeros(2, 1, 2, 2)
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 0.0, 0.0, 4.0]).reshape(2, 1, 2, 2)
    torch.testing.assert_close(build_distance("l2")(a, b), torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(build_distance("mse")(a, b), torch.tensor([1.0, 25.0 / 4]))
    torch.testing.assert_close(build_distance("l1")(a, b), torch.tensor([1.0, 7.0 / 4]))
    with pytest.raises(UserError):
        build_distance("cosine")


def test_lpips_without_trunk_file_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        build_distance("lpips-alex")


def test_lpips_loads_trunk_from_torch_hub_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    trunk = torchvision.models.alexnet(weights=None)
    torch.save(trunk.state_dict(), folder / "alexnet-owt-7be5be79.pth")
    distance = build_distance("lpips-alex")
    torch.testing.assert_close(distance.lpips.net.slice1[0].weight, trunk.features[0].weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(distance(x, x), torch.zeros(2), atol=1e-6)
    y = x.clone()
    y[1] = -y[1]
    d = distance(x, y)
    assert d[0].abs() < 1e-6 and d[1] > 0
    gray = torch.rand(2, 1, 32, 32)
    assert distance(gray, gray).shape == (2,)

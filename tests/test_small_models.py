"""The MLP denoiser: vectors and flattened images of its size in, ε of the same shape out; any
other size is one sentence naming both sizes."""

from __future__ import annotations

import pytest
import torch

from minority.errors import UserError
from minority.models.small import MLPNet


@pytest.mark.parametrize("shape", [(5, 12), (5, 3, 2, 2)])
def test_output_has_the_input_shape(shape: tuple[int, ...]) -> None:
    net = MLPNet(dim=12, hidden=16, depth=2)
    out = net(torch.randn(shape), torch.zeros(shape[0], dtype=torch.long))
    assert out.shape == shape


def test_learned_sigma_doubles_the_channels() -> None:
    net = MLPNet(dim=12, hidden=16, depth=2, learn_sigma=True)
    out = net(torch.randn(5, 3, 2, 2), torch.zeros(5, dtype=torch.long))
    assert out.shape == (5, 6, 2, 2)


def test_samples_of_another_size_are_one_sentence() -> None:
    net = MLPNet(dim=2, hidden=16, depth=2)
    with pytest.raises(UserError, match=r"takes samples of 2 values .* shape \(3, 8, 8\) \(192"):
        net(torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))

"""Inference options (minority.models.runtime): bfloat16 autocast and guided-diffusion's
convert_to_fp16 semantics against float32 on CPU, channels-last, checkpointing, compile fallback.

Tolerance of the half-precision paths (stated in the README, "Precision and speed"): on a
random-weight ADM UNet and classifier with every layer non-zero, the output differs from
float32 by at most 5 % of the output's largest magnitude and by at most 3 % in relative L2
norm (bfloat16 keeps 8 significant bits, about 0.4 % per rounding, compounded over the blocks).
"""

from __future__ import annotations

import pytest
import torch
from adm_helpers import random_state_dict
from pipeline_helpers import make_config
from torch import nn

from minority.errors import UserError
from minority.models import runtime
from minority.models.adm import create_classifier, create_model
from minority.models.adm.layers import GroupNorm32
from minority.models.runtime import CompiledOrEager, prepare_network
from minority.tasks.common import plain

FLAGS = dict(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    attention_resolutions="16,8",
    num_head_channels=16,
    channel_mult="1,2,2",
    use_scale_shift_norm=True,
    resblock_updown=True,
    learn_sigma=True,
)
ADM = {"_target_": "minority.models.adm.create_model", "arch": "adm", "flags": FLAGS}
CLASSIFIER_FLAGS = dict(
    image_size=32,
    classifier_width=32,
    classifier_depth=1,
    classifier_attention_resolutions="16,8",
    classifier_num_head_channels=16,
    classifier_channel_mult="1,2,2",
    out_channels=10,
)
MAX_ABS, REL_L2 = 5e-2, 3e-2


def _randomised(net: nn.Module, seed: int = 0) -> dict:
    """A state dict for ``net`` with small random values in the zero-initialised layers."""
    generator = torch.Generator().manual_seed(seed)
    state = net.state_dict()
    return {
        k: 0.02 * torch.randn(v.shape, generator=generator) if not v.any() else v
        for k, v in state.items()
    }


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.tensor([10, 700])


def _unet(state: dict, **extra) -> nn.Module:
    net = create_model({**FLAGS, **extra})
    net.load_state_dict(state)
    return net.eval()


def _classifier(state: dict, **extra) -> nn.Module:
    net = create_classifier({**CLASSIFIER_FLAGS, **extra})
    net.load_state_dict(state)
    return net.eval()


def _assert_half_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == torch.float32
    error = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert 0 < error <= MAX_ABS * scale, (error, scale)
    assert ((out - ref).norm() / ref.norm()).item() <= REL_L2


@pytest.mark.parametrize("mode", ["autocast", "convert"])
def test_bfloat16_unet_agrees_with_float32(mode: str, inputs) -> None:
    state = random_state_dict(ADM)
    x, t = inputs
    with torch.no_grad():
        ref = _unet(state)(x, t)
        out = prepare_network(_unet(state, dtype="bfloat16"), mode)(x, t)
    _assert_half_close(out, ref)


@pytest.mark.parametrize("mode", ["autocast", "convert"])
def test_bfloat16_classifier_agrees_with_float32(mode: str, inputs) -> None:
    state = _randomised(create_classifier(CLASSIFIER_FLAGS))
    x, t = inputs
    with torch.no_grad():
        ref = _classifier(state)(x, t)
        out = prepare_network(_classifier(state, classifier_dtype="bfloat16"), mode)(x, t)
    _assert_half_close(out, ref)


def test_convert_keeps_normalisation_embeddings_and_head_in_float32() -> None:
    net = prepare_network(create_model({**FLAGS, "dtype": "bfloat16"}), "convert")
    torso = [net.input_blocks, net.middle_block, net.output_blocks]
    convs = [m for part in torso for m in part.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    float32 = [*net.time_embed.parameters(), *net.out.parameters()]
    float32 += [
        p for m in net.modules() if isinstance(m, (GroupNorm32, nn.Linear)) for p in m.parameters()
    ]
    assert float32 and all(p.dtype == torch.float32 for p in float32)


def test_convert_of_a_float32_model_changes_nothing(inputs) -> None:
    state = random_state_dict(ADM)
    x, t = inputs
    with torch.no_grad():
        assert torch.equal(prepare_network(_unet(state), "convert")(x, t), _unet(state)(x, t))


def test_channels_last_matches_contiguous(inputs) -> None:
    state = random_state_dict(ADM)
    x, t = inputs
    with torch.no_grad():
        ref = _unet(state)(x, t)
        out = prepare_network(_unet(state), channels_last=True)(x, t)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_checkpointing_keeps_the_input_gradient(inputs) -> None:
    state = random_state_dict(ADM)
    x, t = inputs

    def gradient(net: nn.Module) -> torch.Tensor:
        x_in = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x_in, t).square().sum(), x_in)
        return g

    plain = gradient(_unet(state).requires_grad_(False))
    checkpointed = prepare_network(_unet(state).requires_grad_(False), checkpointing=True)
    assert all(m.use_checkpoint for m in checkpointed.modules() if hasattr(m, "use_checkpoint"))
    torch.testing.assert_close(gradient(checkpointed), plain, atol=1e-6, rtol=1e-5)


def test_compile_failure_falls_back_to_eager(monkeypatch, inputs) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(runtime.torch, "compile", lambda net: broken)
    net = nn.Linear(3, 2)
    wrapped = CompiledOrEager(net)
    x = torch.randn(4, 3)
    with pytest.warns(UserWarning, match="running eagerly"):
        out = wrapped(x)
    torch.testing.assert_close(out, net(x))
    torch.testing.assert_close(wrapped(x), net(x))


def test_unknown_mode_and_convert_of_a_non_adm_network_are_user_errors() -> None:
    with pytest.raises(UserError, match="precision.mode"):
        prepare_network(nn.Linear(2, 2), "fp8")
    with pytest.raises(UserError, match="ADM network"):
        prepare_network(nn.Linear(2, 2), "convert")


def test_sample_config_precision_node_fits_prepare_network(tmp_path) -> None:
    cfg = make_config("sample", tmp_path, "precision.channels_last=true")
    net = create_model(FLAGS)
    assert prepare_network(net, **plain(cfg.precision)) is net
    assert net.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)

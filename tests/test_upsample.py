"""The 64→256 upsampling stage: low-res conditioning in the Denoiser and in sample.py.

A tiny upsampler of the public checkpoint's architecture (32×32 from 8×8, width 32) keeps the
runs fast; the preset at full size runs in ``test_presets.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from adm_helpers import FAST, random_state_dict, save_random_checkpoint
from pipeline_helpers import make_config

from minority.diffusion.build import build_diffusion_for
from minority.errors import UserError
from minority.lit.build import load_denoiser
from minority.models.adm import create_sr_model
from minority.models.denoiser import Denoiser
from minority.outputs import to_uint8_nhwc
from minority.sampling.loop import sample
from minority.seeding import SeededNoise
from minority.tasks.common import plain
from minority.tasks.sample import sample_task

TINY = (
    "model=adm_upsampler64_256",
    "diffusion=linear",
    "model.flags.large_size=32",
    "model.flags.small_size=8",
    "model.flags.channel_mult='1,2'",
    "model.flags.attention_resolutions='16'",
    "model.flags.num_channels=32",
    "model.flags.num_res_blocks=1",
)
SR_FLAGS = {
    "large_size": 32,
    "small_size": 8,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_channels": 32,
    "num_res_blocks": 1,
    "class_cond": True,
    "learn_sigma": True,
}


def nchw_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [−1, 1], guided-diffusion's low_res."""
    return torch.from_numpy(images).float().div(127.5).sub(1).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def sr_denoiser() -> Denoiser:
    net = create_sr_model(SR_FLAGS)
    net.load_state_dict(
        random_state_dict(
            {"_target_": "minority.models.adm.create_sr_model", "arch": "adm_sr", "flags": SR_FLAGS}
        )
    )
    return Denoiser(net.eval(), learn_sigma=True, class_cond=True, super_res=True)


def test_the_denoiser_passes_its_low_res_images_to_the_network(sr_denoiser: Denoiser) -> None:
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.tensor([1, 2])
    low_res = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        got = sr_denoiser.with_low_res(low_res)(x, t, y)
        eps, v = sr_denoiser.net(x, t, low_res, y).chunk(2, dim=1)
        other = sr_denoiser.with_low_res(-low_res)(x, t, y).eps
        stacked = sr_denoiser.with_low_res(low_res)(torch.cat([x, x]), t.repeat(2), y.repeat(2))
    assert torch.equal(got.eps, eps) and torch.equal(got.var_values, v)
    assert not torch.allclose(other, eps)
    torch.testing.assert_close(stacked.eps, torch.cat([eps, eps]), rtol=1e-5, atol=1e-6)


def test_low_res_images_belong_to_super_res_models_only(sr_denoiser: Denoiser) -> None:
    with pytest.raises(UserError, match="upsample.low_res_npz"):
        sr_denoiser(torch.randn(1, 3, 32, 32), torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(UserError, match="super-resolution"):
        Denoiser(torch.nn.Identity()).with_low_res(torch.zeros(1, 3, 8, 8))


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": labels}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory) -> tuple[Path, Path]:
    """(work root, checkpoint of the tiny upsampler)."""
    root = tmp_path_factory.mktemp("upsample")
    ckpt = save_random_checkpoint(make_config("sample", root, *TINY), root / "upsampler.pt")
    return root, ckpt


def upsample(upsampler: tuple[Path, Path], npz: Path, name: str, *overrides: str) -> dict:
    root, ckpt = upsampler
    cfg = make_config(
        "sample",
        root,
        *TINY,
        *FAST,
        f"checkpoint={ckpt}",
        f"upsample.low_res_npz={npz}",
        *overrides,
        run_dir=root / name,
    )
    with np.load(sample_task(cfg)) as archive:
        return {"images": archive["arr_0"], "labels": archive["arr_1"], "cfg": cfg}


def test_sample_i_is_conditioned_on_low_res_image_i(upsampler, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, 256, (3, 1, 8, 8, 3), dtype=np.uint8)
    first = upsample(
        upsampler, write_npz(tmp_path / "ab.npz", np.concatenate([a, b]), np.array([3, 7])), "ab"
    )
    second = upsample(
        upsampler,
        write_npz(tmp_path / "ac.npz", np.concatenate([a, c]), np.array([3, 5])),
        "ac",
        "batch_size=1",
    )
    assert first["images"].shape == (2, 32, 32, 3) and first["images"].dtype == np.uint8
    assert first["labels"].tolist() == [3, 7] and second["labels"].tolist() == [3, 5]
    assert np.array_equal(first["images"][0], second["images"][0])
    assert not np.array_equal(first["images"][1], second["images"][1])

    cfg = first["cfg"]
    model_cfg = plain(cfg.model)
    denoiser = load_denoiser(model_cfg, cfg.checkpoint).with_low_res(nchw_unit(b))
    diffusion = build_diffusion_for(model_cfg, plain(cfg.diffusion), cfg.sampler.steps)
    with torch.no_grad():
        x = sample(denoiser, diffusion, (1, 3, 32, 32), SeededNoise(0, [1]), y=torch.tensor([7]))
    assert np.array_equal(to_uint8_nhwc(x)[0], first["images"][1])


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((1, 8, 8, 3), np.uint8), np.array([0]), "fewer than num_samples=2"),
        (np.zeros((2, 16, 16, 3), np.uint8), np.array([0, 1]), "uint8 8×8×3"),
        (np.zeros((2, 8, 8, 3), np.float32), np.array([0, 1]), "uint8 8×8×3"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.array([-1, -1]), "are not classes"),
        (np.zeros((2, 8, 8, 3), np.uint8), None, "arr_1"),
    ],
)
def test_a_low_res_archive_that_does_not_fit_is_one_clear_error(
    upsampler, tmp_path: Path, images, labels, message
) -> None:
    npz = write_npz(tmp_path / "low.npz", images, labels)
    with pytest.raises(UserError, match=message):
        upsample(upsampler, npz, "bad")


def test_missing_low_res_images_are_one_clear_error(upsampler, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        upsample(upsampler, tmp_path / "absent.npz", "absent")
    root, ckpt = upsampler
    cfg = make_config("sample", root, *TINY, *FAST, f"checkpoint={ckpt}", run_dir=root / "unset")
    with pytest.raises(UserError, match="upsample.low_res_npz"):
        sample_task(cfg)

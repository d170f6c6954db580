"""diffusers UNet2DModel folders behind the Denoiser contract: layouts, ε conversion, the
scheduler config as the diffusion, and one sentence for every folder the project cannot use."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers_helpers import conditional_unet_folder, diffusers, save_folder, tiny_unet

from minority.diffusion.schedule import get_betas, linear_betas
from minority.errors import UserError
from minority.lit.build import load_denoiser
from minority.models.diffusers_unet import DIFFUSERS_ARCH, DiffusersUNet, read_diffusers_folder

MODEL = {"arch": DIFFUSERS_ARCH}


def assert_one_sentence(error: pytest.ExceptionInfo, fragment: str) -> None:
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.endswith(".")


@pytest.mark.parametrize("pipeline", [False, True], ids=["unet-folder", "pipeline-folder"])
def test_folder_loads_as_an_eps_denoiser(tmp_path: Path, pipeline: bool) -> None:
    unet = tiny_unet(num_classes=4)
    folder = save_folder(tmp_path / "model", unet, pipeline=pipeline)
    denoiser = load_denoiser(MODEL, folder)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([3, 0, 1])
    with torch.no_grad():
        out = denoiser(x, t, y)
        expected = unet(x, t, class_labels=y).sample
    assert out.var_values is None and denoiser.class_cond
    torch.testing.assert_close(out.eps, expected)
    assert read_diffusers_folder(folder).model_flags() == {
        "image_size": 8,
        "in_channels": 1,
        "class_cond": True,
        "num_classes": 4,
        "learn_sigma": False,
    }


def test_flat_folder_with_everything_at_the_top_is_found(tmp_path: Path) -> None:
    """config.json, scheduler_config.json and model_index.json side by side (older layout)."""
    tiny_unet().save_pretrained(tmp_path)
    diffusers.DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False).save_pretrained(
        tmp_path
    )
    index = {"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert load_denoiser(MODEL, tmp_path).net.prediction_type == "epsilon"
    model = read_diffusers_folder(tmp_path)
    assert model.diffusion() == {
        "noise_schedule": "scaled_linear:0.0001:0.02",
        "diffusion_steps": 1000,
        "variance_type": "fixed_small",
    }
    assert not model.clip_denoised and not model.learn_sigma


def test_default_linear_schedule_is_adms_linear_schedule(tmp_path: Path) -> None:
    node = read_diffusers_folder(save_folder(tmp_path, tiny_unet())).diffusion()
    assert node["noise_schedule"] == "linear:0.0001:0.02"
    np.testing.assert_array_equal(get_betas(node["noise_schedule"], 1000), linear_betas(1000))


def test_cosine_schedule_is_adms_cosine(tmp_path: Path) -> None:
    folder = save_folder(tmp_path, tiny_unet(), beta_schedule="squaredcos_cap_v2")
    assert read_diffusers_folder(folder).diffusion()["noise_schedule"] == "cosine"


class TrueModel(torch.nn.Module):
    """Returns the exact ε, v or x0 of the x_t it is given (x_t = √ᾱ x0 + √(1−ᾱ) ε)."""

    def __init__(self, x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, kind: str):
        super().__init__()
        self.x0, self.eps, self.alpha_bar, self.kind = x0, eps, alpha_bar, kind

    def forward(self, x, t, class_labels=None):
        a = self.alpha_bar[t].reshape(-1, 1, 1, 1).float()
        value = {
            "epsilon": self.eps,
            "v_prediction": a.sqrt() * self.eps - (1 - a).sqrt() * self.x0,
            "sample": self.x0,
        }[self.kind]
        return diffusers.models.unets.unet_2d.UNet2DOutput(sample=value)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_every_prediction_type_becomes_the_true_eps(kind: str) -> None:
    alpha_bar = np.cumprod(1 - get_betas("scaled_linear:0.00085:0.012", 1000))
    t = torch.tensor([1, 400, 990])
    x0, eps = torch.rand(3, 2, 4, 4) * 2 - 1, torch.randn(3, 2, 4, 4)
    a = torch.from_numpy(alpha_bar)[t].reshape(-1, 1, 1, 1).float()
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    net = DiffusersUNet(
        TrueModel(x0, eps, torch.from_numpy(alpha_bar), kind), kind, alpha_bar, False
    )
    torch.testing.assert_close(net(x_t, t), eps, atol=2e-5, rtol=1e-5)


def test_learned_range_stacks_eps_and_the_variance_interpolant(tmp_path: Path) -> None:
    unet = tiny_unet(learn_sigma=True)
    folder = save_folder(
        tmp_path, unet, variance_type="learned_range", prediction_type="v_prediction"
    )
    denoiser = load_denoiser(MODEL, folder)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        out = denoiser(x, t)
        v_pred, var_values = unet(x, t).sample.chunk(2, dim=1)
    alpha_bar = torch.from_numpy(np.cumprod(1 - linear_betas(1000)))[t].reshape(-1, 1, 1, 1)
    eps = alpha_bar.sqrt().float() * v_pred + (1 - alpha_bar).sqrt().float() * x
    torch.testing.assert_close(out.var_values, var_values)
    torch.testing.assert_close(out.eps, eps)


def write_config(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"thresholding": True}, "dynamic thresholding"),
        ({"trained_betas": [0.01] * 1000}, "trained_betas"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule 'sigmoid'"),
        ({"variance_type": "learned"}, "variance_type 'learned'"),
        ({"prediction_type": "flow"}, "prediction_type 'flow'"),
        ({"rescale_betas_zero_snr": True}, "zero terminal SNR"),
        ({"clip_sample_range": 2.0}, "clips x0 to ±2.0"),
        ({"_class_name": "NoSuchScheduler"}, "names no diffusers scheduler"),
    ],
)
def test_scheduler_settings_the_project_cannot_honour(tmp_path: Path, change, fragment) -> None:
    folder = save_folder(tmp_path, tiny_unet())
    write_config(folder / "scheduler" / "scheduler_config.json", **change)
    with pytest.raises(UserError) as error:
        load_denoiser(MODEL, folder)
    assert_one_sentence(error, fragment)


def test_folders_the_project_cannot_use(tmp_path: Path) -> None:
    cases = {}
    (tmp_path / "empty").mkdir()
    cases["empty"] = "has no config.json"
    tiny_unet().save_pretrained(tmp_path / "no_scheduler")
    cases["no_scheduler"] = "has no scheduler/scheduler_config.json"
    conditional_unet_folder(tmp_path / "text")
    cases["text"] = "text-conditioned UNet2DConditionModel, which is not supported yet"
    save_folder(tmp_path / "latent", tiny_unet(), pipeline=True)
    write_config(tmp_path / "latent" / "model_index.json", vqvae=["diffusers", "VQModel"])
    cases["latent"] = "latent diffusion pipeline"
    save_folder(tmp_path / "channels", tiny_unet(learn_sigma=True))
    cases["channels"] = "outputs 2 channels for 1 input channels"
    save_folder(tmp_path / "fourier", tiny_unet())
    write_config(tmp_path / "fourier" / "config.json", time_embedding_type="fourier")
    cases["fourier"] = "continuous noise levels"
    for name, fragment in cases.items():
        with pytest.raises(UserError) as error:
            load_denoiser(MODEL, tmp_path / name)
        assert_one_sentence(error, fragment)


def test_missing_diffusers_package_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    folder = save_folder(tmp_path, tiny_unet())
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(UserError) as error:
        load_denoiser(MODEL, folder)
    assert_one_sentence(error, "needs the diffusers package")

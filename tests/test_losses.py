"""Training losses against closed forms; the learned-variance (hybrid) path end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import make_config

from minority.diffusion.gaussian import build_diffusion
from minority.diffusion.losses import gaussian_nll, normal_kl, training_losses
from minority.lit.build import build_denoiser
from minority.tasks.sample import sample_task
from minority.tasks.train import run_training_task


def test_normal_kl_closed_form() -> None:
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 2.0
    expected = 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)
    got = normal_kl(*(torch.tensor(v) for v in (m1, math.log(v1), m2, math.log(v2))))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert (
        normal_kl(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3)).abs().max() == 0
    )


def test_gaussian_nll_matches_torch_distributions() -> None:
    x, mean, log_var = torch.tensor([0.7]), torch.tensor([0.1]), torch.tensor([math.log(0.3)])
    expected = -torch.distributions.Normal(mean, math.sqrt(0.3)).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, log_var), expected)


def test_hybrid_loss_has_a_variational_term_only_with_learned_sigma() -> None:
    torch.manual_seed(0)
    x0, k = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 10, 500, 999])
    noise = torch.randn_like(x0)
    model = dict(make_config("train", Path("unused"), "model=unet8").model)
    model["flags"] = dict(model["flags"])
    learned = build_denoiser(model)
    diffusion = build_diffusion("cosine", 1000, None, "learned_range")
    losses = training_losses(learned, diffusion, x0, k, noise)
    assert set(losses) == {"loss", "mse", "vb"} and losses["vb"].shape == (4,)
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])
    losses["vb"].sum().backward()  # the frozen mean: only the variance output gets a gradient
    assert learned.net.out[-1].weight.grad[:1].abs().max() == 0
    assert learned.net.out[-1].weight.grad[1:].abs().max() > 0


def test_small_unet_with_learned_sigma_trains_and_samples(tmp_path: Path) -> None:
    common = ("experiment=digits", "model=unet8")
    run_training_task(
        make_config(
            "train",
            tmp_path,
            *common,
            "task=diffusion",
            "trainer.max_steps=3",
            "train.batch_size=16",
            run_dir=tmp_path / "d",
        )
    )
    cfg = make_config(
        "sample",
        tmp_path,
        *common,
        "num_samples=3",
        "batch_size=3",
        "sampler.steps=4",
        "progress=false",
        run_dir=tmp_path / "s",
    )
    samples = np.load(sample_task(cfg))
    assert samples["arr_0"].shape == (3, 8, 8, 1) and samples["arr_0"].dtype == np.uint8
    assert (tmp_path / "s" / "grid.png").is_file()

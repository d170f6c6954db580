"""Minority score: golden parity, a Gaussian closed form, timestep helpers, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from closed_forms import GaussianEps
from torch import Tensor
from torch.utils.data import DataLoader

from minority.diffusion.gaussian import build_diffusion
from minority.errors import UserError
from minority.lit.scoring import MinorityScoreModule, indexed_dataset
from minority.models.adm import create_model, load_adm_checkpoint
from minority.models.denoiser import Denoiser
from minority.scores.labels import minority_labels
from minority.scores.minority_score import (
    MinorityScorer,
    score_dataset,
    scores_by_index,
    timestep_from_respaced_index,
    timestep_from_snr,
)
from minority.seeding import ReplayNoise


@pytest.fixture(scope="module")
def golden_score(load_golden) -> dict:
    return load_golden("minority_score")


def test_minority_score_matches_the_official_script(golden_score, load_golden) -> None:
    fixture = golden_score
    net = create_model(fixture["flags"])
    load_adm_checkpoint(net, load_golden("adm_unet")["state_dict"])
    diffusion = build_diffusion("cosine", 1000, fixture["timestep_respacing"], "learned_range")
    perturb_t = timestep_from_respaced_index(
        fixture["perturb_t_respaced"], fixture["timestep_respacing"]
    )
    assert perturb_t == fixture["perturb_t_original"] == 605
    scorer = MinorityScorer(
        Denoiser(net.eval(), learn_sigma=True), diffusion, perturb_t, fixture["n_iter"], "mse"
    )
    noise = ReplayNoise(list(fixture["noises"]), ["ms_perturb"] * fixture["n_iter"])
    draws = scorer.draws(fixture["images"], noise, keep_reconstructions=True)
    torch.testing.assert_close(draws.x0_hat, fixture["x0_hat"], atol=1e-5, rtol=0)
    torch.testing.assert_close(draws.dist_per_draw, fixture["dist_per_draw"], atol=1e-6, rtol=0)
    torch.testing.assert_close(draws.scores, fixture["scores"], atol=1e-6, rtol=0)
    assert scorer.process.alphas_cumprod[605] == pytest.approx(
        fixture["alphas_cumprod_at_t_f64"], abs=1e-15
    )


def test_binning_matches_the_official_thresholds_and_labels(golden_score) -> None:
    labels, thresholds = minority_labels(
        golden_score["binning_scores"], golden_score["binning_num_m_classes"]
    )
    assert torch.equal(thresholds, golden_score["binning_thresholds"])
    assert torch.equal(labels, golden_score["binning_labels"])


@pytest.mark.parametrize(
    ("index", "respacing", "expected"), [(60, "100", 605), (200, "250", 802), (9, "10", 999)]
)
def test_respaced_index_maps_to_the_original_timestep(
    index: int, respacing: str, expected: int
) -> None:
    assert timestep_from_respaced_index(index, respacing) == expected


def test_out_of_grid_index_is_a_user_error() -> None:
    with pytest.raises(UserError):
        timestep_from_respaced_index(100, "100")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_snr_picks_the_timestep_with_that_snr(schedule: str) -> None:
    alpha_bar = build_diffusion(schedule, 1000).original_alphas_cumprod
    for t in (10, 300, 605, 900):
        assert timestep_from_snr(alpha_bar[t] / (1 - alpha_bar[t]), schedule) == t


def test_original_process_recovers_the_full_schedule_of_a_respaced_one() -> None:
    full = build_diffusion("linear", 1000)
    recovered = build_diffusion("linear", 1000, "ddim50").original()
    assert recovered.timestep_map == list(range(1000))
    np.testing.assert_allclose(recovered.alphas_cumprod, full.alphas_cumprod, rtol=1e-12)


@pytest.mark.parametrize("perturb_t", [605, 600])
def test_gaussian_data_score_has_its_closed_form(perturb_t: int) -> None:
    """x0 ~ N(0, s²I): E_ε mean_i (x0 − x̂0)_i² = (1 − c√ᾱ)² mean_i x0_i² + c²(1 − ᾱ),
    c = √ᾱ s² / (ᾱ s² + 1 − ᾱ), with ᾱ = ᾱ_t of the original schedule even when t (600) is
    not on the diffusion's respaced grid."""
    std = 0.5
    diffusion = build_diffusion("cosine", 1000, "100")
    scorer = MinorityScorer(
        Denoiser(GaussianEps(diffusion, std)), diffusion, perturb_t, 5, "mse", clip_denoised=False
    )
    x0 = std * torch.randn(6, 1, 64, 64, dtype=torch.float64)
    x0[:3] *= 3  # the atypical half scores higher
    scores = scorer(x0, _GlobalNoise())
    a = diffusion.original_alphas_cumprod[perturb_t]
    c = np.sqrt(a) * std**2 / (a * std**2 + 1 - a)
    expected = (1 - c * np.sqrt(a)) ** 2 * x0.flatten(1).square().mean(1) + c**2 * (1 - a)
    torch.testing.assert_close(scores.double(), expected, rtol=0.03, atol=0)
    assert scores[:3].min() > scores[3:].max()


class _GlobalNoise:
    def randn(self, role: str, shape) -> Tensor:
        return torch.randn(shape, dtype=torch.float64)


def _toy_scorer() -> MinorityScorer:
    diffusion = build_diffusion("cosine", 1000)
    return MinorityScorer(Denoiser(GaussianEps(diffusion, 0.5)), diffusion, 600, 3, "l2")


def test_scores_do_not_depend_on_the_batch() -> None:
    x = torch.rand(11, 2) * 2 - 1
    scorer = _toy_scorer()
    whole = score_dataset(scorer, x, seed=4, batch_size=11)
    torch.testing.assert_close(score_dataset(scorer, x, seed=4, batch_size=3), whole)
    assert not torch.equal(score_dataset(scorer, x, seed=5, batch_size=11), whole)


def test_lightning_predict_returns_scores_aligned_with_indices() -> None:
    x = torch.rand(10, 2) * 2 - 1
    denoiser = _toy_scorer().denoiser
    module = MinorityScoreModule(denoiser, "cosine", 1000, 600, 3, "l2", seed=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loader = DataLoader(indexed_dataset(x), batch_size=4, shuffle=True)
    predictions = trainer.predict(module, loader)
    scores = scores_by_index(
        [p["index"] for p in predictions], [p["scores"] for p in predictions], len(x)
    )
    torch.testing.assert_close(scores, score_dataset(module.scorer, x, seed=4, batch_size=7))


def test_scores_by_index_rejects_missing_and_repeated_items() -> None:
    with pytest.raises(UserError):
        scores_by_index([torch.tensor([0, 1])], [torch.ones(2)], 3)
    with pytest.raises(UserError):
        scores_by_index([torch.tensor([0, 1, 1])], [torch.ones(3)], 3)
    torch.testing.assert_close(
        scores_by_index(
            [torch.tensor([2, 0]), torch.tensor([1])],
            [torch.tensor([3.0, 1.0]), torch.tensor([2.0])],
            3,
        ),
        torch.tensor([1.0, 2.0, 3.0]),
    )


def test_bad_settings_are_user_errors() -> None:
    diffusion = build_diffusion("cosine", 1000)
    denoiser = Denoiser(GaussianEps(diffusion, 0.5))
    with pytest.raises(UserError):
        MinorityScorer(denoiser, diffusion, 1000, 5, "l2")
    with pytest.raises(UserError):
        MinorityScorer(denoiser, diffusion, 600, 0, "l2")
    with pytest.raises(UserError):
        MinorityScorer(denoiser, diffusion, 600, 5, "cosine-similarity")

"""Training the minority classifier on toy2d quantile labels; checkpoints that must fit."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from minority.diffusion.gaussian import build_diffusion
from minority.errors import UserError
from minority.guidance.classifier import load_minority_classifier
from minority.lit.build import build_dataset
from minority.lit.classifier import MinorityClassifierModule
from minority.scores.labels import minority_labels, stratified_split

NUM_CLASSES = 4
STEPS = 300
TOY2D = {
    "_target_": "minority.data.toy2d_dataset",
    "name": "toy2d",
    "num_samples": 4000,
    "seed": 0,
    "means": [[-0.35, -0.35], [0.65, -0.55], [0.65, 0.65], [-0.55, 0.65]],
    "stds": [0.2, 0.07, 0.07, 0.07],
    "weights": [0.9, 0.04, 0.03, 0.03],
}


class Trained(NamedTuple):
    trainer: pl.Trainer
    module: MinorityClassifierModule
    x_val: torch.Tensor
    labels_val: torch.Tensor
    path: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A classifier trained on L = 4 equal-frequency bins of −log p(x0); its val data."""
    data = build_dataset(TOY2D)
    labels, _ = minority_labels(-data.mixture.log_prob(data.x), NUM_CLASSES)
    train, val = stratified_split(labels, 0.1, seed=0)
    pl.seed_everything(0)
    module = MinorityClassifierModule(
        NUM_CLASSES, (2,), "mlp", {"hidden": 128}, lr=1e-2, weight_decay=0.0, max_steps=STEPS
    )
    trainer = pl.Trainer(
        max_steps=STEPS,
        val_check_interval=STEPS,
        check_val_every_n_epoch=None,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(
        module,
        DataLoader(TensorDataset(data.x[train], labels[train]), batch_size=256, shuffle=True),
        DataLoader(TensorDataset(data.x[val], labels[val]), batch_size=512),
    )
    path = tmp_path_factory.mktemp("classifier") / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return Trained(trainer, module, data.x[val], labels[val], path)


def _accuracy(classifier, x: torch.Tensor, labels: torch.Tensor, t: int) -> float:
    timesteps = torch.full((len(x),), t)
    x_t = build_diffusion("cosine", 1000).q_sample(x, timesteps, torch.randn_like(x))
    with torch.no_grad():
        return (classifier(x_t, timesteps).argmax(-1) == labels).float().mean().item()


def test_accuracy_beats_chance_at_small_t_and_is_chance_at_t_max(trained) -> None:
    """Chance is 1/L for equal-frequency bins; at t = T−1 (ᾱ ≈ 0) x_t carries no label
    information, so no classifier can do better than 1/L there."""
    x, labels = trained.x_val, trained.labels_val
    chance = 1 / NUM_CLASSES
    assert _accuracy(trained.module.classifier, x, labels, 10) > chance + 0.2
    assert _accuracy(trained.module.classifier, x, labels, 999) < chance + 0.1


def test_logged_metrics_cover_every_quarter_of_t(trained) -> None:
    metrics = trained.trainer.callback_metrics
    for name in ("loss", "acc1", "acc5"):
        assert torch.isfinite(metrics[f"train/{name}"])
        for q in range(4):
            assert torch.isfinite(metrics[f"val/{name}_q{q}"])
    assert metrics["val/acc5"] == 1.0  # top-min(5, L) of L = 4 classes always hits
    assert metrics["val/acc1_q0"] > metrics["val/acc1_q3"]
    assert metrics["val/loss_q0"] < metrics["val/loss_q3"]


def test_learning_rate_decays_linearly_to_zero(trained) -> None:
    assert trained.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert trained.module.hparams.lr == 1e-2


def test_checkpoint_reloads_and_is_validated(trained) -> None:
    path = trained.path
    classifier = load_minority_classifier(path, NUM_CLASSES, (2,), "cosine", 1000)
    x, t = trained.x_val[:8], torch.arange(8) * 100
    torch.testing.assert_close(classifier(x, t), trained.module.classifier(x, t))
    assert not any(p.requires_grad for p in classifier.parameters())
    with pytest.raises(UserError, match="L = 4"):
        load_minority_classifier(path, num_classes=10)
    with pytest.raises(UserError, match="shape"):
        load_minority_classifier(path, sample_shape=(3, 32, 32))
    with pytest.raises(UserError, match="noise_schedule"):
        load_minority_classifier(path, noise_schedule="linear")


def test_missing_or_foreign_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        load_minority_classifier(tmp_path / "absent.ckpt")
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, foreign)
    with pytest.raises(UserError):
        load_minority_classifier(foreign)


def test_random_flip_flips_about_half_of_the_images() -> None:
    module = MinorityClassifierModule(3, (1, 4, 4), "conv", {"width": 8, "channel_mult": [1]})
    x0 = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(400, 1, 1, 1)
    flipped = module._flip(x0)
    changed = (flipped != x0).flatten(1).any(1)
    assert torch.equal(flipped[changed], x0[changed].flip(-1))
    assert 0.4 < changed.float().mean().item() < 0.6

"""train.py task=classifier: the noise-conditional minority classifier on the ordinal labels."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from minority.data import build_dataset
from minority.errors import UserError, require
from minority.lit.classifier import MinorityClassifierModule
from minority.outputs import torch_save_atomic
from minority.tasks.common import (
    adopt_diffusers_folder,
    close_logger,
    log,
    make_trainer,
    plain,
    run_dir,
    tensor_loader,
)


def load_scores(cfg: DictConfig, num_items: int) -> dict:
    path = Path(cfg.paths.scores)
    if not path.is_file():
        raise UserError(f"Minority scores {path} do not exist; run `train.py task=scores` first.")
    content = torch.load(path, weights_only=True)
    require(
        len(content["labels"]) == num_items,
        f"Scores in {path} cover {len(content['labels'])} samples, the data set has {num_items}.",
    )
    return content


def train_classifier(cfg: DictConfig) -> Path:
    """Fit p(l | x_t, t) and write ``paths.classifier_ckpt`` (hyper-parameters + weights);
    for a diffusers model, on the schedule of its folder (``paths.diffusion_ckpt``)."""
    adopt_diffusers_folder(cfg, cfg.paths.diffusion_ckpt)
    folder = run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    data = build_dataset(plain(cfg.dataset))
    scores = load_scores(cfg, len(data))
    c = cfg.classifier
    num_classes = int(scores["thresholds"].numel())
    module = MinorityClassifierModule(
        num_classes,
        data.sample_shape,
        c.arch,
        plain(c.arch_kwargs),
        cfg.diffusion.noise_schedule,
        int(cfg.diffusion.diffusion_steps),
        float(c.lr),
        float(c.weight_decay),
        int(c.max_steps),
        bool(c.random_flip),
        int(cfg.seed),
    )
    labels = scores["labels"]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        return tensor_loader(
            data.x[idx], labels[idx], batch_size=int(c.batch_size), shuffle=shuffle
        )

    trainer = make_trainer(
        cfg,
        folder,
        "classifier",
        max_steps=int(c.max_steps),
        max_epochs=-1,
        val_check_interval=None,
        check_val_every_n_epoch=None,
    )
    trainer.fit(module, loader(scores["train_idx"], True), loader(scores["val_idx"], False))
    out = Path(cfg.paths.classifier_ckpt)
    if trainer.global_rank == 0:
        content = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
        torch_save_atomic(content, out)
        log.info("minority classifier saved to %s", out)
    close_logger(trainer)
    return out

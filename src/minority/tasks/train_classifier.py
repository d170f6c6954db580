"""train.py task=classifier: the noise-conditional minority classifier on the ordinal labels."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from torch.utils.data import DataLoader

from minority.data import build_dataset
from minority.errors import UserError, require
from minority.lit.classifier import MinorityClassifierModule
from minority.outputs import load_torch_file, torch_save_atomic
from minority.tasks.common import close_logger, log, make_trainer, plain, run_dir, tensor_loader
from minority.tasks.provenance import (
    RecordProvenance,
    classifier_provenance,
    resume_checkpoint,
    up_to_date,
)
from minority.tasks.tracking import log_stage, stage_artifact


def check_scores_exist(cfg: DictConfig) -> None:
    path = Path(cfg.paths.scores)
    if not path.is_file():
        raise UserError(f"Minority scores {path} do not exist; run `train.py task=scores` first.")


def load_scores(cfg: DictConfig, num_items: int) -> dict:
    path = Path(cfg.paths.scores)
    content = load_torch_file(path, "Minority scores", "delete it and rerun train.py task=scores")
    require(
        len(content["labels"]) == num_items,
        f"Scores in {path} cover {len(content['labels'])} samples, the data set has {num_items}.",
    )
    return content


def train_classifier(cfg: DictConfig) -> Path:
    """Fit p(l | x_t, t) and write ``paths.classifier_ckpt`` (hyper-parameters + weights),
    resuming from ``last.ckpt`` (or ``ckpt_path``) when it was saved with the same settings; a
    classifier already trained with these settings is left as it is."""
    check_scores_exist(cfg)
    c = cfg.classifier
    out = Path(cfg.paths.classifier_ckpt)
    provenance = classifier_provenance(cfg, int(cfg.trainer.max_steps))
    if up_to_date(out, provenance, "minority classifier"):
        return out
    folder = Path(cfg.run_dir)
    resume = resume_checkpoint(cfg, folder, provenance)
    run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    data = build_dataset(plain(cfg.dataset))
    scores = load_scores(cfg, len(data))
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
        int(cfg.trainer.max_steps),
        bool(c.random_flip),
        int(cfg.seed),
    )
    labels = scores["labels"]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        return tensor_loader(
            data.x[idx], labels[idx], batch_size=int(c.batch_size), shuffle=shuffle
        )

    train_loader = loader(scores["train_idx"], True)
    trainer = make_trainer(
        cfg,
        folder,
        "classifier",
        resume_step=resume.step if resume else None,
        epoch_length=len(train_loader),
        max_epochs=-1,
        val_check_interval=None,
        check_val_every_n_epoch=None,
        callbacks=[
            ModelCheckpoint(
                dirpath=folder / "checkpoints", save_last=True, every_n_train_steps=500
            ),
            RecordProvenance(provenance),
            LearningRateMonitor(logging_interval="step"),
        ],
    )
    trainer.fit(
        module,
        train_loader,
        loader(scores["val_idx"], False),
        ckpt_path=resume.path if resume else None,
    )
    trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")
    if trainer.global_rank == 0:
        content = {
            "hyper_parameters": dict(module.hparams),
            "state_dict": module.state_dict(),
            "provenance": provenance,
        }
        torch_save_atomic(content, out)
        log.info("minority classifier saved to %s (fingerprint %s)", out, provenance["fingerprint"])
    trainer.strategy.barrier()
    log_stage(trainer.loggers, [stage_artifact(cfg, "scores")], [stage_artifact(cfg, "classifier")])
    close_logger(trainer)
    return out

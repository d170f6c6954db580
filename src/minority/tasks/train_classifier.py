"""train.py task=classifier: the noise-conditional minority classifier on the ordinal labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from torch.utils.data import Dataset

from minority.data.images import build_image_dataset
from minority.errors import UserError, require
from minority.lit.build import build_dataset
from minority.lit.classifier import MinorityClassifierModule
from minority.lit.data import RealDataModule, TargetSubset
from minority.outputs import load_torch_file, torch_save_atomic
from minority.tasks.common import (
    adopt_diffusers_folder,
    close_logger,
    log,
    make_trainer,
    plain,
    run_dir,
    tensor_loader,
)
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


@dataclass
class ClassifierData:
    """The real data of the classifier: images streamed from disk, or tensors in memory.

    Attributes:
        cfg: the run's config.
        streamed: (training items with the classifier's augmentation, plain validation items)
            for image formats, else None.
        x: the in-memory samples (embedded data), else None.
    """

    cfg: DictConfig
    streamed: tuple[Dataset, Dataset] | None = None
    x: torch.Tensor | None = None

    @property
    def num_items(self) -> int:
        return len(self.streamed[1]) if self.streamed is not None else len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple((self.streamed[0][0][0] if self.streamed is not None else self.x[0]).shape)

    def fit_inputs(self, scores: dict, batch_size: int, seed: int) -> dict[str, Any]:
        """``Trainer.fit``'s data arguments: batches of (x0, minority label) for training and
        validation."""
        labels, train_idx, val_idx = scores["labels"], scores["train_idx"], scores["val_idx"]
        if self.streamed is None:
            train, val = (
                tensor_loader(self.x[idx], labels[idx], batch_size=batch_size, shuffle=shuffle)
                for idx, shuffle in ((train_idx, True), (val_idx, False))
            )
            return {"train_dataloaders": train, "val_dataloaders": val}
        workers = int(self.cfg.dataset.num_workers)  # streamed: an image format
        train, val = self.streamed
        data = RealDataModule(
            batch_size,
            workers,
            train=TargetSubset(train, train_idx, labels),
            val=TargetSubset(val, val_idx, labels),
            seed=seed,
        )
        return {"datamodule": data}


def classifier_data(cfg: DictConfig) -> ClassifierData:
    """Image formats stream (training items flipped and augmented as ``classifier.random_flip``
    and ``classifier.augment`` say, per (seed, index, epoch)); embedded data stay in memory."""
    dataset_cfg = plain(cfg.dataset)
    if not dataset_cfg.get("format"):
        return ClassifierData(cfg, x=build_dataset(dataset_cfg, cfg).x)
    c = cfg.classifier
    train = build_image_dataset(
        dataset_cfg, random_flip=bool(c.random_flip), augment=c.augment or False
    )
    val = build_image_dataset(dataset_cfg, random_flip=False, augment=False)
    return ClassifierData(cfg, streamed=(train, val))


def train_classifier(cfg: DictConfig) -> Path:
    """Fit p(l | x_t, t) and write ``paths.classifier_ckpt`` (hyper-parameters + weights),
    resuming from ``last.ckpt`` (or ``ckpt_path``) when it was saved with the same settings; a
    classifier already trained with these settings is left as it is. For a diffusers model, on
    the schedule of its folder (``paths.diffusion_ckpt``)."""
    adopt_diffusers_folder(cfg, cfg.paths.diffusion_ckpt)
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
    data = classifier_data(cfg)
    scores = load_scores(cfg, data.num_items)
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
        bool(c.random_flip) and data.streamed is None,
        int(cfg.seed),
    )

    inputs = data.fit_inputs(scores, int(c.batch_size), int(cfg.seed))
    train_loader = inputs.get("train_dataloaders")
    trainer = make_trainer(
        cfg,
        folder,
        "classifier",
        resume_step=resume.step if resume else None,
        epoch_length=None if train_loader is None else len(train_loader),
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
        **({} if data.streamed is None else {"use_distributed_sampler": False}),
    )
    trainer.fit(module, **inputs, ckpt_path=resume.path if resume else None)
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

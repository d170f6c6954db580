"""train.py task=scores: minority scores of the real data, ordinal labels, a validation split.

Scores run as a Lightning predict loop (each rank scores its share of the index ranges and
writes each as a shard; per-sample seeds keyed by the data index make the result independent
of batching, of the number of processes and of a resume after a kill).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from minority.errors import require
from minority.lit.build import load_denoiser
from minority.lit.data import RealDataModule, item_dataset
from minority.lit.sampling import pending_ranges
from minority.lit.scoring import MinorityScoreModule, ScoreShardWriter
from minority.models.build import is_class_conditional
from minority.outputs import merge_shards, save_score_extremes, to_storage, torch_save_atomic
from minority.scores.labels import minority_labels, stratified_split
from minority.tasks.common import (
    adopt_diffusers_folder,
    close_logger,
    is_rank_zero,
    log,
    make_trainer,
    plain,
    run_dir,
)
from minority.tasks.provenance import prepare_run_folder, scores_provenance, up_to_date
from minority.tasks.tracking import log_stage, stage_artifact


def score_module(cfg: DictConfig) -> MinorityScoreModule:
    """The frozen denoiser wrapped as the ``scores`` node describes."""
    s = cfg.scores
    return MinorityScoreModule(
        load_denoiser(plain(cfg.model), cfg.paths.diffusion_ckpt, plain(cfg.diffusion), cfg),
        cfg.diffusion.noise_schedule,
        int(cfg.diffusion.diffusion_steps),
        int(s.perturb_t),
        int(s.num_draws),
        s.distance,
        s.lpips_weights,
        bool(s.clip_denoised),
        int(cfg.seed),
    )


def score_shards(cfg: DictConfig, folder: Path, num_items: int, dataset) -> pl.Trainer | None:
    """Score the items whose shard is not in ``folder / "shards"`` yet; the Trainer that did
    (None when every shard was there)."""
    shards = folder / "shards"
    batch_size = int(cfg.scores.batch_size)
    ranges = pending_ranges(shards, num_items, batch_size)
    if not ranges:
        return None
    data = RealDataModule(
        batch_size,
        int(cfg.dataset.get("num_workers", 0)),
        predict=dataset,
        predict_ranges=ranges,
    )
    trainer = make_trainer(
        cfg,
        folder,
        "scores",
        callbacks=[ScoreShardWriter(shards)],
        inference_mode=False,
        use_distributed_sampler=False,
    )
    trainer.predict(score_module(cfg), datamodule=data, return_predictions=False)
    trainer.strategy.barrier()
    return trainer


def compute_scores(cfg: DictConfig) -> Path:
    """Score every real sample and write ``paths.scores`` (scores, labels, thresholds, split);
    scores already computed with these settings and this denoiser are left as they are.

    Items are streamed (image formats) or indexed in memory (embedded data); each finished
    batch is a shard in ``run_dir/shards``, so a killed run resumes where it stopped (shards of
    other settings are cleared first). The shards are merged into ``scores.npz`` next to
    ``paths.scores`` (``arr_0``: the score of dataset item i at position i).
    """
    adopt_diffusers_folder(cfg, cfg.paths.diffusion_ckpt)
    require(
        not is_class_conditional(plain(cfg.model)),
        "task=scores needs an unconditional denoiser: minority scores of a class-conditional "
        "model are not supported yet.",
    )
    out = Path(cfg.paths.scores)
    provenance = scores_provenance(cfg)
    if up_to_date(out, provenance, "minority scores"):
        return out
    folder = run_dir(cfg)
    prepare_run_folder(folder, provenance, True, ("shards",), ())
    dataset = item_dataset(plain(cfg.dataset), cfg)
    trainer = score_shards(cfg, folder, len(dataset), dataset)
    if is_rank_zero():
        save_scores(cfg, folder, dataset, provenance)
        if trainer is not None:
            log_stage(
                trainer.loggers, [stage_artifact(cfg, "denoiser")], [stage_artifact(cfg, "scores")]
            )
    if trainer is not None:
        trainer.strategy.barrier()
        close_logger(trainer)
    return out


def save_scores(cfg: DictConfig, folder: Path, dataset, provenance: dict) -> Path:
    """Merge the shards, bin the scores into labels, split, write ``paths.scores`` and the
    figure of the lowest, median and highest scored real samples."""
    out = Path(cfg.paths.scores)
    merged = merge_shards(folder / "shards", len(dataset), out.with_suffix(".npz"))
    scores = torch.from_numpy(np.load(merged)["arr_0"])
    s = cfg.scores
    labels, thresholds = minority_labels(scores, int(s.num_classes))
    train_idx, val_idx = stratified_split(labels, float(s.val_fraction), int(cfg.seed))
    content = {
        "scores": scores,
        "labels": labels,
        "thresholds": thresholds,
        "train_idx": train_idx,
        "val_idx": val_idx,
        "settings": plain(s),
        "dataset": cfg.dataset.name,
        "provenance": provenance,
    }
    torch_save_atomic(content, out)
    figure = save_score_extremes(
        stored_items(cfg, dataset),
        scores.numpy(),
        folder / "score_extremes.png",
        f"{cfg.dataset.name}: real samples with the lowest, median and highest minority "
        f"scores ({s.distance}, t = {s.perturb_t}, {s.num_draws} draws)",
    )
    log.info("minority scores of %d samples saved to %s; figure: %s", len(scores), out, figure)
    return out


def stored_items(cfg: DictConfig, dataset) -> np.ndarray | Callable[[np.ndarray], np.ndarray]:
    """The real data as stored: all of it for embedded data, a reader of the given indices for
    images streamed from disk."""
    if not cfg.dataset.get("format"):
        return to_storage(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    return lambda idx: to_storage(torch.stack([dataset[int(i)][0] for i in idx]))

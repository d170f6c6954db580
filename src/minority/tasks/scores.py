"""train.py task=scores: minority scores of the real data, ordinal labels, a validation split.

Scores run as a Lightning predict loop (each rank scores its share of the index ranges and
writes each as a shard; per-sample seeds keyed by the data index make the result independent
of batching, of the number of processes and of a resume after a kill).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from minority.lit.data import RealDataModule, item_dataset
from minority.lit.sampling import pending_ranges
from minority.lit.scoring import MinorityScoreModule, ScoreShardWriter
from minority.models.build import load_denoiser
from minority.outputs import merge_shards, torch_save_atomic
from minority.scores.labels import minority_labels, stratified_split
from minority.tasks.common import close_logger, log, make_trainer, plain, run_dir


def score_module(cfg: DictConfig) -> MinorityScoreModule:
    """The frozen denoiser wrapped as the ``scores`` node describes."""
    s = cfg.scores
    return MinorityScoreModule(
        load_denoiser(plain(cfg.model), cfg.paths.diffusion_ckpt),
        cfg.diffusion.noise_schedule,
        int(cfg.diffusion.diffusion_steps),
        int(s.perturb_t),
        int(s.num_draws),
        s.distance,
        s.lpips_weights,
        bool(s.clip_denoised),
        int(cfg.seed),
    )


def score_shards(cfg: DictConfig, folder: Path, num_items: int, dataset) -> bool:
    """Score the items whose shard is not in ``folder / "shards"`` yet; True on rank 0."""
    shards = folder / "shards"
    batch_size = int(cfg.scores.batch_size)
    ranges = pending_ranges(shards, num_items, batch_size)
    if not ranges:
        return True
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
    close_logger(trainer)
    return trainer.global_rank == 0


def compute_scores(cfg: DictConfig) -> Path:
    """Score every real sample and write ``paths.scores`` (scores, labels, thresholds, split).

    Items are streamed (image formats) or indexed in memory (embedded data); each finished
    batch is a shard in ``run_dir/shards``, so a killed run resumes where it stopped. The
    shards are merged into ``scores.npz`` next to ``paths.scores`` (``arr_0``: the score of
    dataset item i at position i).
    """
    folder = run_dir(cfg)
    dataset = item_dataset(plain(cfg.dataset))
    out = Path(cfg.paths.scores)
    if not score_shards(cfg, folder, len(dataset), dataset):
        return out
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
    }
    torch_save_atomic(content, out)
    log.info("minority scores of %d samples saved to %s", len(scores), out)
    return out

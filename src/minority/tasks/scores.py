"""train.py task=scores: minority scores of the real data, ordinal labels, a validation split.

Scores run as a Lightning predict loop (each rank scores its share; per-sample seeds keyed by
the data index make the result independent of batching and of the number of processes).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from minority.data import build_dataset
from minority.errors import require
from minority.lit.scoring import MinorityScoreModule, indexed_dataset
from minority.models.build import is_class_conditional, load_denoiser
from minority.outputs import torch_save_atomic
from minority.scores.labels import minority_labels, stratified_split
from minority.scores.minority_score import scores_by_index
from minority.tasks.common import (
    adopt_diffusers_folder,
    close_logger,
    log,
    make_trainer,
    plain,
    run_dir,
)


class ScoreCollector(pl.Callback):
    """Keep every predicted (index, score) pair of this rank."""

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.pairs.append(outputs)


def gather_scores(trainer: pl.Trainer, pairs: list, num_items: int) -> torch.Tensor:
    """All ranks' (index, score) pairs -> scores (N,) aligned with the data set."""
    index = torch.cat([p[0] for p in pairs]) if pairs else torch.empty(0, dtype=torch.int64)
    score = torch.cat([p[1] for p in pairs]) if pairs else torch.empty(0)
    if trainer.world_size > 1:
        index = trainer.strategy.all_gather(index).flatten()
        score = trainer.strategy.all_gather(score).flatten()
    index, unique = _unique_first(index.cpu())
    return scores_by_index(index, score.cpu()[unique], num_items)


def _unique_first(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop repeats (a distributed sampler pads ranks by repeating items)."""
    seen: dict[int, int] = {}
    for position, i in enumerate(index.tolist()):
        seen.setdefault(i, position)
    keep = torch.tensor(list(seen.values()), dtype=torch.int64)
    return index[keep], keep


def compute_scores(cfg: DictConfig) -> Path:
    """Score every real sample and write ``paths.scores`` (scores, labels, thresholds, split)."""
    adopt_diffusers_folder(cfg, cfg.paths.diffusion_ckpt)
    require(
        not is_class_conditional(plain(cfg.model)),
        "task=scores needs an unconditional denoiser: minority scores of a class-conditional "
        "model are not supported yet.",
    )
    folder = run_dir(cfg)
    data = build_dataset(plain(cfg.dataset))
    s = cfg.scores
    module = MinorityScoreModule(
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
    collector = ScoreCollector()
    trainer = make_trainer(cfg, folder, "scores", callbacks=[collector], inference_mode=False)
    loader = DataLoader(indexed_dataset(data.x), batch_size=int(s.batch_size))
    trainer.predict(module, loader, return_predictions=False)
    scores = gather_scores(trainer, collector.pairs, len(data))
    labels, thresholds = minority_labels(scores, int(s.num_classes))
    train_idx, val_idx = stratified_split(labels, float(s.val_fraction), int(cfg.seed))
    out = Path(cfg.paths.scores)
    if trainer.global_rank == 0:
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
    close_logger(trainer)
    return out

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
from minority.lit.scoring import MinorityScoreModule, indexed_dataset
from minority.models.build import load_denoiser
from minority.outputs import save_score_extremes, to_storage, torch_save_atomic
from minority.scores.labels import minority_labels, stratified_split
from minority.scores.minority_score import scores_by_index
from minority.tasks.common import close_logger, log, make_trainer, plain, run_dir
from minority.tasks.provenance import scores_provenance, up_to_date
from minority.tasks.tracking import log_stage, stage_artifact


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
    """Score every real sample and write ``paths.scores`` (scores, labels, thresholds, split);
    scores already computed with these settings and this denoiser are left as they are."""
    out = Path(cfg.paths.scores)
    provenance = scores_provenance(cfg)
    if up_to_date(out, provenance, "minority scores"):
        return out
    folder = run_dir(cfg)
    data = build_dataset(plain(cfg.dataset))
    s = cfg.scores
    module = MinorityScoreModule(
        load_denoiser(plain(cfg.model), cfg.paths.diffusion_ckpt, plain(cfg.diffusion)),
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
    if trainer.global_rank == 0:
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
            to_storage(data.x),
            scores.numpy(),
            folder / "score_extremes.png",
            f"{cfg.dataset.name}: real samples with the lowest, median and highest minority "
            f"scores ({s.distance}, t = {s.perturb_t}, {s.num_draws} draws)",
        )
        log.info("minority scores of %d samples saved to %s; figure: %s", len(scores), out, figure)
        log_stage(
            trainer.loggers, [stage_artifact(cfg, "denoiser")], [stage_artifact(cfg, "scores")]
        )
    trainer.strategy.barrier()
    close_logger(trainer)
    return out

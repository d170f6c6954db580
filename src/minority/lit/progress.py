"""Progress that counts steps: one bar over the whole training run in a terminal, plain log
lines (no carriage returns or escape codes) when the output goes to a file."""

from __future__ import annotations

import logging
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

log = logging.getLogger("minority")


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar, but training counts optimizer steps up to ``max_steps`` in one bar
    instead of restarting every epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.n = trainer.global_step
        bar.set_description("Training steps")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class ProgressLines(pl.Callback):
    """About ``lines`` log lines per run: training step k of ``max_steps`` with the progress
    bar's metrics, or prediction batch i of n."""

    def __init__(self, lines: int = 10):
        self.lines = lines

    def every(self, total: int) -> int:
        return max(1, total // self.lines)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        step, total = trainer.global_step, trainer.max_steps
        if step % self.every(total) == 0 or step == total:
            metrics = trainer.progress_bar_metrics
            shown = ", ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
            log.info("step %d/%d%s", step, total, f": {shown}" if shown else "")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        total = int(sum(trainer.num_predict_batches))
        done = batch_idx + 1
        if done % self.every(total) == 0 or done == total:
            log.info("batch %d/%d", done, total)


def progress_callback(enabled: bool) -> pl.Callback | None:
    """The bar in a terminal, log lines otherwise; None when progress is switched off."""
    if not enabled:
        return None
    return StepProgressBar() if sys.stderr.isatty() else ProgressLines()

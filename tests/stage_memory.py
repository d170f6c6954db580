"""Run one training stage on an image folder and print its peak resident-memory growth.

    python tests/stage_memory.py <work folder> <image folder> <task>

prints ``growth <bytes>``: the process's peak RSS (VmHWM) minus its RSS just before the stage
(after every import), for an MLP denoiser / classifier on 16×16 images and a few steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline_helpers import make_config

import minority.tasks.scores
import minority.tasks.train_classifier
import minority.tasks.train_diffusion  # noqa: F401 - imported before the baseline is read
from minority.tasks.train import run_training_task

OVERRIDES = (
    "dataset=image_folder",
    "dataset.image_size=16",
    "model=mlp",
    "model.dim=768",
    "model.hidden=64",
    "model.depth=2",
    "train.batch_size=64",
    "trainer.max_steps=20",
    "trainer.log_every_n_steps=5",
    "scores.batch_size=500",
    "scores.num_draws=1",
    "classifier.max_steps=20",
    "classifier.batch_size=64",
    "classifier.arch_kwargs={hidden: 64, depth: 2}",
)


def status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(root: str, images: str, task: str) -> None:
    cfg = make_config(
        "train",
        Path(root),
        *OVERRIDES,
        f"dataset.root={images}",
        f"task={task}",
        run_dir=Path(root) / task,
    )
    before = status("VmRSS")
    run_training_task(cfg)
    print("growth", status("VmHWM") - before)


if __name__ == "__main__":
    main(*sys.argv[1:4])

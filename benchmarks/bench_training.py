"""Training throughput: the project's Lightning loop against a plain PyTorch loop, side by side.

For the embedded experiments (toy2d MLP, batch 1024; digits MLP, batch 256) it times
``train.py task=diffusion`` as the demo runs it (the real ``train_diffusion``: EMA callback,
checkpoints every 500 steps, CSV logging, no progress bar) and a plain loop on the same model,
batch, loss and optimiser (Adam with the cosine schedule; batches sliced from a shuffled
in-memory tensor; no EMA, checkpoints or logging). The Lightning loop's steady-state cost per
step is the difference of two run lengths divided by the difference of their steps, so its
start-up (building the trainer, the final checkpoint) cancels out. Times are CPU seconds on
one thread, minimum over interleaved repeats. From the repo root:

    python benchmarks/bench_training.py            # about a minute per experiment
    python benchmarks/bench_training.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from minority.diffusion.losses import training_losses
from minority.lit.build import build_dataset
from minority.lit.diffusion import DiffusionModule
from minority.tasks.common import plain
from minority.tasks.train_diffusion import train_diffusion

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("toy2d", "digits")


def config(experiment: str, root: Path, steps: int):
    overrides = [
        "task=diffusion",
        f"experiment={experiment}",
        f"paths.root={root}",
        f"run_dir={root / 'run'}",
        "trainer.enable_progress_bar=false",
        f"trainer.max_steps={steps}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def lightning_seconds(experiment: str, steps: int) -> float:
    """CPU seconds of a whole ``train_diffusion`` run of ``steps`` steps in a fresh folder."""
    with tempfile.TemporaryDirectory() as root:
        cfg = config(experiment, Path(root), steps)
        start = time.process_time()
        train_diffusion(cfg)
        return time.process_time() - start


def plain_seconds(experiment: str, steps: int) -> float:
    """CPU seconds of ``steps`` steps of a plain loop on the same model, batch and optimiser."""
    with tempfile.TemporaryDirectory() as root:
        cfg = config(experiment, Path(root), steps)
    torch.manual_seed(0)
    x = build_dataset(plain(cfg.dataset)).x
    batch = min(int(cfg.train.batch_size), len(x))
    module = DiffusionModule(plain(cfg.model), plain(cfg.diffusion), float(cfg.train.lr), steps)
    denoiser, diffusion = module.denoiser, module.diffusion
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=float(cfg.train.lr))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    start = time.process_time()
    done = 0
    while done < steps:
        order = torch.randperm(len(x))
        for first in range(0, len(x) - batch + 1, batch):
            if done == steps:
                break
            x0 = x[order[first : first + batch]]
            k = torch.randint(0, diffusion.num_timesteps, (batch,))
            loss = training_losses(denoiser, diffusion, x0, k, torch.randn_like(x0))["loss"]
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
            schedule.step()
            done += 1
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    short, long = (20, 120) if args.quick else (100, 600)
    print(f"torch {torch.__version__}, 1 thread, CPU time; Lightning: ({long} − {short}) steps")
    print("| experiment | plain loop steps/s | Lightning steps/s | Lightning / plain |")
    print("|---|---:|---:|---:|")
    for experiment in EXPERIMENTS:
        plain_step = lightning_step = float("inf")
        for _ in range(args.repeats):
            plain_step = min(plain_step, plain_seconds(experiment, long - short) / (long - short))
            runs = lightning_seconds(experiment, long) - lightning_seconds(experiment, short)
            lightning_step = min(lightning_step, runs / (long - short))
        print(
            f"| {experiment} | {1 / plain_step:.0f} | {1 / lightning_step:.0f} | "
            f"{plain_step / lightning_step:.2f} |"
        )


if __name__ == "__main__":
    main()

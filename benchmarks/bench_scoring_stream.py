"""Minority-scoring throughput from an image folder on disk versus from a tensor in memory.

An ADM-shaped UNet at 3×64×64 (the CelebA-64 checkpoint's flags at a reduced width, as
``bench_guided_steps.py``) scores the same N images, K = 1 draw at t = 605 with the L2 distance,
batch B, through the same :class:`~minority.lit.scoring.MinorityScoreModule` step:

- folder: the ``folder`` dataset streamed by a DataLoader (PNG decode and ADM centre crop of
  each item in the loop, ``num_workers=0`` so the decoding is timed on the same thread);
- memory: the decoded images held as one tensor (:class:`~minority.lit.data.IndexedTensors`).

Both variants run in turn (interleaved) and the minimum over the repeats is kept; with
``--threads 1`` the clock is the process's CPU time, immune to other processes. It prints
images per second of each and their ratio (folder / memory).

    python benchmarks/bench_scoring_stream.py                 # N = 32, B = 8, width 64
    python benchmarks/bench_scoring_stream.py --n 8 --width 32 # a quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_guided_steps import ADM64_FLAGS, interleaved_minima
from PIL import Image
from torch.utils.data import DataLoader

from minority.data.images import build_image_dataset, load_image_dataset
from minority.lit.data import IndexedTensors
from minority.lit.scoring import MinorityScoreModule
from minority.models.adm import create_model
from minority.models.denoiser import Denoiser

SIZE = 64


def write_images(folder: Path, count: int) -> dict:
    """``count`` random 80×72 PNGs (cropped to 64 on load, as real photos are) and their config."""
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return {"name": "bench", "format": "folder", "root": str(folder), "image_size": SIZE}


def score_all(module: MinorityScoreModule, loader: DataLoader) -> None:
    with torch.no_grad():
        for batch_idx, batch in enumerate(loader):
            module.predict_step(batch, batch_idx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images scored per repeat")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=64, help="UNet base width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    flags = {**ADM64_FLAGS, "num_channels": args.width, "num_head_channels": min(64, args.width)}
    denoiser = Denoiser(create_model(flags), learn_sigma=True)
    module = MinorityScoreModule(denoiser, "cosine", 1000, 605, 1, "l2")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_images(Path(tmp), args.n)
        folder = DataLoader(build_image_dataset(cfg), batch_size=args.batch)
        memory = DataLoader(IndexedTensors(load_image_dataset(cfg).x), batch_size=args.batch)
        jobs = {
            "folder": lambda: score_all(module, folder),
            "memory": lambda: score_all(module, memory),
        }
        seconds = interleaved_minima(jobs, args.repeats, clock)
    print(
        f"minority scoring, ADM 3×{SIZE}×{SIZE} width {args.width}, K = 1, L2, N = {args.n}, "
        f"batch {args.batch}, {args.threads} thread(s), "
        f"{'CPU' if clock is time.process_time else 'wall'} time, min of {args.repeats}"
    )
    print("| source | images / s |")
    print("|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {args.n / value:.2f} |")
    print(f"ratio folder / memory: {seconds['memory'] / seconds['folder']:.3f}")


if __name__ == "__main__":
    main()

"""20 000 images on disk stream through diffusion training, scoring and classifier training with
a peak memory growth far below their decoded size, and the scores equal the in-memory path's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import REPO
from test_streaming import SIZE, folder_cfg, predicted_scores, write_folder

from minority.data.images import load_image_dataset
from minority.lit.build import load_denoiser
from minority.lit.data import RealDataModule
from minority.lit.scoring import MinorityScoreModule, indexed_dataset

LARGE, SMALL = 20_000, 1_000
STAGES = ("diffusion", "scores", "classifier")


def peak_growth(root: Path, images: Path, task: str) -> int:
    """Peak RSS growth (bytes) of one stage run in a fresh process."""
    done = subprocess.run(
        [sys.executable, "tests/stage_memory.py", str(root), str(images), task],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("growth")[-1])


@pytest.mark.slow
def test_twenty_thousand_images_stream_in_bounded_memory(tmp_path):
    large = write_folder(tmp_path / "large", LARGE)
    small = write_folder(tmp_path / "small", SMALL)
    decoded = LARGE * 3 * SIZE * SIZE * 4  # the float32 tensor the in-memory path would hold
    for task in STAGES:  # the same stages on 1 000 images: what does not depend on the size
        extra = peak_growth(tmp_path / "l", large, task) - peak_growth(tmp_path / "s", small, task)
        assert extra < decoded / 4, f"{task}: {extra / 2**20:.1f} MiB more for 20 000 images"
    streamed = np.load(next((tmp_path / "l").rglob("scores.npz")))["arr_0"]
    ckpt = next((tmp_path / "l").rglob("denoiser.pt"))
    model = {
        "_target_": "minority.models.small.MLPNet",
        "arch": "mlp",
        "dim": 768,
        "hidden": 64,
        "depth": 2,
        "learn_sigma": False,
    }
    module = MinorityScoreModule(load_denoiser(model, ckpt), "cosine", 1000, 600, 1, "mse")
    memory = indexed_dataset(load_image_dataset(folder_cfg(large)).x)
    ranges = [(s, min(s + 500, LARGE)) for s in range(0, LARGE, 500)]
    expected = predicted_scores(module, RealDataModule(500, predict=memory, predict_ranges=ranges))
    assert len(streamed) == LARGE
    torch.testing.assert_close(torch.from_numpy(streamed), expected, rtol=1e-6, atol=0)

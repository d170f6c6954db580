"""Two CPU processes (gloo) give the same samples and scores as one, index for index, from
embedded data and from an image folder streamed from disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import REPO, make_config
from untrained import untrained_work_folder

from minority.lit.build import build_denoiser
from minority.models.build import save_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A work folder with an (untrained, seeded) toy2d denoiser checkpoint."""
    return untrained_work_folder(tmp_path_factory.mktemp("ddp"))


def run(script: str, root: Path, folder: Path, *args: str) -> None:
    cmd = [sys.executable, script, f"paths.root={root}", f"hydra.run.dir={folder}", *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("guidance", ["none", "self"])
def test_two_processes_sample_what_one_does(root: Path, guidance: str) -> None:
    common = (
        "num_samples=40",
        "batch_size=6",
        "sampler.steps=10",
        "progress=false",
        f"guidance={guidance}",
    )
    one, two = root / f"one_{guidance}", root / f"two_{guidance}"
    run("sample.py", root, one, *common)
    run("sample.py", root, two, *common, "trainer=ddp_cpu")
    a, b = np.load(one / "samples.npz"), np.load(two / "samples.npz")
    assert a["arr_0"].shape == (40, 2) and np.abs(a["arr_0"] - b["arr_0"]).max() <= 1e-4
    shards = sorted(p.name for p in (two / "shards").glob("shard_*.npz"))
    assert shards == sorted(p.name for p in (one / "shards").glob("shard_*.npz"))


def test_two_processes_score_what_one_does(root: Path) -> None:
    common = ("task=scores", "dataset.num_samples=300", "scores.batch_size=64")
    run("train.py", root, root / "score_one", *common, "paths.scores=" + str(root / "one.pt"))
    run(
        "train.py",
        root,
        root / "score_two",
        *common,
        "trainer=ddp_cpu",
        "paths.scores=" + str(root / "two.pt"),
    )
    a = torch.load(root / "one.pt", weights_only=True)
    b = torch.load(root / "two.pt", weights_only=True)
    assert torch.allclose(a["scores"], b["scores"], atol=1e-4)
    assert torch.equal(a["labels"], b["labels"])


@pytest.mark.slow  # three CLI runs, about a minute on two cores
def test_two_processes_score_a_streamed_image_folder_as_one_does(tmp_path: Path) -> None:
    size, count = 8, 26  # 26 = 6 batches of 4 and a short one, split over 2 ranks
    rng = np.random.default_rng(0)
    for i in range(count):
        path = tmp_path / "images" / f"part{i % 3}" / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    model = {"arch": "mlp", "dim": 3 * size * size, "hidden": 32, "depth": 2, "learn_sigma": False}
    common = (
        "task=scores",
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'images'}",
        f"dataset.image_size={size}",
        "dataset.num_workers=1",
        "scores.batch_size=4",
        "scores.num_classes=3",
        "scores.val_fraction=0.25",
        *(f"model.{key}={value}" for key, value in model.items()),
    )
    torch.manual_seed(0)
    meta = {"model": model, "diffusion": {}, "dataset": "fake", "sample_shape": [3, size, size]}
    checkpoint = make_config("train", tmp_path, *common).paths.diffusion_ckpt
    save_checkpoint(checkpoint, build_denoiser(model), meta)
    for name, extra in (("one", ()), ("two", ("trainer=ddp_cpu",))):
        scores = f"paths.scores={tmp_path / name / 'scores.pt'}"
        run("train.py", tmp_path, tmp_path / name, *common, scores, *extra)
    a = torch.load(tmp_path / "one" / "scores.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "scores.pt", weights_only=True)
    assert a["scores"].shape == (count,) and torch.isfinite(a["scores"]).all()
    torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-6, atol=0)
    assert torch.equal(a["labels"], b["labels"])

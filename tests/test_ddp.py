"""Two CPU processes (gloo) give the same samples and scores as one, index for index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import REPO
from untrained import untrained_work_folder


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

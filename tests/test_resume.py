"""SIGKILL during sampling, relaunch: exactly N unique samples, equal to an uninterrupted run.
SIGTERM stops the run after its current shard, in one sentence, and a relaunch completes it.

100 batches keep the run long enough that the kill lands mid-way on a fast machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pipeline_helpers import REPO
from untrained import untrained_work_folder

ARGS = (
    "num_samples=1000",
    "batch_size=10",
    "sampler.steps=40",
    "progress=false",
    "trainer.enable_progress_bar=false",
)


def command(root: Path, folder: Path) -> list[str]:
    return [sys.executable, "sample.py", f"paths.root={root}", f"hydra.run.dir={folder}", *ARGS]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    root = untrained_work_folder(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(command(root, reference), cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(
        command(root, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while len(list((killed / "shards").glob("shard_*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list((killed / "shards").glob("shard_*.npz")))
    assert 3 <= done_before < 100 and not (killed / "samples.npz").exists()
    subprocess.run(command(root, killed), cwd=REPO, check=True, capture_output=True)
    merged = np.load(killed / "samples.npz")["arr_0"]
    indices = np.concatenate(
        [np.load(p)["indices"] for p in (killed / "shards").glob("shard_*.npz")]
    )
    assert merged.shape == (1000, 2) and np.array_equal(np.sort(indices), np.arange(1000))
    np.testing.assert_allclose(merged, np.load(reference / "samples.npz")["arr_0"], atol=1e-6)


def test_sigterm_stops_after_the_current_shard_and_a_relaunch_completes(tmp_path: Path) -> None:
    root = untrained_work_folder(tmp_path)
    folder = tmp_path / "terminated"
    process = subprocess.Popen(
        command(root, folder),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while len(list((folder / "shards").glob("shard_*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    done_before = len(list((folder / "shards").glob("shard_*.npz")))
    assert process.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert "Stopped by SIGTERM" in stderr and "Rerun the same command" in stderr
    assert 3 <= done_before < 100 and not (folder / "samples.npz").exists()
    subprocess.run(command(root, folder), cwd=REPO, check=True, capture_output=True)
    indices = np.concatenate(
        [np.load(p)["indices"] for p in (folder / "shards").glob("shard_*.npz")]
    )
    assert np.array_equal(np.sort(indices), np.arange(1000))

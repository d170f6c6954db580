"""A 2×3 Hydra multirun over (w, l̃): one folder per point, W&B offline files, the paper table."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import REPO
from untrained import untrained_work_folder

from minority.report import main as report_main


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = untrained_work_folder(tmp_path_factory.mktemp("sweep"))
    folder = root / "sweep"
    cmd = [
        sys.executable,
        "sample.py",
        "-m",
        f"paths.root={root}",
        f"hydra.sweep.dir={folder}",
        "guidance=minority",
        "guidance.scale=0,2",
        "guidance.target_class=0,5,9",
        "num_samples=20",
        "batch_size=20",
        "sampler.steps=5",
        "progress=false",
        "evaluate=true",
        "logger=wandb",
        "trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_one_folder_per_point_with_samples_and_metrics(sweep: Path) -> None:
    points = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(points) == 6
    for point in points:
        assert (point / "samples.npz").is_file() and (point / "metrics.json").is_file()
        assert "guidance.scale=" in point.name and "guidance.target_class=" in point.name


def test_wandb_offline_files_exist_for_each_point(sweep: Path) -> None:
    for point in (p for p in sweep.iterdir() if p.is_dir()):
        runs = list((point / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_report_collects_the_paper_table(sweep: Path, capsys) -> None:
    report_main([str(sweep)])
    assert "| run |" in capsys.readouterr().out
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert len(rows) == 6
    points = {(float(r["scale"]), int(r["target_class"])) for r in rows}
    assert points == {(w, l) for w in (0.0, 2.0) for l in (0, 5, 9)}
    assert {"avgknn", "lof", "rarity", "precision", "recall"} <= set(rows[0])
    assert (sweep / "metrics_vs_scale.png").is_file() and (
        sweep / "metrics_vs_target.png"
    ).is_file()

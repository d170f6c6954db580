"""A Hydra multirun over w × schedule.every × two seeds with W&B offline: one folder per
point, runs that can be found (read back from the offline transaction logs), the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import REPO
from untrained import untrained_work_folder
from wandb_records import OfflineRun, artifact_files

from minority.report import main as report_main

NOISE = (
    "💡",
    "GPU available",
    "TPU available",
    "LeafSpec",
    "Couldn't infer the batch indices",
    "log_every_n_steps",
    "wandb: WARNING",
    "\x1b[",
    "\r",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    root = untrained_work_folder(tmp_path_factory.mktemp("sweep"))
    folder = root / "sweep"
    cmd = [
        sys.executable,
        "sample.py",
        "-m",
        f"paths.root={root}",
        f"hydra.sweep.dir={folder}",
        "guidance=minority",
        "guidance.scale=1,3",
        "schedule.every=1,2",
        "seed=0,1",
        "dataset.num_samples=2000",
        "num_samples=20",
        "batch_size=10",
        "sampler.steps=5",
        "evaluate=true",
        "logger=wandb",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done.stdout + done.stderr


def points(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def test_one_folder_per_point_with_samples_and_metrics(sweep) -> None:
    folder, _ = sweep
    assert len(points(folder)) == 8
    for point in points(folder):
        assert (point / "samples.npz").is_file() and (point / "metrics.json").is_file()
        assert "guidance.scale=" in point.name and "schedule.every=" in point.name


def test_wandb_runs_are_named_grouped_summarised_and_linked(sweep) -> None:
    folder, _ = sweep
    runs = [OfflineRun(next((p / "wandb").glob("offline-run-*"))) for p in points(folder)]
    assert len({r.run.display_name for r in runs}) == 8
    assert {r.run.run_group for r in runs} == {f"toy2d-{folder.name}"}
    for run, point in zip(runs, points(folder), strict=True):
        assert run.run.job_type == "sample"
        assert {"toy2d", "sample", "minority"} <= set(run.run.tags)
        metrics = json.loads((point / "metrics.json").read_text())
        assert run.summary["avgknn"] == pytest.approx(metrics["avgknn"])
        assert "avgknn" not in run.history_keys  # a result, not a one-point history
        assert {"samples", "distributions", "metrics_table"} <= run.history_keys
        used = {a.name: artifact_files(a) for a in run.inputs()}
        assert set(used) == {"toy2d-denoiser", "toy2d-classifier"}
        assert used["toy2d-denoiser"]["denoiser.pt"].endswith("/toy2d/diffusion/denoiser.pt")
        assert used["toy2d-classifier"]["classifier.pt"].endswith("/classifier/classifier.pt")
        made = {a.type: set(artifact_files(a)) for a in run.outputs()}
        assert made == {"samples": {"samples.npz"}, "metrics": {"metrics.json"}}


def test_console_holds_none_of_the_noise_lines(sweep) -> None:
    folder, output = sweep
    for line in NOISE:
        assert line not in output, f"{line!r} in the console output"
    log = (points(folder)[0] / "sample.log").read_text()
    assert "batch 2/2" in log and "W&B run" in log  # progress lines reach the run's log file


def test_report_averages_seeds_per_point_and_plots_each_key(sweep, capsys) -> None:
    folder, _ = sweep
    report_main([str(folder)])
    printed = capsys.readouterr().out
    assert "metrics_vs_guidance.scale.png" in printed
    rows = list(csv.DictReader((folder / "table.csv").open()))
    assert len(rows) == 8 and {"guidance.scale", "schedule.every", "seed"} <= set(rows[0])
    summary = list(csv.DictReader((folder / "summary.csv").open()))
    assert len(summary) == 4
    for point in summary:
        same = [
            float(r["lof"])
            for r in rows
            if (r["guidance.scale"], r["schedule.every"])
            == (point["guidance.scale"], point["schedule.every"])
        ]
        assert point["seeds"] == "2" and len(same) == 2
        assert float(point["lof"]) == pytest.approx(sum(same) / 2)
        assert float(point["lof_se"]) == pytest.approx(abs(same[0] - same[1]) / 2)
    for key in ("guidance.scale", "schedule.every"):
        assert (folder / f"metrics_vs_{key}.png").read_bytes()[:4] == b"\x89PNG"

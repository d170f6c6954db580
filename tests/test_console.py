"""The training stages as the demo runs them, on small settings: a console holding only what
the user can act on, every console line also in the run's log file, the stage files as W&B
artifacts linked to their inputs, the training previews and the scores' Fig. 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import REPO
from test_sweep import NOISE
from wandb_records import OfflineRun

SMALL = ["dataset.num_samples=2000", "logger=wandb", "train.preview.every=10"]
STAGES = {
    "diffusion": ["trainer.max_steps=20", "train.preview.steps=5"],
    "scores": ["scores.batch_size=1000", "scores.num_draws=1"],
    "classifier": ["classifier.max_steps=20"],
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("stages")
    env = {**os.environ, "WANDB_MODE": "offline"}
    outputs = {}
    for task, extra in STAGES.items():
        cmd = [sys.executable, "train.py", f"task={task}", f"paths.root={root}", *SMALL, *extra]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[task] = done.stdout + done.stderr
    return root / "toy2d", outputs


def test_console_holds_none_of_the_noise_lines(stages) -> None:
    _, outputs = stages
    for task, output in outputs.items():
        for line in NOISE:
            assert line not in output, f"{line!r} in the console of task={task}"


def test_every_console_line_is_in_the_run_log(stages) -> None:
    work, outputs = stages
    for task, output in outputs.items():
        log = (work / task / "train.log").read_text()
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines and all(line in log for line in lines), task


def test_training_counts_steps_and_logs_the_learning_rate(stages) -> None:
    work, outputs = stages
    assert "step 20/20" in outputs["diffusion"]
    run = OfflineRun(next((work / "diffusion" / "wandb").glob("offline-run-*")))
    assert {"lr-Adam", "train/samples"} <= run.history_keys
    previews = sorted(p.name for p in (work / "diffusion" / "previews").iterdir())
    assert previews == ["step_0000010_scatter.png", "step_0000020_scatter.png"]


def test_stage_artifacts_chain_denoiser_scores_classifier(stages) -> None:
    work, _ = stages
    runs = {t: OfflineRun(next((work / t / "wandb").glob("offline-run-*"))) for t in STAGES}
    made = {t: [a.name for a in r.outputs()] for t, r in runs.items()}
    used = {t: [a.name for a in r.inputs()] for t, r in runs.items()}
    assert made == {
        "diffusion": ["toy2d-denoiser"],
        "scores": ["toy2d-scores"],
        "classifier": ["toy2d-classifier"],
    }
    assert used == {"diffusion": [], "scores": ["toy2d-denoiser"], "classifier": ["toy2d-scores"]}
    # the same file gives the same artifact version in the producing and the using run
    digest = {a.name: a.digest for r in runs.values() for a in r.artifacts}
    assert runs["scores"].inputs()[0].digest == digest["toy2d-denoiser"]
    assert {r.run.job_type for r in runs.values()} == set(STAGES)


def test_scores_stage_draws_the_lowest_median_highest_figure(stages) -> None:
    work, outputs = stages
    figure = work / "scores" / "score_extremes.png"
    assert figure.read_bytes()[:4] == b"\x89PNG" and str(figure) in outputs["scores"]

"""Misuse replayed through the CLI: a run either gives what its config asks for or stops.

Each case costs a few CLI launches, so most are marked slow (``-m slow``); one of each kind
runs by default.

Every case either produces the result the new config asks for (checked against a fresh run with
the same seed) or exits 2 with one sentence, and never leaves a file contradicting its
``config.yaml`` (its provenance recomputed from that config matches the recorded one).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pipeline_helpers import REPO, make_config
from untrained import untrained_work_folder

from minority.lit.build import build_denoiser
from minority.models.build import save_checkpoint
from minority.outputs import completed_ranges, shard_path
from minority.provenance import read_json
from minority.tasks.common import plain
from minority.tasks.evaluate import evaluate_task
from minority.tasks.provenance import (
    classifier_provenance,
    denoiser_provenance,
    recorded_provenance,
    sampling_provenance,
)

SLOW = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
QUIET = ("progress=false", "trainer.enable_progress_bar=false")
SAMPLE = ("num_samples=20", "batch_size=10", "sampler.steps=5", "guidance=minority", *QUIET)
LONG = ("num_samples=1000", "batch_size=10", "sampler.steps=40", *QUIET)
NO_BAR = ("trainer.enable_progress_bar=false",)
TRAIN = ("trainer.max_steps=60", "train.batch_size=64", "trainer.log_every_n_steps=10", *NO_BAR)


def command(script: str, root: Path, folder: Path, *args: str) -> list[str]:
    return [sys.executable, script, f"paths.root={root}", f"hydra.run.dir={folder}", *args]


def cli(script: str, root: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(script, root, folder, *args),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """The run exited 2 with one ``error:`` sentence holding ``words``; returns the sentence."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


def samples(folder: Path) -> np.ndarray:
    with np.load(folder / "samples.npz") as archive:
        return archive["arr_0"]


def check_sample_folder(folder: Path) -> None:
    """provenance.json is the one its config.yaml gives; samples.npz, if any, is its shards."""
    cfg = OmegaConf.load(folder / "config.yaml")
    assert read_json(folder / "provenance.json") == sampling_provenance(cfg)
    if (folder / "samples.npz").exists():
        parts = sorted(completed_ranges(folder / "shards"))
        merged = np.concatenate(
            [np.load(shard_path(folder / "shards", *p))["arr_0"] for p in parts]
        )
        assert len(merged) == cfg.num_samples and np.array_equal(merged, samples(folder))


# Sampling ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A work folder, a finished minority-guided run with w = 0 and a second denoiser file."""
    root = untrained_work_folder(tmp_path_factory.mktemp("trust"))
    base = root / "base"
    ok(cli("sample.py", root, base, *SAMPLE, "guidance.scale=0"))
    torch.manual_seed(1)
    cfg = make_config("sample", root)
    other = root / "other_denoiser.pt"
    meta = {"model": plain(cfg.model), "diffusion": plain(cfg.diffusion), "dataset": "toy2d"}
    save_checkpoint(other, build_denoiser(plain(cfg.model)), meta)
    return root, base, other


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("guidance.scale=8", "guidance.scale"),
        pytest.param("seed=1", "seed", marks=SLOW),
        pytest.param("sampler.steps=6", "sampler.steps", marks=SLOW),
        pytest.param("guidance.target_class=3", "guidance.target_class", marks=SLOW),
        pytest.param("num_samples=40", "num_samples", marks=SLOW),
        pytest.param("checkpoint=OTHER", "upstream.denoiser", marks=SLOW),
    ],
)
def test_a_changed_setting_in_a_used_folder_stops_and_keeps_the_old_results(
    sampled, tmp_path: Path, change: str, key: str
) -> None:
    root, base, other = sampled
    folder = tmp_path / "run"
    shutil.copytree(base, folder)
    before = samples(folder)
    change = change.replace("OTHER", str(other))
    error = refused(cli("sample.py", root, folder, *SAMPLE, "guidance.scale=0", change), key)
    assert "run_name" in error and "overwrite=true" in error
    assert np.array_equal(samples(folder), before)
    check_sample_folder(folder)


@SLOW
def test_overwrite_clears_the_folder_and_gives_the_fresh_result(sampled, tmp_path: Path) -> None:
    root, base, _ = sampled
    folder, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(base, folder)
    args = (*SAMPLE, "guidance.scale=8", "seed=1", "evaluate=true")
    ok(cli("sample.py", root, folder, *args, "overwrite=true"))
    ok(cli("sample.py", root, fresh, *args))
    assert np.array_equal(samples(folder), samples(fresh))
    assert not np.array_equal(samples(folder), samples(base))
    check_sample_folder(folder)
    table = (root / "toy2d" / "metrics.md").read_text().splitlines()
    assert table[0].startswith("| run |") and "fingerprint" in table[0]
    rows = [line for line in table[2:] if line.startswith(f"| {folder.resolve()} |")]
    assert len(rows) == 1 and read_json(folder / "provenance.json")["fingerprint"] in rows[0]


@SLOW
def test_a_second_run_with_other_settings_in_a_busy_folder_is_refused(
    sampled, tmp_path: Path
) -> None:
    root, _, _ = sampled
    folder, reference = tmp_path / "busy", tmp_path / "reference"
    first = subprocess.Popen(
        command("sample.py", root, folder, *LONG),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while len(completed_ranges(folder / "shards")) < 2 and time.time() < deadline:
            time.sleep(0.05)
        refused(cli("sample.py", root, folder, *LONG, "seed=1"), "run_name")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    ok(cli("sample.py", root, reference, *LONG, "num_samples=20"))
    for start, end in ((0, 10), (10, 20)):
        ours = np.load(shard_path(folder / "shards", start, end))["arr_0"]
        assert np.array_equal(ours, samples(reference)[start:end])
    check_sample_folder(folder)


@SLOW
def test_a_killed_overwrite_of_a_finished_run_leaves_no_old_samples(
    sampled, tmp_path: Path
) -> None:
    root, base, _ = sampled
    folder = tmp_path / "run"
    shutil.copytree(base, folder)
    bigger = subprocess.Popen(
        command("sample.py", root, folder, *LONG, "overwrite=true"),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while len(completed_ranges(folder / "shards")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(bigger.pid, signal.SIGKILL)
    bigger.wait()
    assert 3 <= len(completed_ranges(folder / "shards")) < 100
    assert not (folder / "samples.npz").exists() and not (folder / "scatter.png").exists()
    assert OmegaConf.load(folder / "config.yaml").num_samples == 1000
    check_sample_folder(folder)


def test_the_readme_sampling_commands_get_one_folder_each(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### 4. Sample", 1)[1].split("```", 2)[1]
    commands = [
        line.split("#")[0].split()[2:] for line in section.splitlines() if "sample.py" in line
    ]
    single = [c for c in commands if "-m" not in c]
    assert len(single) >= 5
    folders = {make_config("sample", tmp_path, *c).stage_dir for c in single}
    assert len(folders) == len(single)
    swept = [f"guidance.scale={w}" for w in (0, 8)]
    pair = {make_config("sample", tmp_path, "guidance=minority", s).stage_dir for s in swept}
    assert len(pair) == 2


# Training ------------------------------------------------------------------------------------


def check_denoiser(root: Path) -> None:
    """denoiser.pt records the provenance and diffusion its folder's config.yaml gives."""
    cfg = OmegaConf.load(root / "toy2d" / "diffusion" / "config.yaml")
    content = torch.load(root / "toy2d" / "diffusion" / "denoiser.pt", weights_only=True)
    assert content["provenance"] == denoiser_provenance(cfg)
    assert content["diffusion"] == plain(cfg.diffusion)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A work folder with a denoiser trained for 60 steps (cosine schedule)."""
    root = tmp_path_factory.mktemp("trained")
    ok(cli("train.py", root, root / "toy2d" / "diffusion", "task=diffusion", *TRAIN))
    return root


def train(root: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("train.py", root, root / "toy2d" / "diffusion", "task=diffusion", *TRAIN, *args)


def test_a_finished_training_rerun_does_nothing(trained: Path) -> None:
    denoiser = trained / "toy2d" / "diffusion" / "denoiser.pt"
    before = denoiser.read_bytes()
    assert "up to date" in ok(train(trained))
    assert denoiser.read_bytes() == before
    assert (trained / "toy2d" / "diffusion" / "checkpoints" / "last.ckpt").is_file()
    check_denoiser(trained)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("diffusion=linear", "diffusion.noise_schedule"),
        pytest.param("trainer.max_steps=30", "max_steps", marks=SLOW),
        pytest.param("model.hidden=64", "model.hidden", marks=SLOW),
    ],
)
def test_training_with_other_settings_stops_without_touching_the_denoiser(
    trained: Path, tmp_path: Path, change: str, key: str
) -> None:
    root = tmp_path / "work"
    shutil.copytree(trained, root)
    before = (root / "toy2d" / "diffusion" / "denoiser.pt").read_bytes()
    assert "resume=never" in refused(train(root, change), "last.ckpt", key)
    assert (root / "toy2d" / "diffusion" / "denoiser.pt").read_bytes() == before
    check_denoiser(root)


def test_a_corrupt_last_checkpoint_is_never_resumed(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "work"
    shutil.copytree(trained, root)
    (root / "toy2d" / "diffusion" / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))
    (root / "toy2d" / "diffusion" / "denoiser.pt").unlink()
    refused(train(root), "last.ckpt", "delete")
    assert not (root / "toy2d" / "diffusion" / "denoiser.pt").exists()


@SLOW
def test_training_afresh_gives_what_a_fresh_run_gives(trained: Path, tmp_path: Path) -> None:
    root, fresh = tmp_path / "work", tmp_path / "fresh"
    shutil.copytree(trained, root)
    ok(train(root, "diffusion=linear", "resume=never"))
    ok(train(fresh, "diffusion=linear"))
    ours, theirs = (
        torch.load(r / "toy2d" / "diffusion" / "denoiser.pt", weights_only=True)
        for r in (root, fresh)
    )
    assert ours["diffusion"]["noise_schedule"] == "linear"
    for name, weight in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], weight), name
    check_denoiser(root)


def test_sampling_with_another_schedule_than_the_denoiser_stops(trained: Path) -> None:
    folder = trained / "samples" / "linear"
    refused(
        cli("sample.py", trained, folder, *SAMPLE[:3], *QUIET, "diffusion=linear"), "noise_schedule"
    )


def logged_steps(log: Path) -> list[int]:
    """The ``step`` column of a CSV log (empty while it does not exist)."""
    if not log.is_file():
        return []
    with log.open(newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]


@SLOW
def test_a_killed_training_resumes_and_appends_to_its_log(tmp_path: Path) -> None:
    args = ("task=diffusion", "trainer.max_steps=1100", "train.batch_size=64", *NO_BAR)
    args = (*args, "trainer.log_every_n_steps=50")
    folder = tmp_path / "toy2d" / "diffusion"
    run = subprocess.Popen(
        command("train.py", tmp_path, folder, *args),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = folder / "logs" / "metrics.csv"
    deadline = time.time() + 600
    while time.time() < deadline and max(logged_steps(log), default=0) < 549:
        time.sleep(0.1)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (folder / "denoiser.pt").exists()
    assert "resuming from" in ok(cli("train.py", tmp_path, folder, *args))
    steps = logged_steps(log)
    assert steps == sorted(set(steps)) and steps[0] < 500 and steps[-1] >= 1000
    check_denoiser(tmp_path)


# Scores and classifier -----------------------------------------------------------------------


@SLOW
def test_scores_and_classifier_reruns(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "work"
    shutil.copytree(trained, root)
    scores = ("task=scores", "dataset.num_samples=400", "scores.batch_size=200", *NO_BAR)
    classifier = ("task=classifier", "dataset.num_samples=400", "classifier.max_steps=20", *NO_BAR)
    ok(cli("train.py", root, root / "s", *scores))
    assert "up to date" in ok(cli("train.py", root, root / "s", *scores))
    ok(cli("train.py", root, root / "c", *classifier))
    assert "up to date" in ok(cli("train.py", root, root / "c", *classifier))
    refused(
        cli("train.py", root, root / "c", *classifier[:2], "classifier.max_steps=10"), "max_steps"
    )
    ok(cli("train.py", root, root / "s", *scores, "scores.num_draws=2"))
    refused(cli("train.py", root, root / "c", *classifier), "upstream.scores", "resume=never")
    ok(cli("train.py", root, root / "c", *classifier, "resume=never"))
    cfg = OmegaConf.load(root / "c" / "config.yaml")
    saved = recorded_provenance(root / "toy2d" / "classifier" / "classifier.pt")
    assert saved == classifier_provenance(cfg, cfg.classifier.max_steps)


# Evaluation ----------------------------------------------------------------------------------


def test_a_run_is_evaluated_on_its_own_dataset_into_its_own_table(sampled, tmp_path) -> None:
    root, base, _ = sampled
    folder = tmp_path / "run"
    shutil.copytree(base, folder)
    cfg = make_config("evaluate", tmp_path, "dataset=digits", f"run_dir={folder}")
    for _ in range(2):
        evaluate_task(cfg)
    table = root / "toy2d" / "metrics.md"
    assert not (tmp_path / "digits" / "metrics.md").exists()
    rows = [line for line in table.read_text().splitlines() if str(folder.resolve()) in line]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(rows) == 1 and metrics["fingerprint"] in rows[0]
    assert metrics["provenance"]["samples"] == read_json(folder / "provenance.json")
    assert metrics["samples_fingerprint"] == metrics["provenance"]["samples"]["fingerprint"]

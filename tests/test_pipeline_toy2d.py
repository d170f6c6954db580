"""End to end on toy2d: train → scores → classifier → sample → evaluate.

The density and guidance checks need fully trained stages (slow); what does not depend on the
stages' quality runs on briefly trained ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import REPO, make_config

from minority.lit.build import build_dataset
from minority.metrics.ground_truth import toy2d_ground_truth
from minority.tasks.common import plain
from minority.tasks.evaluate import evaluate_task
from minority.tasks.sample import sample_task
from minority.tasks.train import run_training_task


def stages(root: Path, diffusion_steps: int, classifier_steps: int) -> Path:
    """A work folder with a trained denoiser, minority scores and a minority classifier."""
    steps = f"trainer.max_steps={diffusion_steps}"
    run_training_task(make_config("train", root, "task=diffusion", steps, run_dir=root / "d"))
    run_training_task(make_config("train", root, "task=scores", run_dir=root / "s"))
    steps = f"classifier.max_steps={classifier_steps}"
    run_training_task(make_config("train", root, "task=classifier", steps, run_dir=root / "c"))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Stages trained long enough for the density and guidance checks (slow tests only)."""
    return stages(tmp_path_factory.mktemp("trained"), 6000, 3000)


@pytest.fixture(scope="module")
def toy2d(tmp_path_factory) -> Path:
    """Stages trained briefly: what runs on them does not depend on their quality."""
    return stages(tmp_path_factory.mktemp("brief"), 200, 200)


def draw(root: Path, name: str, *overrides: str, n: int = 2000) -> np.ndarray:
    cfg = make_config(
        "sample",
        root,
        f"num_samples={n}",
        "batch_size=500",
        "progress=false",
        "sampler.steps=100",
        *overrides,
        run_dir=root / "samples" / name,
    )
    return np.load(sample_task(cfg))["arr_0"]


def figures(samples: np.ndarray) -> dict[str, float]:
    mixture = build_dataset(plain(make_config("sample", Path("unused")).dataset)).mixture
    return toy2d_ground_truth(mixture, samples)


@pytest.mark.slow
def test_denoiser_matches_the_exact_density(trained: Path) -> None:
    cfg = make_config("sample", trained)
    data = build_dataset(plain(cfg.dataset))
    got = figures(draw(trained, "plain"))
    assert abs(got["mean_log_density"] - float(data.mixture.log_prob(data.x).mean())) < 0.2
    for k, weight in enumerate(data.mixture.weights.tolist()):
        assert weight / 2 <= got[f"component_{k}_share"] <= weight * 2


def best_of_sweep(root: Path, guidance: str, scales: tuple[float, ...]) -> dict[str, float]:
    """The sweep point with the largest light share among those with ≤ 5 % off the manifold."""
    points = [
        figures(draw(root, f"{guidance}_{w}", f"guidance={guidance}", f"guidance.scale={w}"))
        for w in scales
    ]
    on_manifold = [p for p in points if p["off_manifold_share"] <= 0.05]
    assert on_manifold, f"every scale leaves the manifold: {points}"
    return max(on_manifold, key=lambda p: p["light_share"])


@pytest.mark.slow
def test_minority_guidance_raises_the_light_share(trained: Path) -> None:
    plain_share = figures(draw(trained, "plain"))["light_share"]
    assert best_of_sweep(trained, "minority", (1, 2, 4))["light_share"] >= 3 * plain_share


@pytest.mark.slow
def test_self_guidance_raises_the_light_share(trained: Path) -> None:
    plain_share = figures(draw(trained, "plain"))["light_share"]
    assert best_of_sweep(trained, "self", (0.5, 1, 1.5))["light_share"] >= 2 * plain_share


@pytest.mark.slow
def test_dpm_solver_at_20_steps_keeps_the_guided_ddpm_light_share(trained: Path) -> None:
    """Minority guidance, w = 4: DPM-Solver++(2M) at 20 steps reaches a light share within 10 %
    of 100-step DDPM's with ≥ 95 % of the samples on the manifold."""
    guided = ("guidance=minority", "guidance.scale=4")
    ddpm = figures(draw(trained, "minority_4", *guided))
    dpm = figures(draw(trained, "dpmpp2m20_4", *guided, "sampler=dpmpp2m", "sampler.steps=20"))
    assert dpm["light_share"] >= 0.9 * ddpm["light_share"], (dpm, ddpm)
    assert dpm["off_manifold_share"] <= 0.05, dpm


def test_batch_size_does_not_change_samples(toy2d: Path) -> None:
    runs = []
    for batch in (1, 7, 64):
        cfg = make_config(
            "sample",
            toy2d,
            "num_samples=64",
            f"batch_size={batch}",
            "progress=false",
            "sampler.steps=20",
            run_dir=toy2d / "samples" / f"batch{batch}",
        )
        runs.append(np.load(sample_task(cfg))["arr_0"])
    assert np.abs(runs[0] - runs[2]).max() <= 1e-4 and np.abs(runs[1] - runs[2]).max() <= 1e-4


def test_resume_completes_exactly_the_missing_shards(toy2d: Path) -> None:
    folder = toy2d / "samples" / "resume"
    cfg = make_config(
        "sample",
        toy2d,
        "num_samples=30",
        "batch_size=10",
        "progress=false",
        "sampler.steps=10",
        run_dir=folder,
    )
    first = np.load(sample_task(cfg))["arr_0"]
    shards = sorted((folder / "shards").glob("shard_*.npz"))
    shards[1].unlink()
    (folder / "samples.npz").unlink()
    again = np.load(sample_task(cfg))["arr_0"]
    assert np.array_equal(first, again) and len(again) == 30


def test_evaluate_writes_metrics_and_a_table_row(toy2d: Path) -> None:
    draw(toy2d, "plain")
    cfg = make_config("evaluate", toy2d, f"run_dir={toy2d / 'samples' / 'plain'}")
    values = evaluate_task(cfg)
    assert (toy2d / "samples" / "plain" / "metrics.json").is_file()
    assert (toy2d / "samples" / "plain" / "distributions.png").is_file()
    assert 0 < values["precision"] <= 1 and values["lof"] > 0.5
    table = (toy2d / "toy2d" / "metrics.md").read_text().splitlines()
    assert table[0].startswith("| run |") and len(table) >= 3


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sample.py", "num_samples=0"), "num_samples must be positive"),
        (("sample.py", "checkpoint=/nonexistent/denoiser.pt"), "does not exist"),
        (("sample.py", "guidance=minority", "guidance.target_class=99"), "outside"),
    ],
)
def test_bad_input_is_one_sentence_and_nonzero_exit(toy2d: Path, args, message) -> None:
    done = run_cli(*args, f"paths.root={toy2d}", "hydra.run.dir=" + str(toy2d / "bad"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unknown_config_option_is_rejected_without_traceback(tmp_path: Path) -> None:
    done = run_cli("sample.py", "sampler=euler", f"paths.root={tmp_path}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "euler" in done.stderr


def test_mismatched_checkpoint_is_a_clear_error(toy2d: Path) -> None:
    done = run_cli(
        "sample.py", "model.hidden=64", f"paths.root={toy2d}", "hydra.run.dir=" + str(toy2d / "bad")
    )
    assert done.returncode == 2 and "differs from the configured model" in done.stderr


def test_guided_targets_are_in_range_for_a_trained_classifier(toy2d: Path) -> None:
    scores = torch.load(toy2d / "toy2d" / "scores" / "scores.pt", weights_only=True)
    assert scores["labels"].bincount().tolist() == [2000] * 10

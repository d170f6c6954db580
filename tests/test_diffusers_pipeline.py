"""End to end on tiny diffusers folders through the real configs: sampling (DDPM, DDIM,
Boost-and-Skip), minority scores, classifier training, minority guidance and self-guidance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers_helpers import conditional_unet_folder, save_folder, tiny_unet
from omegaconf import OmegaConf
from pipeline_helpers import REPO, make_config

from minority.cli import user_errors_exit
from minority.errors import UserError
from minority.tasks.sample import sample_task
from minority.tasks.train import run_training_task

FOLDERS = {
    "eps-unconditional": ({}, {"beta_schedule": "linear"}),
    "v-class-conditional": (
        {"num_classes": 3, "learn_sigma": True},
        {
            "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "v_prediction",
            "variance_type": "learned_range",
            "clip_sample": False,
        },
    ),
}
DIGITS = ("model=diffusers_unet2d", "dataset=digits")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusers")
    return {
        name: save_folder(root / name, tiny_unet(**unet), **scheduler)
        for name, (unet, scheduler) in FOLDERS.items()
    }


def draw(root: Path, folder: Path, name: str, *overrides: str) -> Path:
    cfg = make_config(
        "sample",
        root,
        *DIGITS,
        f"checkpoint={folder}",
        "num_samples=4",
        "batch_size=2",
        "progress=false",
        "sampler.steps=5",
        *overrides,
        run_dir=root / "samples" / name,
    )
    return sample_task(cfg)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp2m"])
@pytest.mark.parametrize("name", list(FOLDERS))
def test_sample_a_diffusers_folder(tmp_path: Path, folders, name: str, sampler: str) -> None:
    steps = "sampler.steps=ddim5" if sampler == "ddim" else "sampler.steps=5"
    out = draw(tmp_path, folders[name], name, f"sampler={sampler}", steps)
    archive = np.load(out)
    assert archive["arr_0"].shape == (4, 8, 8, 1) and archive["arr_0"].dtype == np.uint8
    conditional = name == "v-class-conditional"
    labels = archive["arr_1"]
    assert ((labels >= 0) & (labels < 3)).all() if conditional else (labels == -1).all()
    saved = OmegaConf.load(out.parent / "config.yaml")
    assert saved.model.flags.class_cond is conditional
    expected = ("cosine", "learned_range") if conditional else ("linear:0.0001:0.02", "fixed_small")
    assert (saved.diffusion.noise_schedule, saved.diffusion.variance_type) == expected
    assert saved.sampler.clip_denoised is not conditional


def test_boost_and_skip_changes_the_samples(tmp_path: Path, folders) -> None:
    folder = folders["eps-unconditional"]
    plain = np.load(draw(tmp_path, folder, "plain"))["arr_0"]
    again = np.load(draw(tmp_path, folder, "again"))["arr_0"]
    boosted = np.load(draw(tmp_path, folder, "bns", "init=boost_skip", "init.skip=1"))["arr_0"]
    assert np.array_equal(plain, again) and not np.array_equal(plain, boosted)


def test_minority_score_classifier_and_guidance(tmp_path: Path) -> None:
    """Scores and classifier on the folder's schedule, then minority and self guidance, with
    an unconditional v-prediction, learned-range UNet."""
    _, scheduler = FOLDERS["v-class-conditional"]
    schedule = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    folder = save_folder(
        tmp_path / "model", tiny_unet(learn_sigma=True), **{**scheduler, **schedule}
    )
    stage = (*DIGITS, f"paths.diffusion_ckpt={folder}")
    run_training_task(
        make_config(
            "train",
            tmp_path,
            "task=scores",
            *stage,
            "scores.num_draws=1",
            "scores.perturb_t=300",
            run_dir=tmp_path / "s",
        )
    )
    run_training_task(
        make_config(
            "train",
            tmp_path,
            "task=classifier",
            *stage,
            "classifier=conv",
            "classifier.max_steps=5",
            "classifier.batch_size=64",
            run_dir=tmp_path / "c",
        )
    )
    classifier = torch.load(
        tmp_path / "digits" / "classifier" / "classifier.pt", weights_only=True
    )["hyper_parameters"]
    assert classifier["noise_schedule"] == "scaled_linear:0.00085:0.012"
    plain = np.load(draw(tmp_path, folder, "plain"))["arr_0"]
    for name, guidance in {
        "minority": ("guidance=minority", "guidance.scale=50"),
        "self": ("guidance=self", "guidance.scale=50"),
        "minority-dpmpp2m": ("guidance=minority", "guidance.scale=50", "sampler=dpmpp2m"),
        "self-dpmpp2m": ("guidance=self", "guidance.scale=50", "sampler=dpmpp2m"),
    }.items():
        guided = np.load(draw(tmp_path, folder, name, *guidance))["arr_0"]
        assert guided.shape == plain.shape and not np.array_equal(guided, plain), name


def test_a_diffusers_model_is_not_trained_here(tmp_path: Path, folders) -> None:
    cfg = make_config("train", tmp_path, "task=diffusion", *DIGITS, run_dir=tmp_path / "d")
    with pytest.raises(UserError, match="loaded from its diffusers folder"):
        run_training_task(cfg)


def thresholding(path: Path) -> Path:
    return save_folder(path, tiny_unet(), thresholding=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (Path.mkdir, "is not a diffusers model folder"),
        (conditional_unet_folder, "UNet2DConditionModel, which is not supported yet"),
        (thresholding, "dynamic thresholding"),
    ],
    ids=["no-config", "text-conditioned", "thresholding"],
)
def test_bad_folders_exit_2_with_one_sentence(tmp_path: Path, capsys, make, message) -> None:
    make(tmp_path / "model")
    cfg = make_config("sample", tmp_path, *DIGITS, f"checkpoint={tmp_path / 'model'}")
    with pytest.raises(SystemExit) as exit_status:
        user_errors_exit(sample_task)(cfg)
    error = capsys.readouterr().err
    assert exit_status.value.code == 2
    assert message in error and error.strip().count("\n") == 0


def test_sample_py_refuses_a_text_conditioned_unet(tmp_path: Path) -> None:
    conditional_unet_folder(tmp_path / "model")
    done = subprocess.run(
        [
            sys.executable,
            "sample.py",
            *DIGITS,
            f"checkpoint={tmp_path / 'model'}",
            f"paths.root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "UNet2DConditionModel, which is not supported yet" in done.stderr


def test_scores_of_a_class_conditional_model_exit_2_with_one_sentence(tmp_path: Path, folders):
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "task=scores",
            *DIGITS,
            f"paths.diffusion_ckpt={folders['v-class-conditional']}",
            f"paths.root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "minority scores of a class-conditional model are not supported" in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr

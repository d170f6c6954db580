"""The paper presets end to end on CPU, with random-weight networks of their architectures.

Each preset is composed from the real configs with only the reduced-width overrides of
``adm_helpers`` (and l2 for the LPIPS distance, whose trunk weights are not available offline);
a random guided-diffusion state dict of that architecture is saved and loaded through
``checkpoint=``. The runs check the archive the presets write: uint8 NHWC images and, for
class-conditional models, labels in range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from adm_helpers import FAST, HEAD_CHANNELS, REDUCED, save_random_checkpoint
from PIL import Image
from pipeline_helpers import make_config

from minority.errors import MissingWeightsError, UserError
from minority.lit.classifier import MinorityClassifierModule
from minority.models.adm import create_classifier
from minority.tasks.sample import sample_task
from minority.tasks.train import run_training_task

L2 = ("guidance.distance=l2",)
# Boost-and-Skip skips 3 steps: keep 2 to walk.
BNS_STEPS = ("sampler.steps=5",)
# The cascade at reduced width: extractor of width 32 (features 128×8×8) and a head of width 32.
EXTRACTOR_FLAGS = {
    "image_size": 256,
    "classifier_width": 32,
    "classifier_depth": 1,
    "classifier_num_head_channels": 32,
}
HEAD_FLAGS = {
    "image_size": 8,
    "in_channels": 128,
    "classifier_width": 32,
    "classifier_depth": 1,
    "classifier_channel_mult": "1",
    "classifier_attention_resolutions": "8",
    "classifier_resblock_updown": False,
    "classifier_num_head_channels": 32,
}


def preset_config(root: Path, preset: str, *overrides: str, run: str = "run"):
    return make_config(
        "sample",
        root,
        f"experiment={preset}",
        *REDUCED,
        *FAST,
        *overrides,
        run_dir=root / preset / run,
    )


def run_preset(root: Path, preset: str, *overrides: str, run: str = "run") -> dict:
    """Save a random checkpoint for ``preset`` at reduced width, sample with it, load the npz."""
    ckpt = save_random_checkpoint(
        preset_config(root, preset, *overrides), root / "weights" / f"{preset}.pt"
    )
    cfg = preset_config(root, preset, f"checkpoint={ckpt}", *overrides, run=run)
    with np.load(sample_task(cfg)) as archive:
        return {"images": archive["arr_0"], "labels": archive["arr_1"]}


def check_images(images: np.ndarray, size: int) -> None:
    assert images.dtype == np.uint8 and images.shape == (2, size, size, 3)
    assert images.std() > 0


def test_bns_celeba64_runs(tmp_path: Path) -> None:
    out = run_preset(tmp_path, "bns_celeba64", *HEAD_CHANNELS, *BNS_STEPS)
    check_images(out["images"], 64)
    assert out["labels"].tolist() == [-1, -1]


def test_sg_celeba64_runs(tmp_path: Path) -> None:
    out = run_preset(tmp_path, "sg_celeba64", *HEAD_CHANNELS, *L2)
    check_images(out["images"], 64)


@pytest.mark.parametrize(
    "preset", [pytest.param("sg_imagenet64", marks=pytest.mark.slow), "bns_imagenet64"]
)
def test_imagenet64_presets_draw_labels_per_sample(tmp_path: Path, preset: str) -> None:
    """Random labels are saved as arr_1 and, like the images, do not depend on the batch."""
    extra = (*HEAD_CHANNELS, *(L2 if preset.startswith("sg") else BNS_STEPS))
    whole = run_preset(tmp_path, preset, *extra)
    single = run_preset(tmp_path, preset, *extra, "batch_size=1", run="single")
    reseeded = run_preset(tmp_path, preset, *extra, "seed=1", run="reseeded")
    check_images(whole["images"], 64)
    labels = whole["labels"]
    assert labels.dtype == np.int64 and ((labels >= 0) & (labels < 1000)).all()
    assert np.array_equal(labels, single["labels"])
    assert np.array_equal(whole["images"], single["images"])
    assert not np.array_equal(labels, reseeded["labels"])


def save_extractor(root: Path) -> Path:
    """A random reduced-width ADM 256×256 classifier, as the cascade's frozen extractor."""
    extractor = root / "weights" / "256x256_classifier.pt"
    extractor.parent.mkdir(parents=True, exist_ok=True)
    torch.save(create_classifier(EXTRACTOR_FLAGS).state_dict(), extractor)
    return extractor


def test_mg_lsun256_runs_with_a_cascade_classifier(tmp_path: Path) -> None:
    arch_kwargs = {
        "extractor_flags": EXTRACTOR_FLAGS,
        "head_flags": HEAD_FLAGS,
        "extractor_weights": str(save_extractor(tmp_path)),
    }
    module = MinorityClassifierModule(100, (3, 256, 256), "adm_cascade", arch_kwargs, "linear")
    classifier = tmp_path / "weights" / "classifier.pt"
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, classifier
    )
    out = run_preset(
        tmp_path, "mg_lsun256", *HEAD_CHANNELS, f"guidance.classifier_ckpt={classifier}"
    )
    check_images(out["images"], 256)


def flag_override(name: str, flags: dict) -> str:
    """``+name={k:v,...}`` in Hydra's override grammar (strings quoted, as flags keep them)."""

    def value(v: object) -> str:
        return f"'{v}'" if isinstance(v, str) else str(v).lower()

    return f"+{name}={{{','.join(f'{k}:{value(v)}' for k, v in flags.items())}}}"


@pytest.mark.slow
def test_mg_lsun256_stages_chain(tmp_path: Path) -> None:
    """train.py task=scores and task=classifier with mg_lsun256_train on a folder of bedrooms,
    then mg_lsun256 sampling with the classifier from its fixed place (L = 2 for 8 images)."""
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"bedroom_{i}.png")
    ckpt = save_random_checkpoint(
        preset_config(tmp_path, "mg_lsun256", *HEAD_CHANNELS), tmp_path / "weights" / "lsun.pt"
    )
    common = (
        "experiment=mg_lsun256_train",
        f"checkpoint={ckpt}",
        f"dataset.root={tmp_path}",
        *REDUCED,
        *HEAD_CHANNELS,
    )
    scores = (
        "scores.distance=l2",
        "scores.num_classes=2",
        "scores.num_draws=1",
        "scores.val_fraction=0.25",
    )
    run_training_task(make_config("train", tmp_path, "task=scores", *common, *scores))
    classifier = (
        f"classifier.arch_kwargs.extractor_weights={save_extractor(tmp_path)}",
        flag_override("classifier.arch_kwargs.extractor_flags", EXTRACTOR_FLAGS),
        flag_override("classifier.arch_kwargs.head_flags", HEAD_FLAGS),
        "classifier.max_steps=2",
        "classifier.batch_size=2",
    )
    run_training_task(make_config("train", tmp_path, "task=classifier", *common, *classifier))
    cfg = preset_config(
        tmp_path, "mg_lsun256", *HEAD_CHANNELS, f"checkpoint={ckpt}", "guidance.target_class=1"
    )
    with np.load(sample_task(cfg)) as archive:
        check_images(archive["arr_0"], 256)


@pytest.mark.slow
def test_upsample_imagenet256_reads_the_64_run(tmp_path: Path) -> None:
    """Stage 1 (sg_imagenet64) writes samples.npz; stage 2 upsamples it and keeps its labels."""
    low = run_preset(tmp_path, "sg_imagenet64", *HEAD_CHANNELS, *L2)
    npz = tmp_path / "sg_imagenet64" / "run" / "samples.npz"
    out = run_preset(tmp_path, "upsample_imagenet256", f"upsample.low_res_npz={npz}")
    check_images(out["images"], 256)
    assert np.array_equal(out["labels"], low["labels"])


def test_the_upsample_preset_reads_the_sg_imagenet64_run_by_default(tmp_path: Path) -> None:
    cfg = preset_config(tmp_path, "upsample_imagenet256")
    low_res_run = make_config("sample", tmp_path, "experiment=sg_imagenet64").run_name
    expected = tmp_path / "imagenet64" / "samples" / low_res_run / "samples.npz"
    assert Path(cfg.upsample.low_res_npz) == expected
    assert Path(cfg.stage_dir) == tmp_path / "imagenet256" / "samples" / f"{low_res_run}_upsampled"


def test_a_checkpoint_of_another_preset_names_the_flag(tmp_path: Path) -> None:
    """An (unconditional) CelebA checkpoint given to the class-conditional ImageNet preset."""
    celeba = save_random_checkpoint(
        preset_config(tmp_path, "bns_celeba64", *HEAD_CHANNELS, *BNS_STEPS), tmp_path / "celeba.pt"
    )
    cfg = preset_config(
        tmp_path, "bns_imagenet64", *HEAD_CHANNELS, *BNS_STEPS, f"checkpoint={celeba}"
    )
    with pytest.raises(UserError, match="class_cond"):
        sample_task(cfg)


def test_a_preset_without_its_checkpoint_names_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINORITY_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="64x64_diffusion.pt"):
        sample_task(preset_config(tmp_path, "sg_imagenet64", *HEAD_CHANNELS))

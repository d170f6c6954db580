"""Bad input through the real entry points: one sentence on stderr, exit 2, no traceback.

Every case stops before any training or sampling (at composition, at the value checks, or at
the first file read), so the processes are started together and awaited once. The 25 start-ups
(≈ 8 s of imports each) take more than a minute on two cores: marked slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import REPO, make_config

from minority.lit.build import build_denoiser
from minority.models.build import save_checkpoint
from minority.tasks.common import plain

pytestmark = pytest.mark.slow

# A diffusion run on an image folder of 8×8 images: the first batch holds every image.
FOLDER = (
    "dataset=image_folder",
    "dataset.image_size=8",
    "model.dim=192",
    "train.batch_size=5",
    "hydra.run.dir={tmp}/images_run",
)

CASES = {
    "num_samples_abc": ("sample.py", "num_samples=abc"),
    "num_samples_float": ("sample.py", "num_samples=2.5"),
    "scale_abc": ("sample.py", "guidance=minority", "guidance.scale=abc"),
    "target_class_abc": ("sample.py", "guidance=minority", "guidance.target_class=abc"),
    "seed_negative": ("sample.py", "seed=-1"),
    "checkpoint_null": ("sample.py", "checkpoint=null"),
    "checkpoint_folder": ("sample.py", "checkpoint={tmp}"),
    "checkpoint_tensor": ("sample.py", "checkpoint={tmp}/tensor.pt"),
    "checkpoint_random_bytes": ("sample.py", "checkpoint={tmp}/random.pt"),
    "eta_above_one": ("sample.py", "sampler=ddim", "sampler.eta=1.5"),
    "eta_nan": ("sample.py", "sampler=ddim", "sampler.eta=nan"),
    "eta_on_ddpm": ("sample.py", "sampler.eta=0.5"),
    "scale_inf": ("sample.py", "guidance=self", "guidance.scale=inf"),
    "gamma_inf": ("sample.py", "init=boost_skip", "init.gamma=inf"),
    "every_abc": ("sample.py", "schedule.every=abc"),
    "skip_abc": ("sample.py", "init.skip=abc"),
    "hidden_abc": ("train.py", "model.hidden=abc"),
    "shards_without_provenance": (
        "sample.py",
        "num_samples=4",
        "batch_size=4",
        "hydra.run.dir={tmp}/run",
    ),
    "unknown_sampler": ("sample.py", "sampler=euler"),
    "train_batch_size_0": ("train.py", "train.batch_size=0"),
    "trainer_gpu_without_one": ("train.py", "trainer=gpu", "hydra.run.dir={tmp}/gpu"),
    "unknown_trainer_option": ("train.py", "+trainer.no_such_option=1", "hydra.run.dir={tmp}/o"),
    "corrupt_last_ckpt": ("train.py", "hydra.run.dir={tmp}/train"),
    "too_few_samples_for_k": ("evaluate.py", "npz={tmp}/three_points.npz"),
    "points_for_images": ("evaluate.py", "npz={tmp}/images.npz"),
    "folder_without_images": ("train.py", *FOLDER, "dataset.root={tmp}/no_images"),
    "unreadable_image": ("train.py", *FOLDER, "dataset.root={tmp}/unreadable"),
    "mixed_size_images": (
        "train.py",
        *FOLDER,
        "dataset.root={tmp}/mixed",
        "dataset.image_size=null",
    ),
    "mlp_for_images": (
        "train.py",
        *(a for a in FOLDER if not a.startswith("model.dim")),
        "dataset.root={tmp}/mixed",
    ),
    "lmdb_not_lsuns": (
        "train.py",
        "dataset=lsun_bedroom",
        "dataset.format=lsun_lmdb",
        "dataset.root={tmp}/not_lsun_lmdb",
    ),
}

MESSAGES = {
    "num_samples_abc": "Value 'abc' of type 'str' could not be converted to Integer",
    "num_samples_float": "Value '2.5' of type 'float' could not be converted to Integer",
    "scale_abc": "Value 'abc' of type 'str' could not be converted to Float",
    "target_class_abc": "guidance.target_class must be an integer class",
    "seed_negative": "seed must be a non-negative integer (got -1)",
    "checkpoint_null": "field 'checkpoint' is not Optional",
    "checkpoint_folder": "is a folder; give the checkpoint file inside it",
    "checkpoint_tensor": "holds a Tensor, not a state dict",
    "checkpoint_random_bytes": "random.pt is corrupt or not a PyTorch file",
    "eta_above_one": "sampler.eta must lie in [0, 1] (got 1.5)",
    "eta_nan": "sampler.eta must lie in [0, 1] (got nan)",
    "eta_on_ddpm": "Could not override 'sampler.eta'",
    "scale_inf": "guidance scale (guidance.scale) must be non-negative and finite (got inf)",
    "gamma_inf": "init.gamma) must be positive and finite (got inf)",
    "every_abc": "'abc' of type 'str' could not be converted to Integer (full_key: schedule.every)",
    "skip_abc": "'abc' of type 'str' could not be converted to Integer (full_key: init.skip)",
    "hidden_abc": "'abc' of type 'str' could not be converted to Integer (full_key: model.hidden)",
    "shards_without_provenance": "holds results without a provenance record; choose another",
    "unknown_sampler": "Could not find 'sampler/euler'; available options in 'sampler': ddim",
    "train_batch_size_0": "train.batch_size must be positive (got 0)",
    "trainer_gpu_without_one": "needs a CUDA GPU and none is visible here; use trainer=cpu",
    "unknown_trainer_option": "trainer.no_such_option: not a Lightning Trainer option",
    "corrupt_last_ckpt": "last.ckpt cannot be read (",
    "too_few_samples_for_k": "kNN needs 1 ≤ k ≤ 2",
    "points_for_images": "Generated samples are 8×8 images but the dataset's are 2-d points",
    "folder_without_images": "No images found under",
    "unreadable_image": "Cannot read the image file",
    "mixed_size_images": "is 8×10 while",
    "mlp_for_images": "but this dataset's samples have shape (3, 8, 8) (192 values)",
    "lmdb_not_lsuns": "is not an encoded image; it must hold the LSUN release's LMDB",
}


def _files(tmp: Path) -> None:
    """The inputs the cases read: a denoiser, bad checkpoints, shards without a provenance
    record (the damaged shard itself: tests/test_shards.py) and a damaged last.ckpt."""
    cfg = make_config("sample", tmp)
    denoiser = build_denoiser(plain(cfg.model))
    meta = {"model": plain(cfg.model), "diffusion": plain(cfg.diffusion)}
    save_checkpoint(cfg.paths.diffusion_ckpt, denoiser, meta)
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp / "run" / "shards").mkdir(parents=True)
    (tmp / "run" / "shards" / "shard_000000000_000000004.npz").write_bytes(b"PK\x03\x04 cut")
    (tmp / "train" / "checkpoints").mkdir(parents=True)
    (tmp / "train" / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    np.savez(tmp / "three_points.npz", arr_0=np.zeros((3, 2), np.float32))
    np.savez(tmp / "images.npz", arr_0=np.ones((4, 8, 8, 1), np.uint8))
    _image_folders(tmp)


def _image_folders(tmp: Path) -> None:
    """An empty folder, one with an unreadable file, one with a taller image, a foreign LMDB."""
    import lmdb

    (tmp / "no_images" / "sub").mkdir(parents=True)
    (tmp / "no_images" / "readme.txt").write_text("no images here")
    for name in ("unreadable", "mixed"):
        (tmp / name).mkdir()
        for i in range(4):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / name / f"img_{i}.png")
    (tmp / "unreadable" / "img_9.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((10, 8, 3), np.uint8)).save(tmp / "mixed" / "img_9.png")
    with lmdb.open(str(tmp / "not_lsun_lmdb"), map_size=2**20) as env, env.begin(write=True) as txn:
        txn.put(b"key", b"not an image")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("cli")
    _files(tmp)
    running = {}
    for name, (script, *args) in CASES.items():
        # a run folder of its own per case: the cases run at once and a run folder is locked
        common = [f"paths.root={tmp}", f"hydra.run.dir={tmp}/runs/{name}"]
        argv = [sys.executable, script, *common, *(a.format(tmp=tmp) for a in args)]
        running[name] = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return {
        name: subprocess.CompletedProcess(p.args, p.wait(), *p.communicate())
        for name, p in running.items()
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_sentence_with_exit_2(results, name: str) -> None:
    done = results[name]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(errors) == 1
    assert MESSAGES[name] in errors[0] and errors[0].endswith(".")
    assert "weights_only" not in done.stderr

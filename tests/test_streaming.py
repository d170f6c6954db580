"""Streaming real data: folders, LSUN's LMDB, memory-mapped npz, per-index transforms, scoring
from disk equal to scoring from memory, resumable score shards, bad input."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import REPO, make_config
from untrained import untrained_work_folder

from minority.data.image_ops import item_generator, random_crop_arr, resize_short_side
from minority.data.images import build_image_dataset, load_image_dataset
from minority.errors import UserError
from minority.lit.build import build_denoiser
from minority.lit.data import EpochShuffle, RealDataModule
from minority.lit.scoring import MinorityScoreModule, indexed_dataset
from minority.models.build import save_checkpoint
from minority.tasks.scores import compute_scores

SIZE = 16


def write_folder(root: Path, count: int, size: int = SIZE, seed: int = 0) -> Path:
    """``count`` random PNGs ``img_00000.png`` … in two sub-folders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = root / f"part{i % 2}" / f"img_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return root


def folder_cfg(root: Path, **extra) -> dict:
    return {"name": "fake", "format": "folder", "root": str(root), "image_size": SIZE} | extra


def trainer() -> pl.Trainer:  # noqa: F821
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )


def mlp_model(size: int = SIZE) -> dict:
    return {
        "_target_": "minority.models.small.MLPNet",
        "arch": "mlp",
        "dim": 3 * size * size,
        "hidden": 64,
        "depth": 2,
        "learn_sigma": False,
    }


def predicted_scores(module, data) -> torch.Tensor:
    out = trainer().predict(module, datamodule=data)
    index = torch.cat([p["index"] for p in out])
    assert torch.equal(index, torch.arange(len(index)))
    return torch.cat([p["scores"] for p in out])


def test_streamed_scores_equal_the_in_memory_ones(tmp_path):
    root = write_folder(tmp_path / "images", 40)
    torch.manual_seed(0)
    module = MinorityScoreModule(build_denoiser(mlp_model()), "cosine", 1000, 600, 2, "l2")
    streamed = build_image_dataset(folder_cfg(root))
    ranges = [(s, min(s + 7, 40)) for s in range(0, 40, 7)]
    from_disk = predicted_scores(
        module, RealDataModule(7, 2, predict=streamed, predict_ranges=ranges)
    )
    memory = indexed_dataset(load_image_dataset(folder_cfg(root)).x)
    from_memory = predicted_scores(module, RealDataModule(7, predict=memory, predict_ranges=ranges))
    assert torch.equal(from_disk, from_memory)


def test_epoch_shuffle_splits_ranks_and_tells_the_dataset_its_epoch(tmp_path):
    dataset = build_image_dataset(folder_cfg(write_folder(tmp_path, 10), random_flip=True))
    ranks = [EpochShuffle(dataset, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for order in ranks:
            order.set_epoch(epoch)
        shares = [list(order) for order in ranks]
        assert sorted(shares[0] + shares[1]) == list(range(10)) and dataset.epoch == epoch
    ranks[0].set_epoch(0)
    assert list(ranks[0]) != shares[0]  # a new permutation each epoch


def test_random_crop_is_the_authors_augmentation_drawn_per_index_and_epoch(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[..., 0] = np.arange(60)[None, :] * 4
    arr[..., 1] = np.arange(40)[:, None] * 6
    Image.fromarray(arr).save(tmp_path / "a.png")
    cfg = folder_cfg(tmp_path, image_size=32, augment="random_crop", seed=5)
    dataset = build_image_dataset(cfg)
    for epoch in range(4):
        dataset.epoch = epoch
        rng = item_generator(5, 0, epoch)
        side = int(rng.integers(32, 41))  # [S, ⌈S / 0.8⌉]
        resized = resize_short_side(Image.fromarray(arr), side)
        top = int(rng.integers(resized.shape[0] - 31))
        left = int(rng.integers(resized.shape[1] - 31))
        expected = resized[top : top + 32, left : left + 32]
        got = np.rint((dataset[0][0].permute(1, 2, 0).numpy() + 1) * 127.5)
        np.testing.assert_array_equal(got, expected)
    assert random_crop_arr(Image.fromarray(arr), 32, item_generator(5, 0, 0)).shape == (32, 32, 3)
    assert build_image_dataset(cfg, augment=False)[0][0].shape == (3, 32, 32)


def make_lmdb(path: Path, images: dict[str, np.ndarray]) -> Path:
    import lmdb

    with lmdb.open(str(path), map_size=2**26) as env, env.begin(write=True) as txn:
        for key, arr in images.items():
            buffer = io.BytesIO()
            Image.fromarray(arr).save(buffer, format="webp", lossless=True)
            txn.put(key.encode(), buffer.getvalue())
    return path


def test_lsun_lmdb_reads_the_same_images_as_the_exported_folder(tmp_path):
    rng = np.random.default_rng(1)
    images = {f"{k:040x}": rng.integers(0, 256, (24, 30, 3), dtype=np.uint8) for k in (7, 3, 9)}
    lmdb_root = make_lmdb(tmp_path / "bedroom_train_lmdb", images)
    (tmp_path / "export").mkdir()
    for key, arr in images.items():
        Image.fromarray(arr).save(tmp_path / "export" / f"{key}.webp", lossless=True)
    common = {"name": "lsun", "image_size": 16}
    from_lmdb = load_image_dataset(common | {"format": "lsun_lmdb", "root": str(lmdb_root)})
    from_folder = load_image_dataset(common | {"format": "lsun", "root": str(tmp_path / "export")})
    assert from_lmdb.x.shape == (3, 3, 16, 16) and torch.equal(from_lmdb.x, from_folder.x)


def test_an_lmdb_that_is_not_lsuns_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="holds no data.mdb"):
        build_image_dataset({"format": "lsun_lmdb", "root": str(tmp_path)})
    import lmdb

    with lmdb.open(str(tmp_path / "db"), map_size=2**20) as env, env.begin(write=True) as txn:
        txn.put(b"key", b"not an image")
    with pytest.raises(UserError, match="not an encoded image"):
        build_image_dataset({"format": "lsun_lmdb", "root": str(tmp_path / "db")})


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=images, arr_1=np.arange(5))
    dataset = build_image_dataset({"format": "npz", "path": str(tmp_path / "ref.npz")})
    assert isinstance(dataset.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(dataset.images), images)
    np.savez_compressed(tmp_path / "small.npz", arr_0=images)
    compressed = build_image_dataset({"format": "npz", "path": str(tmp_path / "small.npz")})
    assert torch.equal(compressed[3][0], dataset[3][0])


def test_unreadable_and_mixed_size_images_are_one_sentence_even_from_workers(tmp_path):
    root = write_folder(tmp_path / "mixed", 3)
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "part0" / "img_99999.png")
    dataset = build_image_dataset(folder_cfg(root, image_size=None))
    with pytest.raises(UserError, match=r"^\S+img_99999.png is 16×20 while .* is 16×16; set"):
        list(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1))
    (root / "part0" / "img_99999.png").write_bytes(b"broken")
    dataset = build_image_dataset(folder_cfg(root))
    with pytest.raises(UserError, match=r"^Cannot read the image file \S+img_99999.png"):
        list(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1))


def scores_command(root: Path, folder: Path) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "task=scores",
        f"paths.root={root}",
        f"hydra.run.dir={folder}",
        f"paths.scores={folder / 'scores.pt'}",
        "dataset.num_samples=2000",
        "scores.batch_size=10",
        "trainer.enable_progress_bar=false",
    ]


@pytest.mark.slow
def test_killed_scoring_resumes_to_the_uninterrupted_scores(tmp_path):
    root = untrained_work_folder(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(scores_command(root, reference), cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(
        scores_command(root, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while len(list((killed / "shards").glob("shard_*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 3 <= len(list((killed / "shards").glob("shard_*.npz"))) < 200
    assert not (killed / "scores.pt").exists()
    subprocess.run(scores_command(root, killed), cwd=REPO, check=True, capture_output=True)
    a = torch.load(reference / "scores.pt", weights_only=True)
    b = torch.load(killed / "scores.pt", weights_only=True)
    assert len(a["scores"]) == 2000 and torch.equal(a["scores"], b["scores"])
    assert torch.equal(a["labels"], b["labels"])


def test_score_task_streams_a_folder_into_an_aligned_scores_file(tmp_path):
    images = write_folder(tmp_path / "images", 30)
    cfg = make_config(
        "train",
        tmp_path,
        "task=scores",
        "dataset=image_folder",
        f"dataset.root={images}",
        f"dataset.image_size={SIZE}",
        "dataset.num_workers=1",
        "scores.batch_size=8",
        "scores.num_classes=3",
        "scores.val_fraction=0.2",
        run_dir=tmp_path / "scores_run",
    )
    torch.manual_seed(0)
    denoiser = build_denoiser(mlp_model())
    meta = {"model": mlp_model(), "diffusion": {}, "dataset": "fake", "sample_shape": [3, 16, 16]}
    save_checkpoint(cfg.paths.diffusion_ckpt, denoiser, meta)
    cfg.model = mlp_model()
    out = compute_scores(cfg)
    merged = np.load(out.with_suffix(".npz"))["arr_0"]
    module = MinorityScoreModule(denoiser, "cosine", 1000, 600, 5, "mse")
    memory = indexed_dataset(load_image_dataset(folder_cfg(images)).x)
    ranges = [(s, min(s + 8, 30)) for s in range(0, 30, 8)]
    expected = predicted_scores(module, RealDataModule(8, predict=memory, predict_ranges=ranges))
    np.testing.assert_allclose(merged, expected.numpy(), rtol=1e-6)
    assert torch.equal(torch.load(out, weights_only=True)["scores"], torch.from_numpy(merged))


def test_diffusion_and_classifier_training_stream_a_folder(tmp_path):
    from minority.scores.labels import minority_labels, stratified_split
    from minority.tasks.train_classifier import train_classifier
    from minority.tasks.train_diffusion import train_diffusion

    images = write_folder(tmp_path / "images", 40)
    model = [f"model.{k}={v}" for k, v in mlp_model().items()]
    common = ("dataset=image_folder", f"dataset.root={images}", f"dataset.image_size={SIZE}")
    cfg = make_config(
        "train",
        tmp_path,
        *common,
        *model,
        "dataset.num_workers=1",
        "train.batch_size=8",
        "trainer.max_steps=3",
        run_dir=tmp_path / "diffusion",
    )
    checkpoint = torch.load(train_diffusion(cfg), weights_only=True)
    assert checkpoint["sample_shape"] == [3, SIZE, SIZE]
    scores = torch.rand(40)
    labels, thresholds = minority_labels(scores, 2)
    train_idx, val_idx = stratified_split(labels, 0.25, 0)
    content = {"labels": labels, "thresholds": thresholds, "train_idx": train_idx}
    torch.save(content | {"val_idx": val_idx}, tmp_path / "scores.pt")
    cfg = make_config(
        "train",
        tmp_path,
        *common,
        "task=classifier",  # its length is classifier.max_steps
        "classifier=mlp",
        "classifier.arch_kwargs={hidden: 16, depth: 1}",
        "classifier.augment=random_crop",
        "classifier.random_flip=true",
        "classifier.max_steps=3",
        "classifier.batch_size=8",
        f"paths.scores={tmp_path / 'scores.pt'}",
        run_dir=tmp_path / "classifier",
    )
    saved = torch.load(train_classifier(cfg), weights_only=True)
    assert saved["hyper_parameters"]["sample_shape"] == [3, SIZE, SIZE]
    assert saved["hyper_parameters"]["random_flip"] is False  # flipped per item by the dataset
    assert saved["hyper_parameters"]["max_steps"] == 3

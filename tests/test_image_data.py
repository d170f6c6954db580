"""Real image datasets on tiny fakes written in each on-disk format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pipeline_helpers import make_config

from minority.data import images as image_data
from minority.data.image_ops import item_generator
from minority.data.images import (
    ImageFolderDataset,
    build_image_dataset,
    load_image_dataset,
)
from minority.errors import UserError
from minority.lit.build import build_dataset

STEP = 1 / 127.5


def write_image(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def uniform(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def coordinate_image(width: int, height: int, blue: int = 7) -> np.ndarray:
    """Red = column index, green = row index: every pixel says where it came from."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = np.arange(width)[None, :]
    arr[..., 1] = np.arange(height)[:, None]
    arr[..., 2] = blue
    return arr


def as_uint(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [−1, 1] → exact uint8 (H, W, 3) values it was made from."""
    return np.rint((x.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.int64)


def folder_cfg(root: Path, **extra) -> dict:
    return {"name": "fake", "format": "folder", "root": str(root), "image_size": 32} | extra


# ---------------------------------------------------------------- ADM centre crop geometry


def test_box_halving_then_centre_crop_keeps_the_central_columns(tmp_path):
    # 400×200 → BOX 200×100 → BOX 100×50 (side 100 ≥ 2·50) → no resize → columns 25…74 kept.
    # Red is constant on blocks of 4 original columns (20 on even blocks, 200 on odd ones), so
    # BOX averages are exact; any bicubic step would blur the alternation.
    block_red = np.where(np.arange(100) % 2 == 1, 200, 20)
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[..., 0] = np.repeat(block_red, 4)[None, :]
    arr[..., 1] = 90
    write_image(tmp_path / "wide.png", arr)
    data = load_image_dataset(folder_cfg(tmp_path, image_size=50))
    out = as_uint(data.x[0])
    assert out.shape == (50, 50, 3)
    np.testing.assert_array_equal(out[:, :, 0], np.broadcast_to(block_red[25:75], (50, 50)))
    assert (out[..., 1] == 90).all()


def test_tall_image_is_cut_to_its_central_rows(tmp_path):
    # 64×97 at size 64: no resampling at all; top offset (97 − 64) // 2 = 16.
    write_image(tmp_path / "tall.png", coordinate_image(64, 97))
    out = as_uint(load_image_dataset(folder_cfg(tmp_path, image_size=64)).x[0])
    np.testing.assert_array_equal(out[:, 0, 1], 16 + np.arange(64))
    np.testing.assert_array_equal(out[0, :, 0], np.arange(64))


def test_bicubic_resize_then_centre_crop_keeps_the_central_square(tmp_path):
    # 180×90 with a green central 90×90 square in red surroundings, size 64:
    # bicubic to 128×64, then columns 32…95: exactly the green square. Only the two outer
    # columns pick up a little red from the kernel, the same amount on both sides.
    arr = uniform(180, 90, (255, 0, 0))
    arr[:, 45:135] = (0, 255, 0)
    write_image(tmp_path / "centre.png", arr)
    out = as_uint(load_image_dataset(folder_cfg(tmp_path, image_size=64)).x[0])
    np.testing.assert_allclose(out[:, 1:63], np.broadcast_to((0, 255, 0), (64, 62, 3)), atol=1)
    assert out[:, 0, 0].min() > 0 and out[:, 0, 0].max() < 32
    np.testing.assert_array_equal(out[:, 0], out[:, 63])


# ---------------------------------------------------------------- image folders


def make_class_folder(root: Path) -> None:
    write_image(root / "zeta" / "ant_3.PNG", uniform(37, 53, (200, 10, 10)))
    write_image(root / "alpha" / "dog_02.jpg", uniform(80, 45, (10, 200, 10)))
    Image.fromarray(uniform(64, 64, (10, 10, 200))).save(root / "cat_01.gif")
    (root / "notes.txt").write_text("not an image")


def test_folder_shapes_range_sorted_order_and_filename_classes(tmp_path):
    make_class_folder(tmp_path)
    data = load_image_dataset(folder_cfg(tmp_path, class_cond=True))
    assert data.x.shape == (3, 3, 32, 32) and data.x.dtype == torch.float32
    assert data.x.min() >= -1 and data.x.max() <= 1
    assert data.name == "fake" and data.is_image
    # visiting order: alpha/dog, cat (gif), zeta/ant; classes sorted: ant 0, cat 1, dog 2
    assert data.labels.tolist() == [2, 1, 0]
    dominant = data.x.mean(dim=(2, 3)).argmax(dim=1)
    assert dominant.tolist() == [1, 2, 0]
    assert load_image_dataset(folder_cfg(tmp_path)).labels is None


def test_folder_class_order_can_be_given(tmp_path):
    make_class_folder(tmp_path)
    listed = tmp_path.parent / f"{tmp_path.name}_classes.txt"
    listed.write_text("bee\nant\ncat\ndog\n")
    cfg = folder_cfg(tmp_path, class_cond=True, classes=str(listed))
    assert load_image_dataset(cfg).labels.tolist() == [3, 2, 1]
    with pytest.raises(UserError, match="ant"):
        load_image_dataset(folder_cfg(tmp_path, class_cond=True, classes=["cat", "dog"]))


def test_imagenet_folder_labels_come_from_sorted_synset_folders(tmp_path):
    write_image(tmp_path / "n02" / "n02_1.png", uniform(70, 66, (1, 2, 3)))
    write_image(tmp_path / "n01" / "b.png", uniform(64, 64, (4, 5, 6)))
    write_image(tmp_path / "n01" / "a.jpeg", uniform(65, 90, (7, 8, 9)))
    cfg = {"name": "imagenet64", "format": "imagenet_folder", "root": str(tmp_path)}
    data = load_image_dataset(cfg)
    assert data.x.shape == (3, 3, 64, 64)
    assert data.labels.tolist() == [0, 0, 1]
    wider = load_image_dataset(cfg | {"classes": ["n00", "n01", "n02"]})
    assert wider.labels.tolist() == [1, 1, 2]


def test_max_images_is_a_seeded_subset_in_sorted_order(tmp_path):
    for i in range(10):
        write_image(tmp_path / f"img_{i:02d}.png", uniform(8, 8, (20 * i, 0, 0)))
    full = load_image_dataset(folder_cfg(tmp_path, image_size=8)).x
    np.testing.assert_array_equal(as_uint(full[3])[0, 0], (60, 0, 0))

    def reds(seed: int) -> list[int]:
        cfg = folder_cfg(tmp_path, image_size=8, max_images=4, seed=seed)
        return [int(as_uint(x)[0, 0, 0]) for x in load_image_dataset(cfg).x]

    chosen = reds(0)
    assert len(chosen) == 4 and chosen == sorted(chosen)
    assert set(chosen) <= {20 * i for i in range(10)}
    assert reds(0) == chosen
    assert any(reds(seed) != chosen for seed in range(1, 6))
    assert len(load_image_dataset(folder_cfg(tmp_path, image_size=8, max_images=50))) == 10


def test_random_flip_is_drawn_per_seed_index_and_epoch(tmp_path):
    write_image(tmp_path / "xy.png", coordinate_image(16, 16))
    plain = ImageFolderDataset(tmp_path, 16)[0][0]
    dataset = build_image_dataset(folder_cfg(tmp_path, image_size=16, random_flip=True))
    flipped = []
    for epoch in range(30):
        dataset.epoch = epoch
        x = dataset[0][0]
        assert torch.equal(x, dataset[0][0])  # the same draw for the same (seed, index, epoch)
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))
        flipped.append(bool(torch.equal(x, plain.flip(-1))))
    expected = [item_generator(0, 0, epoch).random() < 0.5 for epoch in range(30)]
    assert flipped == expected and any(flipped) and not all(flipped)
    assert load_image_dataset(folder_cfg(tmp_path, image_size=16, random_flip=True)).x.equal(
        plain[None]
    )


def test_streaming_dataset_batches_through_a_dataloader(tmp_path):
    make_class_folder(tmp_path)
    dataset = build_image_dataset(folder_cfg(tmp_path, class_cond=True))
    x, extras = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert x.shape == (2, 3, 32, 32) and extras["y"].tolist() == [2, 1]


# ---------------------------------------------------------------- CelebA and LSUN


@pytest.mark.parametrize(("crop", "left", "top"), [(140, 19, 39), (108, 35, 55)])
def test_celeba_cuts_the_central_square_of_the_aligned_face(tmp_path, crop, left, top):
    # size = crop: no resampling after the square cut, so every pixel says where it came from.
    write_image(tmp_path / "000001.png", coordinate_image(178, 218))
    cfg = {"name": "celeba64", "format": "celeba", "root": str(tmp_path), "crop": crop}
    out = as_uint(load_image_dataset(cfg | {"image_size": crop}).x[0])
    np.testing.assert_array_equal(out[0, :, 0], left + np.arange(crop))
    np.testing.assert_array_equal(out[:, 0, 1], top + np.arange(crop))
    assert load_image_dataset(cfg).x.shape == (1, 3, 64, 64)


def test_celeba_images_smaller_than_the_crop_are_refused(tmp_path):
    write_image(tmp_path / "small.png", uniform(100, 120, (0, 0, 0)))
    with pytest.raises(UserError, match="140"):
        load_image_dataset({"name": "celeba64", "format": "celeba", "root": str(tmp_path)})


# ---------------------------------------------------------------- arrays: CIFAR-10, npz


def make_cifar(root: Path, per_batch: int = 2, test: int = 3) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(),
        }
        written[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return written


def test_cifar10_train_and_test_splits_from_the_torchvision_layout(tmp_path):
    written = make_cifar(tmp_path)
    cfg = {"name": "cifar10", "format": "cifar10", "root": str(tmp_path), "class_cond": True}
    train = load_image_dataset(cfg)
    train_data = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    expected = torch.from_numpy(train_data.reshape(-1, 3, 32, 32)).float() / 127.5 - 1
    torch.testing.assert_close(train.x, expected, atol=1e-6, rtol=0)
    labels = sum((written[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == labels
    test = load_image_dataset(
        cfg | {"split": "test", "root": str(tmp_path / "cifar-10-batches-py")}
    )
    assert test.x.shape == (3, 3, 32, 32)
    assert test.labels.tolist() == written["test_batch"]["labels"]


def test_cifar10_missing_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_image_dataset({"name": "cifar10", "format": "cifar10", "root": str(tmp_path)})


def test_npz_images_and_labels_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", images, np.arange(5) * 7)
    cfg = {"name": "imagenet64", "format": "npz", "path": str(tmp_path / "ref.npz")}
    data = load_image_dataset(cfg | {"class_cond": True})
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(data.x, expected, atol=1e-6, rtol=0)
    assert data.labels.tolist() == [0, 7, 14, 21, 28]
    halved = load_image_dataset(cfg | {"image_size": 8}).x
    box = images.reshape(5, 8, 2, 8, 2, 3).astype(np.float64).mean(axis=(2, 4))
    expected_box = torch.from_numpy(box).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(halved, expected_box, atol=STEP + 1e-6, rtol=0)


def test_npz_without_labels_cannot_be_class_conditional(tmp_path):
    np.savez(tmp_path / "samples.npz", np.zeros((2, 8, 8, 3), np.uint8))
    cfg = {"name": "s", "format": "npz", "path": str(tmp_path / "samples.npz")}
    assert load_image_dataset(cfg).labels is None
    with pytest.raises(UserError, match="arr_1"):
        load_image_dataset(cfg | {"class_cond": True})
    with pytest.raises(UserError, match="missing.npz"):
        load_image_dataset(cfg | {"path": str(tmp_path / "missing.npz")})


# ---------------------------------------------------------------- errors and configs


def test_missing_unset_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_dataset(folder_cfg(tmp_path / "nowhere"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(UserError, match="No images found"):
        load_image_dataset(folder_cfg(tmp_path / "empty"))
    with pytest.raises(UserError, match="dataset.root is not set"):
        load_image_dataset({"name": "fake", "format": "folder", "root": "???", "image_size": 8})
    with pytest.raises(UserError, match="format"):
        load_image_dataset({"name": "fake", "format": "tfrecord"})


def test_too_large_for_memory_points_to_streaming(tmp_path, monkeypatch):
    make_class_folder(tmp_path)
    monkeypatch.setattr(image_data, "MAX_IN_MEMORY_BYTES", 1000)
    with pytest.raises(UserError, match="max_images"):
        load_image_dataset(folder_cfg(tmp_path))


def fake_root(name: str, tmp_path: Path) -> Path:
    """A tiny stand-in for each config's dataset."""
    if name == "cifar10":
        make_cifar(tmp_path)
    elif name == "imagenet64":
        write_image(tmp_path / "n01440764" / "n01440764_1.JPEG", uniform(70, 80, (3, 3, 3)))
    else:
        write_image(tmp_path / "a" / "000001.jpg", uniform(178, 218, (50, 60, 70)))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("image_folder", 64),
        ("cifar10", 32),
        ("celeba64", 64),
        ("lsun_bedroom", 256),
        ("imagenet64", 64),
    ],
)
def test_each_config_needs_a_root_and_loads_through_build_dataset(tmp_path, name, size):
    cfg = make_config("sample", tmp_path, f"dataset={name}").dataset
    assert cfg.name == name and OmegaConf.is_missing(cfg, "root")
    with pytest.raises(UserError, match="dataset.root is not set"):
        build_dataset(OmegaConf.to_container(cfg))
    cfg.root = str(fake_root(name, tmp_path))
    data = build_dataset(OmegaConf.to_container(cfg))
    assert data.x.shape[1:] == (3, size, size)
    assert data.x.min() >= -1 and data.x.max() <= 1
    assert (data.labels is not None) == bool(cfg.class_cond)

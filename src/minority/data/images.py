"""Real image datasets: folders (ADM centre crop), CIFAR-10, CelebA 64, LSUN bedrooms, ImageNet 64.

Every dataset yields items ``(x, extras)`` like guided-diffusion's loader: ``x`` float32
(3, S, S) in [−1, 1] (``uint8 / 127.5 − 1``) and ``extras`` a dict holding ``"index"`` (the
item's position in the dataset, int64) and ``"y"`` (int64 class label) when labels are
requested; a ``DataLoader`` streams them in batches, decoding only the items it reads.
:func:`load_image_dataset` stacks a (possibly capped) dataset into an in-memory ``RealData``.

Formats (``dataset.format``): ``folder``, ``lsun``, ``celeba``, ``imagenet_folder`` (images on
disk, searched recursively in sorted order), ``lsun_lmdb`` (the LSUN release's LMDB),
``cifar10`` (torchvision's ``cifar-10-batches-py`` folder) and ``npz`` (``arr_0`` uint8
N×H×W×3, optional ``arr_1`` labels: guided-diffusion's sample and reference-batch format,
memory-mapped when stored uncompressed).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from minority.data.image_ops import (
    center_crop_arr,
    central_square,
    image_file_names,
    item_generator,
    open_rgb,
    random_crop_arr,
    subset_indices,
    to_model_range,
)
from minority.data.real import RealData
from minority.errors import UserError

Item = tuple[Tensor, dict[str, Tensor]]

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_SIZE = 32
CELEBA_CROP = 140
LOAD_BATCH_SIZE = 256
MAX_IN_MEMORY_BYTES = 16 * 2**30
RANDOM_CROP = "random_crop"
LMDB_FILE = "data.mdb"
HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class ImageItems(Dataset):
    """Item i of an image dataset: ``(x, {"index": i, "y": label})`` made from its stored image.

    Subclasses give :meth:`image` (the stored image of item i) and set ``image_size``,
    ``labels``, ``random_flip``, ``augment`` and ``seed``. Every random transform of item i is
    drawn from :func:`item_generator` (seed, i, ``epoch``), so an item is the same whatever the
    worker, batch or process that loads it; set ``epoch`` to draw new transforms.
    """

    image_size: int | None
    labels: Sequence[int] | np.ndarray | None = None
    random_flip: bool = False
    augment: str | None = None
    seed: int = 0
    epoch: int = 0
    source_files: Sequence[Path] = ()  # the files items are read from (keys feature caches)

    def image(self, i: int) -> Image.Image | np.ndarray:
        """Item i as stored: a PIL RGB image or a uint8 (H, W, 3) array."""
        raise NotImplementedError

    def to_square(self, image: Image.Image | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The square the model sees: ADM's centre crop (or the ``augment`` random crop)."""
        if self.augment == RANDOM_CROP:
            return random_crop_arr(as_pil(image), self.image_size, rng)
        size = self.image_size
        if size is None or (isinstance(image, np.ndarray) and image.shape[:2] == (size, size)):
            return np.asarray(image)
        return center_crop_arr(as_pil(image), size)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Item:
        i = int(i)
        rng = item_generator(self.seed, i, self.epoch)
        arr = self.to_square(self.image(i), rng)
        if self.random_flip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        extras = {"index": torch.tensor(i, dtype=torch.int64)}
        if self.labels is not None:
            extras["y"] = torch.tensor(int(self.labels[i]), dtype=torch.int64)
        return to_model_range(arr), extras


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def check_augment(augment: str | None) -> str | None:
    """``augment`` itself when it names a known augmentation (None: no augmentation)."""
    if augment not in (None, RANDOM_CROP):
        raise UserError(f"Unknown dataset.augment '{augment}'; use {RANDOM_CROP} or null.")
    return augment


class ImageFolderDataset(ImageItems):
    """Every image under ``root`` (recursive, sorted), ADM centre-cropped to ``image_size``.

    Args:
        root: folder of images; sub-folders are searched too.
        image_size: side S of the square output; None keeps the stored size, which every
            image must then share (e.g. a folder of samples).
        class_cond: attach labels; the class of ``dog_123.png`` is ``dog`` (the file name before
            the first ``_``, guided-diffusion's rule), indexed in sorted order of the names found.
        random_flip: mirror each item left-right with probability 1/2 (training augmentation).
        max_images: keep a seeded random subset of at most this many images (in sorted order).
        seed: selects that subset and seeds the per-item transforms.
        classes: class names in index order, overriding the sorted names found (use the full
            list when a folder holds only some classes, so indices match a trained model's).
        augment: ``random_crop`` for the authors' classifier augmentation
            (:func:`~minority.data.image_ops.random_crop_arr`) instead of the centre crop.
    """

    contents = "image files (jpg, jpeg, png, gif or webp, searched recursively)"

    def __init__(
        self,
        root: str | Path,
        image_size: int | None,
        class_cond: bool = False,
        random_flip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        augment: str | None = None,
    ) -> None:
        folder = existing_folder(Path(root).expanduser(), self.contents)
        names = image_file_names(folder)
        if not len(names):
            raise UserError(f"No images found under {folder}; it must hold {self.contents}.")
        self.root = folder
        labels = self.class_indices(names, classes) if class_cond else None
        keep = subset_indices(len(names), max_images, seed)
        self.names = names[keep]
        self.labels = None if labels is None else labels[keep]
        self.random_flip, self.seed, self.augment = random_flip, seed, check_augment(augment)
        self.image_size = None if image_size is None else int(image_size)
        self.stored_size = self.load(self.path(0)).size if image_size is None else None
        if self.augment and self.image_size is None:
            raise UserError("dataset.augment needs dataset.image_size, the side of the crop.")

    @staticmethod
    def class_name(path: Path) -> str:
        """The class a file belongs to: its name up to the first underscore."""
        return path.name.split("_")[0]

    def class_indices(self, files: np.ndarray, classes: Sequence[str] | None) -> np.ndarray:
        """Class index (int64) of every file, by position in ``classes`` (default: sorted names
        found)."""
        names = [self.class_name(Path(os.fsdecode(name))) for name in files]
        order = sorted(set(names)) if classes is None else list(classes)
        index = {name: i for i, name in enumerate(order)}
        unknown = sorted(set(names) - index.keys())
        if unknown:
            raise UserError(f"Image classes {unknown[:5]} are missing from dataset.classes.")
        return np.array([index[name] for name in names], dtype=np.int64)

    def path(self, i: int) -> Path:
        """The file of item i."""
        return self.root / os.fsdecode(self.names[i])

    @property
    def source_files(self) -> Iterator[Path]:
        return (self.root / os.fsdecode(name) for name in self.names)

    def load(self, path: Path) -> Image.Image:
        """The RGB image the crop starts from."""
        return open_rgb(path)

    def image(self, i: int) -> Image.Image | np.ndarray:
        image = self.load(self.path(i))
        if self.stored_size is not None and image.size != self.stored_size:
            raise UserError(
                f"{self.path(i)} is {image.size[0]}×{image.size[1]} while "
                f"{self.path(0)} is {self.stored_size[0]}×{self.stored_size[1]}; set "
                "dataset.image_size to crop every image to one size."
            )
        return image

    def __len__(self) -> int:
        return len(self.names)


class LSUNBedroomDataset(ImageFolderDataset):
    """LSUN bedrooms exported from LMDB to image files; ADM centre crop (256 for ADM's model)."""

    contents = "the LSUN bedroom images exported as jpg/png files (searched recursively)"


class CelebADataset(ImageFolderDataset):
    """Aligned CelebA (``img_align_celeba``, 178×218 JPEGs) as square faces.

    The central ``crop`` × ``crop`` square is cut first (offsets (178 − crop) // 2 and
    (218 − crop) // 2), then ADM's centre crop resizes it to ``image_size`` (140 → BOX 70 →
    BICUBIC 64). ``crop=0`` skips the square cut.

    Which crop: the authors' public code (soobin-um/minority-guidance, soobin-um/sg-minority,
    soobin-um/BnS) ships no CelebA preparation (their only loader is guided-diffusion's ADM
    centre crop of a folder) and the papers state only "64×64". The default 140 is the common
    CelebA-64 convention of diffusion work (yang-song/score_sde ``datasets.py``: central 140 crop
    of the aligned image, then resize to 64); ``crop=108`` gives the older DCGAN-style crop.
    """

    contents = "the aligned 178×218 CelebA JPEGs (the extracted img_align_celeba folder)"

    def __init__(
        self, root: str | Path, image_size: int = 64, crop: int = CELEBA_CROP, **kwargs: Any
    ) -> None:
        super().__init__(root, image_size, **kwargs)
        self.crop = int(crop)

    def load(self, path: Path) -> Image.Image:
        image = open_rgb(path)
        return central_square(image, self.crop) if self.crop else image


class ImageNetFolderDataset(ImageFolderDataset):
    """ImageNet as ``root/<synset>/<image>``: the class is the parent folder's name.

    Labels are on by default (the 64×64 checkpoint is class-conditional); synsets are indexed in
    sorted order, which is ADM's 0…999 order when all 1 000 folders are present.
    """

    contents = "one sub-folder per class (WordNet synset such as n01440764) holding its images"

    def __init__(
        self, root: str | Path, image_size: int = 64, class_cond: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(root, image_size, class_cond=class_cond, **kwargs)

    @staticmethod
    def class_name(path: Path) -> str:
        return path.parent.name


class ArrayImageDataset(ImageItems):
    """Images held as one uint8 array (or a memory map), ADM centre-cropped when not already
    ``image_size``.

    Args:
        images: uint8 (N, H, W, 3), e.g. a ``numpy.memmap`` (only the items read are paged in).
        labels: int (N,) or None.
        image_size: output side S; None keeps the stored size (which must then be square).
        random_flip, max_images, seed, augment: as for :class:`ImageFolderDataset`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        image_size: int | None = None,
        random_flip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        augment: str | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(
                f"Image arrays must be uint8 N×H×W×3, got {images.dtype} {tuple(images.shape)}."
            )
        if len(images) == 0:
            raise UserError("The image array holds no images.")
        if image_size is None and images.shape[1] != images.shape[2]:
            raise UserError("Stored images are not square; set dataset.image_size to crop them.")
        keep = subset_indices(len(images), max_images, seed)
        self.images = images
        self.keep = None if len(keep) == len(images) else keep
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)[keep]
        self.image_size = images.shape[1] if image_size is None else int(image_size)
        self.random_flip, self.seed, self.augment = random_flip, seed, check_augment(augment)

    def __len__(self) -> int:
        return len(self.images) if self.keep is None else len(self.keep)

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i if self.keep is None else self.keep[i]])


class CIFAR10Dataset(ArrayImageDataset):
    """CIFAR-10 from torchvision's extracted ``cifar-10-batches-py`` folder (never downloaded).

    Args:
        root: the folder holding ``cifar-10-batches-py`` (torchvision's ``root``), or that folder.
        split: ``"train"`` (data_batch_1…5, 50 000 images) or ``"test"`` (test_batch, 10 000).
        class_cond: attach the ten class labels.
        image_size: output side (32 keeps the images as they are).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_cond: bool = False,
        image_size: int = CIFAR10_SIZE,
        **kwargs: Any,
    ) -> None:
        images, labels = read_cifar10(Path(root).expanduser(), split)
        super().__init__(images, labels if class_cond else None, image_size, **kwargs)
        self.source_files = [
            cifar10_folder(Path(root).expanduser()) / n for n in CIFAR10_FILES[split]
        ]


class NpzImageDataset(ArrayImageDataset):
    """An ``.npz`` of ``arr_0`` uint8 N×H×W×3 images and optional ``arr_1`` labels.

    This is the format of guided-diffusion's samples and evaluation reference batches
    (e.g. ImageNet 64); ``class_cond`` requires ``arr_1``.
    """

    def __init__(
        self,
        path: str | Path,
        image_size: int | None = None,
        class_cond: bool = False,
        **kwargs: Any,
    ) -> None:
        images, labels = read_npz(Path(path).expanduser(), class_cond)
        super().__init__(images, labels, image_size, **kwargs)
        self.source_files = [Path(path).expanduser()]


def existing_folder(folder: Path, contents: str) -> Path:
    """``folder`` itself, or a :class:`UserError` saying what it should hold."""
    if not folder.is_dir():
        raise UserError(f"Dataset folder {folder} does not exist; it must hold {contents}.")
    return folder


def read_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 pickles → (uint8 (N, 32, 32, 3), int64 (N,)) in the files' order."""
    if split not in CIFAR10_FILES:
        raise UserError(f"dataset.split must be one of {sorted(CIFAR10_FILES)}, got '{split}'.")
    folder = cifar10_folder(root)
    names = CIFAR10_FILES[split]
    if not all((folder / name).is_file() for name in names):
        raise UserError(
            f"CIFAR-10 not found: extract cifar-10-python.tar.gz so that {root} holds the folder "
            f"{CIFAR10_FOLDER} with data_batch_1 … data_batch_5 and test_batch."
        )
    batches = [unpickle_batch(folder / name) for name in names]
    data = np.concatenate([np.asarray(batch["data"], dtype=np.uint8) for batch in batches])
    images = data.reshape(-1, 3, CIFAR10_SIZE, CIFAR10_SIZE).transpose(0, 2, 3, 1)
    labels = np.concatenate([np.asarray(batch["labels"], dtype=np.int64) for batch in batches])
    return np.ascontiguousarray(images), labels


def cifar10_folder(root: Path) -> Path:
    """The ``cifar-10-batches-py`` folder: ``root`` itself or its sub-folder of that name."""
    return root if root.name == CIFAR10_FOLDER else root / CIFAR10_FOLDER


def unpickle_batch(path: Path) -> dict[str, Any]:
    """One CIFAR batch file (a Python-2 pickle of ``data`` and ``labels``)."""
    try:
        with path.open("rb") as file:
            return pickle.load(file, encoding="latin1")
    except (pickle.UnpicklingError, EOFError) as error:
        raise UserError(f"The CIFAR-10 file {path} is damaged; extract it again.") from error


def read_npz(path: Path, class_cond: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``arr_0`` images and, when ``class_cond``, ``arr_1`` labels of an ``.npz`` archive.

    The images of an uncompressed archive (``numpy.savez``, as guided-diffusion writes its
    reference batches) are memory-mapped, so only the items read are paged in; a compressed
    archive is decoded into memory.
    """
    expected = "an .npz with arr_0 (uint8 N×H×W×3 images) and arr_1 (labels) for class_cond"
    if not path.is_file():
        raise UserError(f"The image archive {path} does not exist; it must be {expected}.")
    try:
        archive = np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(
            f"The image archive {path} cannot be read ({error}); use {expected}."
        ) from None
    with archive:
        if "arr_0" not in archive.files or (class_cond and "arr_1" not in archive.files):
            raise UserError(f"The archive {path} holds {archive.files}; it must be {expected}.")
        labels = archive["arr_1"] if class_cond else None
        images = npz_member_memmap(path, "arr_0.npy")
        return (archive["arr_0"] if images is None else images), labels


def npz_member_memmap(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed ``.npz`` member, or None when compressed."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            read_header = HEADER_READERS.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(handle)
            header = handle.tell()
    with path.open("rb") as raw:  # the member's data start after its local file header
        raw.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
    offset = info.header_offset + 30 + name_length + extra_length + header
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


class LSUNLmdbDataset(ImageItems):
    """LSUN as its release ships it: an LMDB folder (``data.mdb``, ``lock.mdb``) whose keys
    are image ids and whose values are the encoded images (webp for the bedrooms).

    Items follow the keys' sorted byte order (LMDB's own order, the order an export to files
    named by key lists them in). The key list is read once (about 40 bytes an image); the
    database is opened read-only, lazily in each DataLoader worker.

    Args:
        root: the LMDB folder, e.g. ``bedroom_train_lmdb``.
        image_size, random_flip, max_images, seed, augment: as for :class:`ImageFolderDataset`.
    """

    contents = "the LSUN release's LMDB (data.mdb and lock.mdb, e.g. bedroom_train_lmdb)"

    def __init__(
        self,
        root: str | Path,
        image_size: int = 256,
        random_flip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        augment: str | None = None,
    ) -> None:
        self.root = existing_folder(Path(root).expanduser(), self.contents)
        if not (self.root / LMDB_FILE).is_file():
            raise UserError(f"{self.root} holds no {LMDB_FILE}; it must hold {self.contents}.")
        self.env = None
        keys = self.read_keys()
        if not len(keys):
            raise UserError(f"The LMDB {self.root} holds no images; it must hold {self.contents}.")
        self.keys = keys[subset_indices(len(keys), max_images, seed)]
        self.source_files = [self.root / LMDB_FILE]
        self.image_size, self.labels = int(image_size), None
        self.random_flip, self.seed, self.augment = random_flip, seed, check_augment(augment)
        self.image(0)

    def open(self):
        import lmdb

        if self.env is None:
            try:
                self.env = lmdb.open(
                    str(self.root), readonly=True, lock=False, readahead=False, meminit=False
                )
            except lmdb.Error as error:
                raise UserError(
                    f"{self.root} is not an LMDB ({error}); it must hold {self.contents}."
                ) from None
        return self.env

    def read_keys(self) -> np.ndarray:
        """Every key, in the database's sorted order, as a fixed-width bytes array."""
        with self.open().begin(write=False) as txn:
            keys = list(txn.cursor().iternext(keys=True, values=False))
        return np.array(keys, dtype=bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "env": None}  # each worker opens its own handle

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, i: int) -> Image.Image:
        key = bytes(self.keys[i])
        with self.open().begin(write=False) as txn:
            value = txn.get(key)
        try:
            with Image.open(io.BytesIO(value)) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, TypeError) as error:
            raise UserError(
                f"The value of key {key[:40]!r} in {self.root} is not an encoded image; "
                f"it must hold {self.contents}."
            ) from error


def config_path(cfg: Mapping[str, Any], key: str, what: str) -> Path:
    """The path a config key names, or a :class:`UserError` when it was left unset."""
    value = cfg.get(key)
    if value is None or value == "???":
        raise UserError(f"dataset.{key} is not set; give {what} with dataset.{key}=<path>.")
    return Path(str(value)).expanduser()


def class_order(cfg: Mapping[str, Any]) -> list[str] | None:
    """``dataset.classes``: a list of class names or a text file with one name per line."""
    classes = cfg.get("classes")
    if classes is None:
        return None
    if not isinstance(classes, str):
        return [str(name) for name in classes]
    path = Path(classes).expanduser()
    if not path.is_file():
        raise UserError(f"The class list {path} does not exist; it must hold one name per line.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def common_options(
    cfg: Mapping[str, Any], random_flip: bool | None, augment: str | None
) -> dict[str, Any]:
    """Options every format shares: flip, augmentation, the ``max_images`` cap and the seed."""
    max_images = cfg.get("max_images")
    return {
        "random_flip": bool(cfg.get("random_flip", False)) if random_flip is None else random_flip,
        "max_images": None if max_images is None else int(max_images),
        "seed": int(cfg.get("seed", 0)),
        "augment": cfg.get("augment") if augment is None else augment or None,
    }


def folder_options(
    cfg: Mapping[str, Any], default_size: int | None = None, class_cond: bool = False
) -> dict[str, Any]:
    """Options of the folder formats: output size, labels and their order (with defaults)."""
    image_size = cfg.get("image_size", default_size)
    return {
        "image_size": None if image_size is None else int(image_size),
        "class_cond": bool(cfg.get("class_cond", class_cond)),
        "classes": class_order(cfg),
    }


def _folder(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", "the image folder")
    return ImageFolderDataset(root, **folder_options(cfg), **common)


def _lsun(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", "the folder of exported LSUN bedroom images")
    return LSUNBedroomDataset(root, **folder_options(cfg, 256), **common)


def _lsun_lmdb(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", "the LSUN LMDB folder (e.g. bedroom_train_lmdb)")
    return LSUNLmdbDataset(root, int(cfg.get("image_size") or 256), **common)


def _celeba(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", "the img_align_celeba folder")
    crop = int(cfg.get("crop", CELEBA_CROP))
    return CelebADataset(root, crop=crop, **folder_options(cfg, 64), **common)


def _imagenet_folder(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", "the folder of per-synset image folders")
    return ImageNetFolderDataset(root, **folder_options(cfg, 64, class_cond=True), **common)


def _cifar10(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    root = config_path(cfg, "root", f"the folder holding {CIFAR10_FOLDER}")
    return CIFAR10Dataset(
        root,
        split=str(cfg.get("split", "train")),
        class_cond=bool(cfg.get("class_cond", False)),
        image_size=int(cfg.get("image_size") or CIFAR10_SIZE),
        **common,
    )


def _npz(cfg: Mapping[str, Any], common: dict[str, Any]) -> Dataset:
    path = config_path(cfg, "path", "the .npz archive")
    image_size = cfg.get("image_size")
    return NpzImageDataset(
        path,
        image_size=None if image_size is None else int(image_size),
        class_cond=bool(cfg.get("class_cond", False)),
        **common,
    )


FORMATS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Dataset]] = {
    "folder": _folder,
    "lsun": _lsun,
    "lsun_lmdb": _lsun_lmdb,
    "celeba": _celeba,
    "imagenet_folder": _imagenet_folder,
    "cifar10": _cifar10,
    "npz": _npz,
}


def build_image_dataset(
    cfg: Mapping[str, Any], random_flip: bool | None = None, augment: str | bool | None = None
) -> ImageItems:
    """The streaming ``Dataset`` a ``dataset`` config node with a ``format`` key describes.

    Args:
        cfg: keys ``format`` plus ``root`` (folders) or ``path`` (npz), ``image_size``,
            ``class_cond``, ``random_flip``, ``max_images``, ``seed`` and per format ``crop``
            (celeba), ``split`` (cifar10), ``classes`` (folder formats).
        random_flip: overrides ``cfg.random_flip`` when given.
        augment: overrides ``cfg.augment`` when given (False: none).

    Returns:
        A map-style dataset of ``(x float32 (3, S, S) in [−1, 1], {"index": int64, "y": int64})``
        (``y`` only with ``class_cond``).
    """
    builder = FORMATS.get(cfg.get("format"))
    if builder is None:
        raise UserError(
            f"Unknown image dataset format '{cfg.get('format')}'; choose one of {sorted(FORMATS)}."
        )
    return builder(cfg, common_options(cfg, random_flip, augment))


def load_image_dataset(cfg: Mapping[str, Any]) -> RealData:
    """Decode a whole (or ``max_images``-capped) image dataset into memory, without flips.

    Returns:
        ``RealData`` with x float32 (N, 3, S, S) in [−1, 1] and int64 (N,) labels when
        ``class_cond``, else None. Sets too big for memory raise a :class:`UserError` naming
        ``dataset.max_images`` and :func:`build_image_dataset` (which streams).
    """
    dataset = build_image_dataset(cfg, random_flip=False, augment=False)
    check_fits_in_memory(dataset)
    loader = DataLoader(
        dataset, batch_size=LOAD_BATCH_SIZE, num_workers=int(cfg.get("num_workers", 0))
    )
    xs, ys = [], []
    for x, extras in loader:
        xs.append(x)
        ys.append(extras.get("y"))
    labels = torch.cat(ys) if ys[0] is not None else None
    return RealData(x=torch.cat(xs), labels=labels, name=str(cfg.get("name") or cfg["format"]))


def check_fits_in_memory(dataset: Dataset) -> None:
    """Refuse to stack more than :data:`MAX_IN_MEMORY_BYTES` of float32 images."""
    needed = len(dataset) * dataset[0][0].numel() * 4
    if needed > MAX_IN_MEMORY_BYTES:
        raise UserError(
            f"Holding {len(dataset)} images in memory needs {needed / 2**30:.0f} GiB; set "
            "dataset.max_images or stream them with minority.data.images.build_image_dataset."
        )

"""DataModules over real data: items decoded by DataLoader workers, one batch at a time.

Every batch is ``(x, extras)`` with ``extras["index"]`` the items' dataset indices (and ``"y"``
class labels where the dataset has them), or ``(x, targets)`` for a :class:`TargetSubset`.
Memory is bounded by the batch size, the workers and their prefetch, whatever the dataset size:
an image is decoded when its batch is loaded and dropped after it. Random transforms are drawn
per (seed, index, epoch) by the datasets themselves (:class:`~minority.data.images.ImageItems`),
so a run's items do not depend on the number of workers or processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from minority.lit.build import build_dataset
from minority.seeding import stream_generator


class IndexedTensors(Dataset):
    """An in-memory data set as items ``(x_i, {"index": i})`` (toy2d points, digits).

    Args:
        x: (N, …) samples.
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.x[i], {"index": torch.tensor(int(i), dtype=torch.int64)}


class TargetSubset(Dataset):
    """Items ``indices`` of a dataset paired with their targets: item j is
    ``(x of dataset[indices[j]], targets[indices[j]])``.

    Args:
        dataset: items ``(x, extras)``.
        indices: int64 (M,) dataset indices kept.
        targets: (N,) one target per dataset item (e.g. minority labels).
    """

    def __init__(self, dataset: Dataset, indices: Tensor, targets: Tensor) -> None:
        self.dataset, self.indices, self.targets = dataset, indices.tolist(), targets

    @property
    def epoch(self) -> int:
        return getattr(self.dataset, "epoch", 0)

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[Tensor, Tensor]:
        i = self.indices[j]
        return self.dataset[i][0], self.targets[i]


def item_dataset(dataset_cfg: Mapping[str, Any], cfg: Any = None) -> Dataset:
    """The dataset a ``dataset`` node names, as items ``(x, {"index": i, …})``.

    Image formats (a ``format`` key) stream from disk; embedded data (toy2d, digits) are
    generated in memory and indexed (``cfg``: the whole config, for its ``allowed_targets``).
    """
    if dataset_cfg.get("format"):
        from minority.data.images import build_image_dataset

        return build_image_dataset(dataset_cfg)
    return IndexedTensors(build_dataset(dataset_cfg, cfg).x)


class EpochShuffle(Sampler[int]):
    """This rank's share of a seeded permutation of the item indices, new in every epoch.

    The permutation of epoch e is drawn from stream (seed, e, ``shuffle``); rank r of W takes
    its positions r, r + W, … (⌊N / W⌋ items, so every rank takes as many steps).
    :meth:`set_epoch`, which Lightning calls before each epoch, also passes the epoch on to the
    dataset, which draws its per-item transforms from it.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = self.epoch

    def __len__(self) -> int:
        return len(self.dataset) // self.world_size

    def __iter__(self):
        generator = stream_generator(self.seed, self.epoch, "shuffle")
        order = torch.randperm(len(self.dataset), generator=generator)
        return iter(order[self.rank :: self.world_size][: len(self)].tolist())


class IndexRanges(Sampler[list[int]]):
    """Batches of the item indices [start, end) of each given range, in the given order."""

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self.ranges = [(int(start), int(end)) for start, end in ranges]

    def __len__(self) -> int:
        return len(self.ranges)

    def __iter__(self):
        return (list(range(start, end)) for start, end in self.ranges)


class RealDataModule(pl.LightningDataModule):
    """Loaders of real data for ``fit`` (train / val) and ``predict`` (scoring).

    Args:
        batch_size: items per batch (capped at the training set's size).
        num_workers: DataLoader worker processes decoding items (0: in the main process).
        train: items for training, shuffled by :class:`EpochShuffle` (last partial batch
            dropped); None for none.
        val: items for validation, in order.
        predict: items to predict, in the batches ``predict_ranges``.
        predict_ranges: [start, end) index ranges still to predict; rank r of W takes
            ranges r, r + W, … (the split sampling uses).
        seed: seed of the training order.

    Trainers using it run with ``use_distributed_sampler=False``: the split over ranks is done
    here, deterministically.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        train: Dataset | None = None,
        val: Dataset | None = None,
        predict: Dataset | None = None,
        predict_ranges: Sequence[tuple[int, int]] = (),
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), seed
        self.train, self.val, self.predict = train, val, predict
        self.predict_ranges = list(predict_ranges)

    def rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def loader(self, dataset: Dataset, **options: Any) -> DataLoader:
        return DataLoader(
            dataset, num_workers=self.num_workers, persistent_workers=False, **options
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        order = EpochShuffle(self.train, self.seed, rank, world)
        batch_size = min(self.batch_size, len(order))
        return self.loader(self.train, sampler=order, batch_size=batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val, batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        batches = IndexRanges(self.predict_ranges[rank::world])
        return self.loader(self.predict, batch_sampler=batches)

"""Sample shards: merged in index order, refused when they miss samples or are damaged."""

from pathlib import Path

import numpy as np
import pytest

from minority.errors import UserError
from minority.outputs import merge_shards, shard_path, write_shard


def _write(folder: Path, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Shards of samples whose value is their global index; returns all samples."""
    everything = np.arange(max(end for _, end in bounds), dtype=np.float32)[:, None]
    for start, end in bounds:
        write_shard(folder, start, end, everything[start:end], np.zeros(end - start, np.int64))
    return everything


def test_shards_merge_in_index_order(tmp_path: Path) -> None:
    everything = _write(tmp_path, [(4, 7), (0, 4), (7, 9)])
    with np.load(merge_shards(tmp_path, 9, tmp_path / "samples.npz")) as merged:
        np.testing.assert_array_equal(merged["arr_0"], everything)


def test_a_missing_range_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, [(0, 4), (5, 9)])
    with pytest.raises(UserError, match=r"do not cover samples 0\.\.8 exactly once"):
        merge_shards(tmp_path, 9, tmp_path / "samples.npz")


def test_a_damaged_shard_is_one_sentence_naming_it(tmp_path: Path) -> None:
    _write(tmp_path, [(0, 4), (4, 8)])
    damaged = shard_path(tmp_path, 4, 8)
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.raises(UserError, match=rf"Shard {damaged} is corrupt; delete it and rerun"):
        merge_shards(tmp_path, 8, tmp_path / "samples.npz")

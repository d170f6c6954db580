"""Result files (metrics.json, markdown table, plot) and input validation of sample archives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minority.errors import UserError
from minority.metrics.outputs import (
    plot_score_distributions,
    render_markdown_table,
    upsert_markdown_row,
    write_metrics_json,
)
from minority.metrics.validation import check_same_sample_size, load_samples_npz


def test_metrics_json_is_plain_json(tmp_path):
    path = write_metrics_json(
        tmp_path / "run" / "metrics.json",
        {
            "fid": np.float64(3.5),
            "lof": torch.tensor(1.25),
            "rarity": float("nan"),
            "n": 7,
            "shares": np.array([0.25, 0.75]),
        },
    )
    assert json.loads(path.read_text()) == {
        "fid": 3.5,
        "lof": 1.25,
        "rarity": None,
        "n": 7,
        "shares": [0.25, 0.75],
    }


def test_markdown_table_is_upserted_by_run_with_the_union_of_columns(tmp_path):
    path = tmp_path / "results.md"
    upsert_markdown_row(path, {"run": "ancestral", "fid": 12.3456789, "lof": 1.1})
    upsert_markdown_row(path, {"run": "a|b", "lof": 1.4, "fid": 15.0, "extra": 1})
    upsert_markdown_row(path, {"run": "ancestral", "fid": 2.0, "lof": 1.0})
    assert path.read_text().splitlines() == [
        "| run | fid | lof | extra |",
        "|---|---|---|---|",
        "| a\\|b | 15 | 1.4 | 1 |",
        "| ancestral | 2 | 1 |  |",
    ]


def test_render_markdown_table_fills_missing_cells():
    table = render_markdown_table([{"a": 1}, {"b": float("nan"), "a": "x|y"}])
    assert table == "| a | b |\n|---|---|\n| 1 |  |\n| x\\|y |  |\n"


def test_distribution_plot_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_score_distributions(
        tmp_path / "plots" / "scores.png",
        {
            "AvgkNN": (rng.normal(size=50), rng.normal(size=80)),
            "LOF": (torch.rand(50), np.append(rng.random(80), np.nan)),
        },
        title="run",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_loads_images_with_labels_and_toy2d_points(tmp_path):
    images = np.ones((4, 8, 8, 3), dtype=np.uint8)
    samples, labels = load_samples_npz(save(tmp_path / "a.npz", arr_0=images, arr_1=np.arange(4)))
    assert samples.shape == (4, 8, 8, 3) and labels.tolist() == [0, 1, 2, 3]
    points, labels = load_samples_npz(save(tmp_path / "b.npz", arr_0=np.ones((5, 2), np.float32)))
    assert points.shape == (5, 2) and labels is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"arr_0": np.zeros((0, 8, 8, 3), np.uint8)}, "holds no samples"),
        ({"other": np.zeros(3)}, "holds no arr_0"),
        ({"arr_0": np.zeros((2, 3, 8, 8), np.float32)}, "must be uint8"),
        ({"arr_0": np.zeros((2, 8, 8, 4), np.uint8)}, "C = 1 or 3"),
        ({"arr_0": np.full((2, 2), np.nan)}, "NaN"),
        ({"arr_0": np.ones((2, 8, 8, 3), np.uint8), "arr_1": np.arange(3)}, "2 integers"),
        (
            {"arr_0": np.arange(3, dtype=np.uint8).repeat(192).reshape(3, 8, 8, 3)},
            "1 entirely black",
        ),
    ],
)
def test_malformed_archives_are_user_errors(tmp_path, arrays, message):
    with pytest.raises(UserError, match=message) as error:
        load_samples_npz(save(tmp_path / "bad.npz", **arrays))
    assert "\n" not in str(error.value)


def test_missing_and_unreadable_archives(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_samples_npz(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_samples_npz(tmp_path / "text.npz")


def test_sample_sizes_must_match():
    generated = np.zeros((2, 64, 64, 3), np.uint8)
    check_same_sample_size(generated, torch.zeros(3, 3, 64, 64))
    with pytest.raises(UserError, match="64×64 images but the dataset.s are 32×32 images"):
        check_same_sample_size(generated, np.zeros((2, 32, 32, 3), np.uint8))

"""Pictures: enlarged grid cells, histogram ranges clipped to quantiles, Fig. 2's groups."""

from __future__ import annotations

import numpy as np

from minority.metrics.outputs import CLIP_QUANTILES, clipped_edges
from minority.outputs import grid_rows, mosaic, save_score_extremes


def test_tiny_images_are_enlarged_to_64_pixel_cells():
    images = np.zeros((10, 8, 8, 1), dtype=np.uint8)
    canvas = mosaic(images, ncols=4)
    assert canvas.shape == (3 * 66 + 2, 4 * 66 + 2, 1)  # 64-pixel cells, 2-pixel borders
    rows = grid_rows(images, np.arange(10))
    assert [label.splitlines()[0] for label, _ in rows] == ["#0–3", "#4–7", "#8–9"]
    assert rows[2][0].splitlines()[1] == "class 8 9"


def test_histogram_edges_span_the_quantiles_not_the_outliers():
    values = np.concatenate([np.linspace(0, 1, 1000), [1e6]])
    edges = clipped_edges([values[:500], values[500:]], bins=10)
    low, high = np.quantile(values, CLIP_QUANTILES)
    assert len(edges) == 11 and edges[0] == low and edges[-1] == high < 2


def test_score_extremes_figure_is_written_for_images_and_points(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
    points = rng.normal(size=(40, 2)).astype(np.float32)
    for name, real in (("images.png", images), ("points.png", points)):
        path = save_score_extremes(real, rng.random(40), tmp_path / name, "title", count=5)
        assert path.read_bytes()[:4] == b"\x89PNG"

"""Writing metric results: ``metrics.json``, markdown table rows and distribution plots."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plain(value: object) -> object:
    """A JSON-friendly copy: tensors / numpy values to Python numbers or lists, NaN to None."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.ndim else plain(value.item())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def write_metrics_json(path: str | os.PathLike, values: Mapping[str, object]) -> Path:
    """Write ``values`` as indented JSON (non-finite numbers as null), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(plain(values), indent=2) + "\n")
    tmp.replace(path)
    return path


def format_cell(value: object) -> str:
    """A table cell: floats with 4 significant digits, missing values as an empty cell."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_row(values: Mapping[str, object], columns: Sequence[str]) -> str:
    """One markdown table row of ``values`` in the order of ``columns``."""
    return "| " + " | ".join(format_cell(values.get(c)) for c in columns) + " |"


def markdown_header(columns: Sequence[str]) -> str:
    """Header and separator lines of a markdown table."""
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def render_markdown_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None
) -> str:
    """A whole markdown table; columns default to the keys of all rows, in first-seen order."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = [markdown_header(columns), *(markdown_row(row, columns) for row in rows)]
    return "\n".join(lines) + "\n"


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row as written (escaped ``\\|`` kept inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def read_markdown_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows (column -> cell text as written) of a markdown table file."""
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return [], []
    columns = _cells(lines[0])
    rows = [dict(zip(columns, _cells(line), strict=False)) for line in lines[2:]]
    return columns, rows


def upsert_markdown_row(
    path: str | os.PathLike, values: Mapping[str, object], key: str = "run"
) -> Path:
    """Put ``values`` into the markdown table at ``path`` as the row of ``values[key]``.

    A row with the same ``key`` is replaced (no duplicates), new columns are added (the table is
    rewritten with the union of columns, existing first), and the file is replaced atomically.
    """
    path = Path(path)
    columns, rows = read_markdown_table(path) if path.is_file() else ([], [])
    row = {column: format_cell(value) for column, value in values.items()}
    rows = [r for r in rows if r.get(key) != row[key]] + [row]
    columns = list(dict.fromkeys([*columns, *values]))
    lines = [markdown_header(columns)]
    lines += ["| " + " | ".join(r.get(c, "") for c in columns) + " |" for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)
    return path


def _finite(values: object) -> np.ndarray:
    """Per-sample values (sequence, array or tensor) -> their finite entries, float64 (K,)."""
    arr = np.asarray(plain(values), dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


CLIP_QUANTILES = (0.005, 0.995)


def clipped_edges(values: Sequence[np.ndarray], bins: int) -> np.ndarray:
    """Shared histogram edges over the 0.5–99.5 % quantiles of all ``values``, so a few
    outliers do not squeeze the rest into a couple of bins."""
    low, high = np.quantile(np.concatenate(values), CLIP_QUANTILES)
    return np.linspace(low, high if high > low else low + 1.0, bins + 1)


def clipped_hist(ax, values: np.ndarray, edges: np.ndarray, **style) -> None:
    """A density histogram of ``values`` clipped into ``edges`` (outliers in the end bins)."""
    ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, density=True, **style)


def score_figure(count: int) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(4.8 * count, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, count, squeeze=False)[0]


def label_score_axes(ax, name: str) -> None:
    ax.set_xlabel(f"{name} (clipped to its 0.5–99.5 % quantiles)")
    ax.set_ylabel("density")


def plot_score_distributions(
    path: str | os.PathLike,
    scores: Mapping[str, tuple[object, object]],
    title: str | None = None,
    bins: int = 50,
) -> Path:
    """Overlaid histograms of per-sample scores of a run against the real data's, as a PNG.

    Args:
        path: output ``.png``.
        scores: metric name -> (generated (N,), real (M,)) per-sample values, e.g.
            ``{"AvgkNN": (...), "LOF": (...)}``; non-finite values are left out.
        title: figure title (the method and its settings).
        bins: histogram bins over the 0.5–99.5 % quantiles, shared by both sets of a panel.

    Returns:
        ``path``.
    """
    path = Path(path)
    figure, axes = score_figure(len(scores))
    for ax, (name, (generated, real)) in zip(axes, scores.items(), strict=True):
        gen, ref = _finite(generated), _finite(real)
        edges = clipped_edges([gen, ref], bins)
        clipped_hist(ax, ref, edges, alpha=0.5, label=f"real data (n = {len(ref)})")
        clipped_hist(ax, gen, edges, alpha=0.5, label=f"generated (n = {len(gen)})")
        label_score_axes(ax, name)
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def plot_runs_overlay(
    path: str | os.PathLike,
    runs: Mapping[str, Mapping[str, object]],
    real: Mapping[str, object],
    title: str,
    bins: int = 50,
) -> Path:
    """Every run's per-sample score distribution in one plot per metric, against the real data.

    Args:
        path: output ``.png``.
        runs: run name -> metric name -> generated per-sample values (N,).
        real: metric name -> the real data's per-sample values (M,).
        title: figure title (the dataset).
        bins: histogram bins over the 0.5–99.5 % quantiles of all runs and the real data.

    Returns:
        ``path``.
    """
    path = Path(path)
    names = list(real)
    figure, axes = score_figure(len(names))
    for ax, name in zip(axes, names, strict=True):
        ref = _finite(real[name])
        gens = {run: _finite(v[name]) for run, v in runs.items() if name in v}
        edges = clipped_edges([ref, *gens.values()], bins)
        clipped_hist(ax, ref, edges, color="0.8", label="real data")
        for run, gen in gens.items():
            clipped_hist(ax, gen, edges, histtype="step", linewidth=1.5, label=run)
        label_score_axes(ax, name)
        ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path

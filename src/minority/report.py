"""Collect a sweep's ``metrics.json`` files into the papers' table and plot metrics against w, l̃.

    python -m minority.report outputs/toy2d/sweeps/<date>      # or any folder of sample runs

Writes ``table.md``, ``table.csv`` and ``metrics_vs_scale.png`` / ``metrics_vs_target.png``
into that folder and prints the markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from minority.errors import UserError
from minority.metrics.outputs import render_markdown_table

SETTINGS = ("method", "sampler", "steps", "scale", "target_class", "schedule", "init")
PAPER_COLUMNS = ("cfid", "sfid", "precision", "recall", "avgknn", "lof", "rarity")
PLOTTED = ("avgknn", "lof", "rarity", "light_share", "rare_class_share", "cfid")


def run_settings(config_path: Path) -> dict[str, Any]:
    """The method and its settings from a run's composed config."""
    cfg = OmegaConf.load(config_path)
    guidance = cfg.guidance
    method = guidance.name if cfg.init.name == "standard" else f"{guidance.name}+{cfg.init.name}"
    return {
        "method": method,
        "sampler": cfg.sampler.name,
        "steps": cfg.sampler.steps,
        "scale": guidance.get("scale"),
        "target_class": guidance.get("target_class"),
        "schedule": f"{cfg.schedule.kind}/{cfg.schedule.every}",
        "init": cfg.init.name,
    }


def collect(folder: Path) -> list[dict[str, Any]]:
    """One row per run below ``folder`` that has both ``metrics.json`` and ``config.yaml``."""
    rows = []
    for metrics in sorted(folder.rglob("metrics.json")):
        config = metrics.parent / "config.yaml"
        if config.is_file():
            rows.append(
                {
                    "run": metrics.parent.name,
                    **run_settings(config),
                    **json.loads(metrics.read_text()),
                }
            )
    if not rows:
        raise UserError(f"No evaluated runs (metrics.json beside config.yaml) below {folder}.")
    return rows


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Settings, then the paper's metric columns present, then the other metrics."""
    present = dict.fromkeys(k for row in rows for k in row)
    metrics = [c for c in PAPER_COLUMNS if c in present]
    skipped = (*SETTINGS, *metrics, "run", "num_samples", "provenance")
    others = [k for k in present if k not in skipped]
    return ["run", *SETTINGS, *metrics, *others]


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_against(path: Path, rows: Sequence[dict[str, Any]], x: str, group: str) -> Path | None:
    """Each plotted metric against ``x`` (numeric), one line per value of ``group``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usable = [r for r in rows if isinstance(r.get(x), int | float)]
    metrics = [m for m in PLOTTED if any(m in r for r in usable)]
    if len({r[x] for r in usable}) < 2 or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for key in sorted({str(r.get(group)) for r in usable}):
            line = sorted(
                (r[x], r[metric]) for r in usable if str(r.get(group)) == key and metric in r
            )
            ax.plot(*zip(*line, strict=True), marker="o", label=f"{group}={key}")
        ax.set(xlabel=x, ylabel=metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(folder: Path) -> str:
    """Write the table (markdown, CSV) and the plots for ``folder``; return the markdown."""
    rows = collect(folder)
    columns = columns_of(rows)
    table = render_markdown_table(rows, columns)
    (folder / "table.md").write_text(table)
    write_csv(folder / "table.csv", rows, columns)
    plot_against(folder / "metrics_vs_scale.png", rows, "scale", "target_class")
    plot_against(folder / "metrics_vs_target.png", rows, "target_class", "scale")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a sweep's metrics into a table.")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        print(report(args.folder))
    except UserError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()

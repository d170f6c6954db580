"""Collect a sweep's ``metrics.json`` files into tables and plot every metric against each
swept key.

    python -m minority.report outputs/toy2d/sweeps/<date>      # or any folder of sample runs

The swept keys come from the sweep's own record (``multirun.yaml``: its sweep overrides such as
``guidance.scale=1,2``) or, for a plain folder of runs, from the settings that differ between
the runs' ``config.yaml``. ``seed`` is averaged over: runs that differ only in the seed form one
point, its mean with the standard error of the mean.

Writes into that folder:
    table.md, table.csv        one row per run (keyed by run), every metric and swept key
    summary.md, summary.csv    one row per point: means over seeds, ``<metric>_se``, ``seeds``
    metrics_vs_<key>.png       every metric against each swept key, one line per value of the
                               other swept keys, the unguided baseline as a dashed line
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from minority.errors import UserError
from minority.metrics.outputs import render_markdown_table

SETTINGS = ("method", "sampler", "steps", "scale", "target_class", "schedule", "init")
# the config key each setting column shows (left out when that key is itself a swept column)
SETTING_KEYS = {
    "sampler": "sampler",
    "steps": "sampler.steps",
    "scale": "guidance.scale",
    "target_class": "guidance.target_class",
    "init": "init",
}
PAPER_COLUMNS = ("cfid", "sfid", "precision", "recall", "avgknn", "lof", "rarity")
AVERAGED = "seed"
# config keys that name files or switches, never what a sweep compares
NOT_SETTINGS = (
    "paths",
    "run_dir",
    "stage_dir",
    "run_name",
    "table",
    "checkpoint",
    "hydra",
    "logger",
    "trainer",
    "progress",
    "evaluate",
    "optimized_metric",
    "overwrite",
    "weights",
    "batch_size",
)


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The method and its settings from a run's composed config."""
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


def value_of(cfg: DictConfig, key: str) -> Any:
    """A swept key's value in a run's config; a config group (``guidance=self``) by its name."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, DictConfig):
        return value.get("name", str(OmegaConf.to_container(value)))
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def recorded_sweep(folder: Path) -> list[str] | None:
    """The keys swept by the Hydra multirun whose ``multirun.yaml`` is in ``folder``."""
    record = folder / "multirun.yaml"
    if not record.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(OmegaConf.load(record).hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def differing_keys(configs: Sequence[DictConfig]) -> list[str]:
    """Leaf keys (dotted) whose values differ between the configs, settings only."""
    flat = [flatten(OmegaConf.to_container(c, resolve=False)) for c in configs]
    keys = dict.fromkeys(k for f in flat for k in f)
    return [
        k
        for k in keys
        if not k.startswith(NOT_SETTINGS) and len({json.dumps(f.get(k)) for f in flat}) > 1
    ]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted key: leaf value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def collect(folder: Path) -> tuple[list[dict[str, Any]], list[str], list[DictConfig]]:
    """(rows, swept keys, configs): one row per run below ``folder`` with ``metrics.json`` and
    ``config.yaml``, holding its swept values, its settings and its metrics."""
    found = [
        (m, m.parent / "config.yaml")
        for m in sorted(folder.rglob("metrics.json"))
        if (m.parent / "config.yaml").is_file()
    ]
    if not found:
        raise UserError(f"No evaluated runs (metrics.json beside config.yaml) below {folder}.")
    configs = [OmegaConf.load(c) for _, c in found]
    swept = recorded_sweep(folder)
    if swept is None:
        swept = differing_keys(configs) if len(configs) > 1 else []
    rows = []
    for (metrics, _), cfg in zip(found, configs, strict=True):
        values = json.loads(metrics.read_text())
        values.pop("run", None)
        settings = {k: v for k, v in run_settings(cfg).items() if SETTING_KEYS.get(k) not in swept}
        swept_values = {key: value_of(cfg, key) for key in swept}
        rows.append({"run": metrics.parent.name, **swept_values, **settings, **values})
    return rows, swept, configs


def metric_names(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    """The paper's metric columns present, then every other numeric metric, in first-seen order."""
    known = {"run", "num_samples", *swept, *SETTINGS}
    present = dict.fromkeys(
        k for row in rows for k, v in row.items() if k not in known and is_number(v)
    )
    return [c for c in PAPER_COLUMNS if c in present] + [
        k for k in present if k not in PAPER_COLUMNS
    ]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def columns_of(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    """run, the swept keys, the (non-swept) settings, the metrics, then anything else."""
    present = dict.fromkeys(k for row in rows for k in row)
    head = ["run", *swept, *(s for s in SETTINGS if s in present)]
    metrics = metric_names(rows, swept)
    rest = [k for k in present if k not in (*head, *metrics, "provenance")]
    return [*head, *metrics, *rest]


def mean_and_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample std / √n; None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def point_key(row: dict[str, Any], keys: Sequence[str]) -> tuple:
    return tuple(json.dumps(row.get(k), sort_keys=True) for k in keys)


def summarise(
    rows: Sequence[dict[str, Any]], swept: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per point (runs equal in everything but ``seed``): means, ``_se``, ``seeds``."""
    keys = [k for k in (*swept, *SETTINGS) if k != AVERAGED and any(k in r for r in rows)]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[point_key(row, keys)].append(row)
    points = []
    for members in groups.values():
        point = {k: members[0].get(k) for k in keys}
        point["seeds"] = len(members)
        for metric in metrics:
            values = [float(r[metric]) for r in members if is_number(r.get(metric))]
            if values:
                point[metric], point[f"{metric}_se"] = mean_and_se(values)
        points.append(point)
    return points


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def baseline(configs: Sequence[DictConfig], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The unguided baseline's metrics: the sweep's own unguided runs (guidance none or w = 0)
    averaged, else the dataset's unguided ancestral run in ``<work>/samples``; {} if neither."""
    own = [r for r, c in zip(rows, configs, strict=True) if is_unguided(c)]
    if not own:
        work = Path(configs[0].paths.work_dir)
        for metrics in sorted(work.glob("samples/*/metrics.json")):
            config = metrics.parent / "config.yaml"
            if config.is_file() and is_unguided(OmegaConf.load(config)):
                own = [json.loads(metrics.read_text())]
                break
    names = {k for r in own for k, v in r.items() if is_number(v)}
    return {k: mean_and_se([float(r[k]) for r in own if is_number(r.get(k))])[0] for k in names}


def is_unguided(cfg: DictConfig) -> bool:
    g = cfg.guidance
    return cfg.init.name == "standard" and (g.name == "none" or float(g.get("scale", 0)) == 0)


def plot_against(
    path: Path,
    points: Sequence[dict[str, Any]],
    x: str,
    others: Sequence[str],
    metrics: Sequence[str],
    reference: dict[str, float],
) -> Path | None:
    """Every metric against ``x`` (mean ± standard error over seeds), one line per value of
    the ``others`` swept keys; the unguided baseline dashed. None if ``x`` takes one value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = sorted({p.get(x) for p in points}, key=lambda v: (not is_number(v), str(v), v or 0))
    if len(xs) < 2 or not metrics:
        return None
    numeric = all(is_number(v) for v in xs)
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    figure = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        lines[tuple(p.get(o) for o in others)].append(p)
    for ax, metric in zip(axes, metrics, strict=False):
        for key, members in sorted(lines.items(), key=lambda item: str(item[0])):
            data = sorted(
                ((xs.index(p.get(x)), p) for p in members if metric in p), key=lambda t: t[0]
            )
            if not data:
                continue
            at = [xs[i] if numeric else i for i, _ in data]
            label = ", ".join(f"{o}={v}" for o, v in zip(others, key, strict=True)) or "runs"
            ax.errorbar(
                at,
                [p[metric] for _, p in data],
                yerr=[p.get(f"{metric}_se") or 0.0 for _, p in data],
                marker="o",
                capsize=3,
                label=label,
            )
        if metric in reference:
            ax.axhline(reference[metric], color="0.4", linestyle="--", label="unguided")
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.set(xlabel=x, ylabel=metric, title=metric)
        ax.legend(fontsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    seeds = max(p.get("seeds", 1) for p in points)
    spread = f"mean ± s.e. over {seeds} seeds" if seeds > 1 else "one seed"
    figure.suptitle(f"metrics against {x} ({spread})")
    figure.savefig(path, dpi=100)
    return path


def report(folder: Path) -> dict[str, Path]:
    """Write the tables and plots for ``folder``; returns what was written, by name."""
    rows, swept, configs = collect(folder)
    metrics = metric_names(rows, swept)
    columns = columns_of(rows, swept)
    written = {"table.md": folder / "table.md", "table.csv": folder / "table.csv"}
    written["table.md"].write_text(render_markdown_table(rows, columns))
    write_csv(written["table.csv"], rows, columns)
    points = summarise(rows, swept, metrics)
    head = [k for k in points[0] if k not in metrics and not k.endswith("_se")]
    summary = [*head, *(c for m in metrics for c in (m, f"{m}_se"))]
    written["summary.md"] = folder / "summary.md"
    written["summary.md"].write_text(render_markdown_table(points, summary))
    written["summary.csv"] = write_csv(folder / "summary.csv", points, summary)
    reference = baseline(configs, rows)
    keys = [k for k in swept if k != AVERAGED]
    for x in keys:
        others = [k for k in keys if k != x]
        plot = plot_against(folder / f"metrics_vs_{x}.png", points, x, others, metrics, reference)
        if plot is not None:
            written[plot.name] = plot
    return written


WHAT = {
    "table.md": "one row per run",
    "table.csv": "one row per run",
    "summary.md": "means and standard errors over seeds",
    "summary.csv": "means and standard errors over seeds",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a sweep's metrics into tables and plots.")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        written = report(args.folder)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    print(written["summary.md"].read_text())
    for name, path in written.items():
        what = WHAT.get(name, f"every metric against {name[len('metrics_vs_') : -4]}")
        print(f"{what}: {path}")


if __name__ == "__main__":
    main()

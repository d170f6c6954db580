"""evaluate.py: the metric suite on a run folder or any guided-diffusion ``.npz``.

Writes ``metrics.json`` and a distribution plot next to the samples, and puts the run's row
into the dataset's markdown table (``paths.work_dir/metrics.md``; a run folder's own table, as
named in its ``config.yaml``). Both carry the evaluation's fingerprint and that of the samples.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from minority.data import RealData
from minority.data.images import build_image_dataset
from minority.errors import UserError
from minority.lit.build import build_dataset
from minority.metrics.features import (
    FeatureExtractor,
    cached_dataset_features,
    get_feature_extractor,
)
from minority.metrics.ground_truth import digits_class_shares, toy2d_ground_truth
from minority.metrics.outputs import (
    plot_runs_overlay,
    plot_score_distributions,
    upsert_markdown_row,
    write_metrics_json,
)
from minority.metrics.reference import most_unique_indices
from minority.metrics.suite import compute_metrics
from minority.metrics.validation import check_same_sample_size, load_samples_npz
from minority.outputs import save_npz_atomic, to_storage
from minority.provenance import file_fingerprint, read_json, record
from minority.tasks.common import log, plain
from minority.tasks.provenance import PROVENANCE_FILE


class Located(NamedTuple):
    """What evaluation reads: the archive, its dataset node, its table and its provenance."""

    path: Path
    dataset: dict[str, Any]
    table: Path
    samples: dict[str, Any]


def locate_samples(cfg: DictConfig) -> Located:
    """The archive to evaluate, the dataset it was drawn for, the table its row goes to and the
    samples' provenance (a run folder's ``provenance.json``, else the archive's content hash).
    A run folder is evaluated against its own dataset and written to its own table."""
    if cfg.get("run_dir"):
        folder = Path(cfg.run_dir)
        if not (folder / "samples.npz").is_file():
            raise UserError(f"{folder} holds no samples.npz; is it a finished sample.py run?")
        run_cfg = folder / "config.yaml"
        run = OmegaConf.load(run_cfg) if run_cfg.is_file() else cfg
        samples = read_json(folder / PROVENANCE_FILE) or record(
            {}, {"samples.npz": file_fingerprint(folder / "samples.npz")}
        )
        return Located(
            folder / "samples.npz", plain(run.dataset), Path(run.get("table", cfg.table)), samples
        )
    if cfg.get("npz"):
        path = Path(cfg.npz)
        samples = record({}, {"samples.npz": file_fingerprint(path)})
        return Located(path, plain(cfg.dataset), Path(cfg.table), samples)
    raise UserError("Give run_dir=<sample run folder> or npz=<file.npz> to evaluate.")


def evaluation_provenance(cfg: DictConfig, located: Located) -> dict:
    """The evaluation's settings (metrics, dataset) and the samples' fingerprint."""
    settings = {"metrics": plain(cfg.metrics), "dataset": located.dataset}
    return record(settings, {"samples": located.samples["fingerprint"]})


def run_label(archive: Path, table: Path) -> str:
    """A run's name in its table: its folder relative to the table's folder (unique per run)."""
    folder = archive.parent.resolve()
    try:
        return str(folder.relative_to(table.parent.resolve()))
    except ValueError:
        return str(folder)


# Keys of a dataset node that change how items are loaded, never what they are: not part of
# the feature cache's key.
LOADER_ONLY_KEYS = ("num_workers",)


class RealSet:
    """The real reference of an evaluation: image formats stream from disk and their features
    are cached (``metrics.cache_dir``); embedded data (toy2d, digits) are built in memory
    (``cfg``: the whole config, for its ``allowed_targets``).
    """

    def __init__(self, dataset: dict[str, Any], mcfg: DictConfig, cfg: Any = None) -> None:
        self.dataset, self.mcfg = dataset, mcfg
        streamed = bool(dataset.get("format"))
        self.items = build_image_dataset(dataset, False, False) if streamed else None
        self.memory: RealData | None = None if streamed else build_dataset(dataset, cfg)

    def example(self) -> Any:
        """One real sample, (1, …) float in [−1, 1]."""
        return self.memory.x[:1] if self.memory is not None else self.items[0][0][None]

    def features(self, extractor: FeatureExtractor) -> Any:
        """Features of every real sample, in dataset order."""
        if self.memory is not None:
            return extractor(self.memory.x)
        settings = {k: v for k, v in self.dataset.items() if k not in LOADER_ONLY_KEYS}
        return cached_dataset_features(
            extractor,
            self.items,
            self.items.source_files,
            settings,
            self.mcfg.cache_dir,
            int(self.dataset["num_workers"]),
        )


def feature_metrics(samples: np.ndarray, real: RealSet, mcfg: DictConfig) -> tuple[dict, dict]:
    """Every configured column, grouping columns that share features and reference set.

    The "unique" reference is chosen once, by AvgkNN in the ``metrics.unique_features`` space,
    and the same real subset serves every column of the row.
    """
    groups: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for column, spec in mcfg.columns.items():
        groups[(spec.features, spec.reference)][column] = spec.metric
    needs_unique = any(reference == "unique" for _, reference in groups)
    unique_space = mcfg.get("unique_features") or next(f for f, r in groups if r == "unique")
    spaces = {features for features, _ in groups} | ({unique_space} if needs_unique else set())
    features = {}
    for name in spaces:
        extractor = get_feature_extractor(name, mcfg.weights.get(name), mcfg.device)
        features[name] = (real.features(extractor), extractor(samples))
    unique = (
        most_unique_indices(features[unique_space][0], float(mcfg.unique_fraction))
        if needs_unique
        else None
    )
    values, per_sample = {}, {}
    for (space, reference), columns in groups.items():
        real_f, gen_f = features[space]
        if reference == "unique":
            real_f = real_f[unique]
        result = compute_metrics(
            gen_f,
            real_f,
            sorted(set(columns.values())),
            k_avgknn=int(mcfg.k_avgknn),
            k_lof=int(mcfg.k_lof),
            k_rarity=int(mcfg.k_rarity),
            k_manifold=int(mcfg.k_manifold),
        )
        for column, metric in columns.items():
            values[column] = result.values[metric]
            if metric in ("avgknn", "lof") and reference == "all":
                per_sample[metric] = (
                    result.per_sample[metric],
                    result.per_sample[f"{metric}_real"],
                )
        if "rarity_in_ball" in result.values and "rarity" in columns.values():
            values["rarity_in_ball"] = result.values["rarity_in_ball"]
    return values, per_sample


def ground_truth(samples: np.ndarray, real: RealSet, dataset: dict[str, Any]) -> dict[str, float]:
    """Exact-density figures (toy2d) or class shares (digits); empty for other data."""
    if real.memory is not None and real.memory.mixture is not None:
        return toy2d_ground_truth(real.memory.mixture, samples)
    if "keep_fraction" in dataset:  # digits
        rare = tuple(int(c) for c in dataset["keep_fraction"])
        return digits_class_shares(samples, rare)
    return {}


def run_title(run_cfg: DictConfig | None, fallback: str) -> str:
    """The method and its settings, from a sample run's config (``fallback`` without one)."""
    if run_cfg is None or "guidance" not in run_cfg:
        return fallback
    g, init = run_cfg.guidance, run_cfg.init
    parts = ["unguided" if g.name == "none" else f"{g.name} guidance, w = {g.scale}"]
    if g.name == "minority":
        target = "L−1" if g.target_class is None else g.target_class
        parts.append(f"l̃ = {target}")
    if g.name != "none":
        parts.append(f"schedule {run_cfg.schedule.kind} every {run_cfg.schedule.every}")
    if init.name != "standard":
        parts.append(f"{init.name} γ = {init.gamma}, skip {init.skip}")
    sampler = run_cfg.sampler
    parts.append(f"{sampler.name} {sampler.steps} steps, seed {run_cfg.seed}")
    return f"{run_cfg.dataset.name}: " + ", ".join(str(p) for p in parts)


def overlay_all_runs(work_dir: Path) -> Path | None:
    """One plot of every run's per-sample scores in ``work_dir/samples`` against the real data."""
    found = sorted(work_dir.glob("samples/*/per_sample.npz"))
    if not found:
        return None
    runs, real = {}, {}
    for path in found:
        with np.load(path) as archive:
            metrics = [k for k in archive.files if not k.endswith("_real")]
            runs[path.parent.name] = {m.upper(): archive[m] for m in metrics}
            real.update({m.upper(): archive[f"{m}_real"] for m in metrics})
    return plot_runs_overlay(
        work_dir / "distributions_all_runs.png", runs, real, f"{work_dir.name}: all sample runs"
    )


def evaluate_task(cfg: DictConfig) -> dict[str, Any]:
    """Compute, write and return the metrics of one sample archive."""
    located = locate_samples(cfg)
    path, dataset = located.path, located.dataset
    samples, _ = load_samples_npz(path)
    real = RealSet(dataset, cfg.metrics, cfg)
    check_same_sample_size(samples, to_storage(real.example()))
    values, per_sample = feature_metrics(samples, real, cfg.metrics)
    if cfg.metrics.ground_truth:
        values.update(ground_truth(samples, real, dataset))
    run = path.parent.name
    provenance = evaluation_provenance(cfg, located)
    stamps = {
        "fingerprint": provenance["fingerprint"],
        "samples_fingerprint": located.samples["fingerprint"],
    }
    out = write_metrics_json(
        path.parent / "metrics.json",
        {
            "run": run,
            "num_samples": len(samples),
            **values,
            **stamps,
            "provenance": {**provenance, "samples": located.samples},
        },
    )
    if per_sample:
        config = path.parent / "config.yaml"
        title = run_title(OmegaConf.load(config) if config.is_file() else None, run)
        plot_score_distributions(
            path.parent / "distributions.png",
            {k.upper(): v for k, v in per_sample.items()},
            title=title,
        )
        arrays = {}
        for name, (generated, real_values) in per_sample.items():
            arrays[name], arrays[f"{name}_real"] = np.asarray(generated), np.asarray(real_values)
        save_npz_atomic(path.parent / "per_sample.npz", **arrays)
        overlay_all_runs(located.table.parent)
    upsert_markdown_row(located.table, {"run": run_label(path, located.table), **values, **stamps})
    log.info("metrics: %s; table: %s", out, located.table)
    print(summary(run, values))
    return values


def summary(run: str, values: dict[str, Any]) -> str:
    """The metric values of a run as a short block of ``name  value`` lines."""
    width = max([len(name) for name in values] + [len("run")])
    lines = [f"{'run':<{width}}  {run}"]
    lines += [f"{name:<{width}}  {value:.6g}" for name, value in values.items()]
    return "\n".join(lines)

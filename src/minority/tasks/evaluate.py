"""evaluate.py: the metric suite on a run folder or any guided-diffusion ``.npz``.

Writes ``metrics.json`` and a distribution plot next to the samples, and appends one row to
the dataset's markdown table (``paths.work_dir/metrics.md``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from minority.data import RealData, build_dataset
from minority.data.images import build_image_dataset
from minority.errors import UserError
from minority.metrics.features import (
    FeatureExtractor,
    cached_dataset_features,
    get_feature_extractor,
)
from minority.metrics.ground_truth import digits_class_shares, toy2d_ground_truth
from minority.metrics.outputs import (
    append_markdown_row,
    plot_score_distributions,
    write_metrics_json,
)
from minority.metrics.reference import most_unique_indices
from minority.metrics.suite import compute_metrics
from minority.metrics.validation import check_same_sample_size, load_samples_npz
from minority.outputs import to_storage
from minority.tasks.common import log, plain


def locate_samples(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """The archive to evaluate and the dataset node it was drawn for."""
    if cfg.get("run_dir"):
        folder = Path(cfg.run_dir)
        if not (folder / "samples.npz").is_file():
            raise UserError(f"{folder} holds no samples.npz; is it a finished sample.py run?")
        run_cfg = folder / "config.yaml"
        dataset = OmegaConf.load(run_cfg).dataset if run_cfg.is_file() else cfg.dataset
        return folder / "samples.npz", plain(dataset)
    if cfg.get("npz"):
        return Path(cfg.npz), plain(cfg.dataset)
    raise UserError("Give run_dir=<sample run folder> or npz=<file.npz> to evaluate.")


class RealSet:
    """The real reference of an evaluation: image formats stream from disk and their features
    are cached (``metrics.cache_dir``); embedded data (toy2d, digits) are built in memory.
    """

    def __init__(self, dataset: dict[str, Any], mcfg: DictConfig) -> None:
        self.dataset, self.mcfg = dataset, mcfg
        streamed = bool(dataset.get("format"))
        self.items = build_image_dataset(dataset, False, False) if streamed else None
        self.memory: RealData | None = None if streamed else build_dataset(dataset)

    def example(self) -> Any:
        """One real sample, (1, …) float in [−1, 1]."""
        return self.memory.x[:1] if self.memory is not None else self.items[0][0][None]

    def features(self, extractor: FeatureExtractor) -> Any:
        """Features of every real sample, in dataset order."""
        if self.memory is not None:
            return extractor(self.memory.x)
        return cached_dataset_features(
            extractor,
            self.items,
            self.items.source_files,
            self.dataset,
            self.mcfg.cache_dir,
            int(self.dataset.get("num_workers", 0)),
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
    if dataset.get("source") == "digits":
        rare = tuple(int(c) for c in (dataset.get("keep_fraction") or {}))
        return digits_class_shares(samples, rare)
    return {}


def evaluate_task(cfg: DictConfig) -> dict[str, Any]:
    """Compute, write and return the metrics of one sample archive."""
    path, dataset = locate_samples(cfg)
    samples, _ = load_samples_npz(path)
    real = RealSet(dataset, cfg.metrics)
    check_same_sample_size(samples, to_storage(real.example()))
    values, per_sample = feature_metrics(samples, real, cfg.metrics)
    if cfg.metrics.ground_truth:
        values.update(ground_truth(samples, real, dataset))
    run = path.parent.name
    out = write_metrics_json(
        path.parent / "metrics.json", {"run": run, "num_samples": len(samples), **values}
    )
    if per_sample:
        plot_score_distributions(
            path.parent / "distributions.png",
            {k.upper(): v for k, v in per_sample.items()},
            title=run,
        )
    append_markdown_row(cfg.table, {"run": run, **values})
    log.info("metrics: %s; table: %s", out, cfg.table)
    print(summary(run, values))
    return values


def summary(run: str, values: dict[str, Any]) -> str:
    """The metric values of a run as a short block of ``name  value`` lines."""
    width = max([len(name) for name in values] + [len("run")])
    lines = [f"{'run':<{width}}  {run}"]
    lines += [f"{name:<{width}}  {value:.6g}" for name, value in values.items()]
    return "\n".join(lines)

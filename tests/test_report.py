"""The sweep report on hand-made run folders: swept keys from the run configs when there is no
multirun.yaml, the unguided baseline, optimized_metric; the logger choices."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pipeline_helpers import make_config

from minority.errors import UserError
from minority.report import report
from minority.tasks.common import make_logger
from minority.tasks.sample import chosen_metric


def fake_run(folder: Path, root: Path, lof: float, *overrides: str) -> None:
    cfg = make_config("sample", root, *overrides, run_dir=folder)
    folder.mkdir(parents=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    (folder / "metrics.json").write_text(json.dumps({"lof": lof, "num_samples": 10}))


def test_keys_that_differ_between_runs_are_the_columns_and_baseline_is_drawn(tmp_path):
    root, sweep = tmp_path / "out", tmp_path / "runs"
    for i, (w, seed, lof) in enumerate([(1, 0, 1.0), (1, 1, 3.0), (2, 0, 2.0), (2, 1, 6.0)]):
        args = ("guidance=minority", f"guidance.scale={w}", f"seed={seed}")
        fake_run(sweep / f"run{i}", root, lof, *args)
    fake_run(root / "toy2d" / "samples" / "ancestral", root, 0.5)
    written = report(sweep)
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert {"guidance.scale", "seed"} <= set(rows[0]) and "scale" not in rows[0]
    summary = {
        float(r["guidance.scale"]): r for r in csv.DictReader((sweep / "summary.csv").open())
    }
    assert float(summary[1]["lof"]) == 2.0 and float(summary[1]["lof_se"]) == 1.0
    assert float(summary[2]["lof"]) == 4.0 and float(summary[2]["lof_se"]) == 2.0
    assert set(written) >= {"table.md", "summary.md", "metrics_vs_guidance.scale.png"}


def test_optimized_metric_is_read_from_the_run(tmp_path):
    folder = tmp_path / "run"
    cfg = make_config("sample", tmp_path, "evaluate=true", "optimized_metric=lof", run_dir=folder)
    fake_run(folder, tmp_path, 1.25)
    assert chosen_metric(cfg) == 1.25
    cfg.optimized_metric = "nope"
    with pytest.raises(UserError, match="'nope' is not among this run's metrics"):
        chosen_metric(cfg)
    cfg.optimized_metric = None
    assert chosen_metric(cfg) is None


@pytest.mark.parametrize(
    ("choice", "kinds"),
    [
        ("csv", ["CSVLogger"]),
        ("tensorboard", ["TensorBoardLogger"]),
        ("many", ["CSVLogger", "WandbLogger"]),
    ],
)
def test_logger_choices(tmp_path, monkeypatch, choice, kinds):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config("sample", tmp_path, f"logger={choice}")
    made = make_logger(cfg, tmp_path, "sample")
    made = made if isinstance(made, list) else [made]
    # each logger is of the named Lightning class (the CSV one is its appending subclass)
    assert [next(c.__name__ for c in type(m).__mro__ if c.__name__ in kinds) for m in made] == kinds
    for logger in made:
        if type(logger).__name__ == "WandbLogger":
            assert logger.experiment.job_type == "sample" and logger.experiment.group == "toy2d"
            logger.experiment.finish()

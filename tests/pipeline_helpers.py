"""Compose the real Hydra configs in tests and run the tasks in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from minority import schema

REPO = Path(__file__).resolve().parents[1]


def make_config(name: str, root: Path, *overrides: str, run_dir: Path | None = None) -> DictConfig:
    """The composed ``conf/<name>.yaml`` with outputs under ``root`` (progress bars off)."""
    schema.register()
    extra = [f"paths.root={root}", f"run_dir={run_dir or root / 'run'}"]
    if name != "evaluate":
        extra.append("trainer.enable_progress_bar=false")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=[*extra, *overrides])

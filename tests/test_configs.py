"""Every option of every config group composes, and every ``_target_`` in it resolves to an
allowed callable; those that need no files are built (the objects the tasks would use)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError
from pipeline_helpers import REPO, make_config

from minority.guidance.base import WeightSchedule
from minority.guidance.build import TermContext
from minority.instantiate import TARGET_KEY, allowed_prefixes, check_targets
from minority.lit.build import (
    build_dataset,
    build_guide,
    build_init,
    build_network,
    build_schedule,
)
from minority.sampling.init import Initialisation
from minority.tasks.common import make_callbacks, make_logger, plain

CONF = REPO / "conf"
# Groups chosen in sample.yaml (and train.yaml); the others are Hydra's or fill-ins.
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment")
)
# Options whose objects need files or a service: composed and resolved, not built.
NOT_BUILT = {
    ("model", name)  # guided-diffusion's full-size UNets: GBs of random weights
    for name in ("adm_celeba64", "adm_imagenet64", "adm_lsun256", "adm_upsampler64_256")
} | {("guidance", "minority"), ("logger", "wandb"), ("logger", "many")}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Hydra's Optuna sweeper is an optional plugin (pip install hydra-optuna-sweeper).
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
CASES = [
    (group, name)
    for group in GROUPS
    for name in options(group)
    if group != "hparams_search" or HAS_OPTUNA
]


def targets(node: Any) -> list[str]:
    """Every ``_target_`` value in a plain container."""
    if isinstance(node, dict):
        found = [node[TARGET_KEY]] if TARGET_KEY in node else []
        return found + [t for k, v in node.items() if k != TARGET_KEY for t in targets(v)]
    if isinstance(node, list):
        return [t for item in node for t in targets(item)]
    return []


def resolve_targets(cfg: DictConfig, node: Any) -> list[str]:
    """The node's targets, each allowed and naming a callable."""
    found = targets(node)
    check_targets(node, allowed_prefixes(cfg))
    for target in found:
        assert callable(get_object(target)), target
    return found


def compose(group: str, name: str, root: Path) -> DictConfig:
    return make_config("sample", root, f"{group}={name}")


@pytest.mark.parametrize(("group", "name"), CASES, ids=[f"{g}={n}" for g, n in CASES])
def test_every_group_option_composes_and_its_targets_resolve(tmp_path, group, name):
    cfg = compose(group, name, tmp_path)
    node = plain(cfg[group]) if group in cfg else {}
    found = resolve_targets(cfg, node)
    if (group, name) not in NOT_BUILT and found:
        build(group, cfg, tmp_path)


def build(group: str, cfg: DictConfig, folder: Path) -> None:
    """Build the object of ``cfg[group]`` as the tasks do and check its kind and settings."""
    node = plain(cfg[group])
    if group == "model":
        assert sum(p.numel() for p in build_network(node, cfg).parameters()) > 0
    elif group == "dataset" and "???" not in node.values():
        data = build_dataset(node, cfg)
        assert len(data) > 0 and data.name == node["name"]
    elif group == "schedule":
        schedule = build_schedule(2.5, node, cfg)
        assert isinstance(schedule, WeightSchedule)
        assert (schedule.scale, schedule.every, schedule.kind) == (2.5, node["every"], node["kind"])
    elif group == "init":
        init = build_init(node, cfg)
        assert isinstance(init, Initialisation)
        assert (init.gamma, init.skip) == (node["gamma"], node["skip"])
    elif group == "guidance":
        context = TermContext((2,), 10, None, plain(cfg.diffusion), 0)
        guide = build_guide(node, plain(cfg.schedule), context, cfg)
        assert guide.schedule.scale == node["scale"] and hasattr(guide.term, "direction")
    elif group == "logger":
        assert make_logger(cfg, folder, "test").save_dir == str(folder)
    elif group == "callbacks":
        cfg.trainer.enable_progress_bar = True  # the test configs switch progress off
        assert len(make_callbacks(cfg)) == len(node)


EXPERIMENTS = options("experiment")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_its_targets_resolve(tmp_path, name):
    stage = "train" if name.endswith("_train") else "sample"
    cfg = make_config(stage, tmp_path, f"experiment={name}")
    groups = [g for g in GROUPS if g in cfg and g not in ("paths", "runs")]
    assert any(resolve_targets(cfg, plain(cfg[g])) for g in groups)


def test_guidance_none_builds_no_guide(tmp_path):
    cfg = make_config("sample", tmp_path, "guidance=none")
    context = TermContext((2,), 10, None, plain(cfg.diffusion), 0)
    assert build_guide(plain(cfg.guidance), plain(cfg.schedule), context, cfg) is None


@pytest.mark.parametrize(
    "override",
    [
        "schedule.every=abc",
        "init.skip=abc",
        "model.hidden=abc",
        "dataset.num_samples=abc",
        "guidance.scale=abc",
        "logger.tags=abc",
        "model.width=3",
    ],
)
def test_a_wrong_type_or_unknown_key_fails_at_composition(tmp_path, override):
    extra = ["logger=wandb"] if override.startswith("logger") else []
    with pytest.raises((ConfigCompositionException, ValidationError)):
        OmegaConf.to_container(make_config("sample", tmp_path, *extra, override))

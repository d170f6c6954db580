"""The allow-listed instantiate helper: built objects, refused targets, one-sentence errors."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from minority.errors import UserError
from minority.instantiate import allowed_prefixes, check_targets, instantiate, is_allowed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("target", "prefixes", "allowed"),
    [
        ("minority.sampling.init.Initialisation", ("minority",), True),
        ("minority", ("minority",), True),
        ("minority_evil.run", ("minority",), False),
        ("os.system", ("minority",), False),
        ("my_lab.guidance.Term", ("minority", "my_lab"), True),
        ("my_lab2.Term", ("minority", "my_lab"), False),
    ],
)
def test_prefix_rule(target: str, prefixes: tuple[str, ...], allowed: bool) -> None:
    assert is_allowed(target, prefixes) is allowed


def test_allowed_targets_extend_the_default() -> None:
    cfg = OmegaConf.create({"allowed_targets": ["my_lab.", "other"]})
    assert allowed_prefixes(cfg) == ("minority", "my_lab", "other")
    assert allowed_prefixes(OmegaConf.create({})) == ("minority",)


def test_nested_and_listed_targets_are_checked() -> None:
    cfg = OmegaConf.create({"a": {"b": [{"c": {"_target_": "os.system"}}]}})
    with pytest.raises(UserError, match=r"a\.b\[0\]\.c\._target_='os.system'"):
        check_targets(cfg, ("minority",))


def test_instantiate_builds_with_config_and_caller_arguments() -> None:
    node = OmegaConf.create({"_target_": "minority.sampling.init.Initialisation", "gamma": 2.0})
    init = instantiate(node, None, skip=3)
    assert (init.gamma, init.skip) == (2.0, 3)


def test_instantiate_refuses_and_explains() -> None:
    with pytest.raises(UserError, match="not an allowed target"):
        instantiate({"_target_": "os.getcwd"})
    with pytest.raises(UserError, match="has no _target_"):
        instantiate({"gamma": 1.0})
    with pytest.raises(UserError, match=r"^Could not build minority\.sampling\.init\.Init"):
        instantiate({"_target_": "minority.sampling.init.Initialisation", "nonsense": 1})


def test_cli_refuses_a_foreign_target_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "sample.py", "+foo._target_=os.system", f"paths.work_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: foo._target_='os.system'")
    assert "Traceback" not in done.stderr
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"sample.log", "config.yaml", "hydra.yaml", "overrides.yaml"}

"""A user's own sampler, outside the package, selected from the user's own config folder.

The sampler lives in a temporary module on the subprocess's PYTHONPATH, its YAML in a temporary
config folder added with ``hydra.searchpath``; ``allowed_targets`` admits its module. It is
DDIM with η = 0 written from the contract's public pieces, so its samples equal those of
``sampler=ddim`` drawn side by side from the same seeds. Two CLI start-ups (≈ 40 s of CPU on
two cores, more on a busy machine): marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_helpers import REPO, make_config

from minority.lit.build import build_denoiser
from minority.models.build import save_checkpoint
from minority.tasks.common import plain

pytestmark = pytest.mark.slow

PLUGIN = '''
"""A user's sampler: deterministic DDIM, x_{i-1} = sqrt(a') x0 + sqrt(1 - a') eps."""

from minority.sampling.base import Sampler, StepOutput
from minority.sampling.ddim import eps_shift


class FlowStep(Sampler):
    name = "flow_step"

    def step(self, trajectory, x, i, guide=None):
        diffusion = trajectory.diffusion
        model = self.evaluate(trajectory, x, i, guide)
        x, k, x0 = model.x.detach(), model.k, model.pred_xstart
        eps = diffusion.pred_eps(x, k, x0)
        a_prev = diffusion.gather(diffusion.alphas_cumprod_prev, k, x)
        if guide is not None:  # the guide's w*g as DDIM's eps shift; x0 re-derived from it
            a = diffusion.gather(diffusion.alphas_cumprod, k, x)
            eps = eps + eps_shift(model.direction(trajectory, guide), guide.schedule, a, a_prev)
            x0 = diffusion.pred_xstart(x, k, eps)
        return StepOutput(a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, x0)
'''

SAMPLER_YAML = """
_target_: my_samplers.FlowStep
name: my_sampler
steps: "5"
clip_denoised: true
"""


def _user_files(tmp: Path) -> dict[str, str]:
    """The user's module and config folder, and the environment that finds the module."""
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "my_samplers.py").write_text(textwrap.dedent(PLUGIN))
    (tmp / "conf" / "sampler").mkdir(parents=True)
    (tmp / "conf" / "sampler" / "my_sampler.yaml").write_text(SAMPLER_YAML)
    path = os.pathsep.join(p for p in (str(tmp / "plugins"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_a_sampler_from_the_users_module_and_config_folder_samples(tmp_path: Path) -> None:
    cfg = make_config("sample", tmp_path)
    denoiser = build_denoiser(plain(cfg.model))
    meta = {"model": plain(cfg.model), "diffusion": plain(cfg.diffusion)}
    save_checkpoint(cfg.paths.diffusion_ckpt, denoiser, meta)
    env = _user_files(tmp_path)
    common = [f"paths.root={tmp_path}", "num_samples=8", "batch_size=8", "progress=false"]
    runs = {
        "plugin": [
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "sampler=my_sampler",
            "allowed_targets=[my_samplers]",
        ],
        "ddim": ["sampler=ddim", "sampler.steps=5"],
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "sample.py", *common, *args, f"hydra.run.dir={tmp_path / name}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in runs.items()
    }
    for process in running.values():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "plugin" / ".hydra" / "config.yaml").read_text())
    assert saved["sampler"]["_target_"] == "my_samplers.FlowStep"
    with (
        np.load(tmp_path / "plugin" / "samples.npz") as plugin,
        np.load(tmp_path / "ddim" / "samples.npz") as ddim,
    ):
        assert plugin["arr_0"].shape == (8, 2)
        np.testing.assert_allclose(plugin["arr_0"], ddim["arr_0"], rtol=0, atol=1e-5)

"""A backbone, a guidance term and a sampler from the user's own module, chosen by YAML files
in the user's own config folder, trained and sampled through the CLI without editing the
package. (The sampler is the one :mod:`test_sampler_plugin` checks against DDIM.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import REPO
from test_sampler_plugin import PLUGIN

pytestmark = pytest.mark.slow

MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """eps(x_t, t) of 2-D points: one hidden layer, t / 1000 as an extra input."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, t):
        return self.layers(torch.cat([x, t.float()[:, None] / 1000], dim=1))


class PullToPoint:
    """g = point - x_t: guidance towards a point of the plane."""

    needs_graph = False

    def __init__(self, point, context):
        assert tuple(context.sample_shape) == (len(point),)
        self.point = torch.tensor(point)

    def direction(self, ctx):
        return (self.point.to(ctx.x) - ctx.x).detach()
''' + PLUGIN.replace('"""', "#", 2)

BACKBONE = """_target_: my_lab.TinyNet
arch: tiny
dim: 2
width: 32
"""

TERM = """_target_: my_lab.PullToPoint
name: pull
scale: 0.5
point: [2.0, 2.0]
"""

SAMPLER = """_target_: my_lab.FlowStep
name: flow
steps: "20"
clip_denoised: true
"""

POINT = np.array([2.0, 2.0])


def run(
    tmp_path: Path, script: str, *overrides: str, allowed: str = "[my_lab]"
) -> subprocess.CompletedProcess:
    common = [
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"allowed_targets={allowed}",
        "model=tiny",
        f"paths.work_dir={tmp_path / 'work'}",
        "trainer.enable_progress_bar=false",
        "dataset.num_samples=2000",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "code"), *sys.path])}
    return subprocess.run(
        [sys.executable, script, *common, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def samples(tmp_path: Path, *overrides: str) -> np.ndarray:
    common = ("num_samples=256", "batch_size=256", "sampler.steps=20", "schedule=fixed")
    done = run(tmp_path, "sample.py", *common, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    name = "pull" if "guidance=pull" in overrides else "none"
    (npz,) = (tmp_path / "work" / "samples").glob(f"{name}_*/samples.npz")
    with np.load(npz) as archive:
        return archive["arr_0"]


def test_user_backbone_and_guidance_term_train_and_sample(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_lab.py").write_text(MODULE)
    files = (("model", "tiny", BACKBONE), ("guidance", "pull", TERM), ("sampler", "flow", SAMPLER))
    for group, name, text in files:
        (tmp_path / "conf" / group).mkdir(parents=True)
        (tmp_path / "conf" / group / f"{name}.yaml").write_text(text)

    trained = run(
        tmp_path, "train.py", "task=diffusion", "trainer.max_steps=30", "train.preview.every=0"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "work" / "diffusion" / "denoiser.pt").is_file()

    guided = samples(tmp_path, "guidance=pull", "sampler=flow")
    plain = samples(tmp_path, "guidance=none")
    assert guided.shape == plain.shape == (256, 2) and np.isfinite(guided).all()
    # the user's term, stepped by the user's sampler, pulls every sample towards its point
    distance = lambda x: np.linalg.norm(x - POINT, axis=1).mean()  # noqa: E731
    assert distance(guided) < 0.5 * distance(plain)


def test_a_user_target_outside_allowed_targets_is_refused(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text(BACKBONE)
    done = run(tmp_path, "train.py", allowed="[]")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model._target_='my_lab.TinyNet' is not an allowed target" in done.stderr

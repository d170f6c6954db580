"""Random-weight ADM checkpoints at reduced width, for end-to-end runs of the paper presets.

A preset runs on CPU with a network of its own architecture at reduced width: the overrides
below (documented in the README, "Paper presets"). The state dict is saved as a plain
guided-diffusion ``.pt`` file and given to the real ``checkpoint=`` option.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from minority.lit.build import build_network
from minority.tasks.common import plain

# Every preset: width 32, one residual block per level; a few steps on two samples.
REDUCED = ("model.flags.num_channels=32", "model.flags.num_res_blocks=1")
FAST = ("sampler.steps=3", "num_samples=2", "batch_size=2", "progress=false")
# Models with 64 channels per attention head (all but the upsampler's 4 heads): 32 per head.
HEAD_CHANNELS = ("model.flags.num_head_channels=32",)


def random_state_dict(model_cfg: dict, seed: int = 0) -> dict[str, Tensor]:
    """The network of ``model_cfg`` with random weights; the layers ADM initialises to zero
    (output convs) get small random values too, so that ε depends on its inputs."""
    torch.manual_seed(seed)
    net = build_network(model_cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return net.state_dict()


def save_random_checkpoint(cfg: DictConfig, path: Path, seed: int = 0) -> Path:
    """Write a random guided-diffusion state dict for ``cfg.model`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(plain(cfg.model), seed), path)
    return path

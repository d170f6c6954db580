"""Untrained, seeded stand-ins for the trained stages (denoiser, classifier) of a work folder."""

from __future__ import annotations

from pathlib import Path

import torch
from pipeline_helpers import make_config

from minority.lit.build import build_denoiser
from minority.lit.classifier import MinorityClassifierModule
from minority.models.build import save_checkpoint
from minority.tasks.common import plain


def untrained_work_folder(root: Path, num_classes: int = 10) -> Path:
    """Write a random toy2d denoiser and minority classifier where the stages expect them."""
    cfg = make_config("sample", root)
    torch.manual_seed(0)
    model = plain(cfg.model)
    meta = {
        "model": model,
        "diffusion": plain(cfg.diffusion),
        "dataset": "toy2d",
        "sample_shape": [2],
    }
    save_checkpoint(cfg.paths.diffusion_ckpt, build_denoiser(model), meta)
    module = MinorityClassifierModule(num_classes, (2,), "mlp", {"hidden": 32, "depth": 2})
    path = Path(cfg.paths.classifier_ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return root

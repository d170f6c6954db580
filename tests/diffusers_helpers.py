"""Tiny random diffusers UNet2DModels saved as local folders (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers")

SIZE = 8
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def tiny_unet(
    channels: int = 1, num_classes: int | None = None, learn_sigma: bool = False, seed: int = 0
):
    """A random UNet2DModel on channels×8×8 images (about 40k parameters, attention in the
    middle), class-conditional when ``num_classes`` is given."""
    import torch

    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=SIZE,
        in_channels=channels,
        out_channels=channels * (2 if learn_sigma else 1),
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=num_classes,
    ).eval()


def save_folder(
    path: Path, unet: Any, scheduler: Any | None = None, pipeline: bool = False, **kwargs: Any
) -> Path:
    """``unet`` and a DDPMScheduler(**kwargs) (or ``scheduler``) as ``save_pretrained`` writes
    them: the UNet at the top with ``scheduler/``, or a DDPMPipeline folder (``unet/``,
    ``scheduler/``, ``model_index.json``)."""
    scheduler = scheduler if scheduler is not None else diffusers.DDPMScheduler(**kwargs)
    if pipeline:
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    else:
        unet.save_pretrained(path)
        scheduler.save_pretrained(path / "scheduler")
    return path


def conditional_unet_folder(path: Path) -> Path:
    """A tiny text-conditioned UNet2DConditionModel saved alone at ``path``."""
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=2,
        mid_block_type=None,
    )
    unet.save_pretrained(path)
    return path

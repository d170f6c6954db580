"""sample.py: draw N samples into a run folder (shards → samples.npz → picture), resumably."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from minority.data import build_dataset
from minority.errors import require
from minority.guidance.build import build_guide
from minority.lit.sampling import SamplingModule, ShardWriter, pending_ranges
from minority.models.build import build_diffusion_for, is_class_conditional, load_denoiser
from minority.outputs import merge_shards, save_picture
from minority.sampling.init import Initialisation
from minority.tasks.common import log, log_results, make_trainer, plain, run_dir
from minority.tasks.evaluate import evaluate_task


def check_sampling_config(cfg: DictConfig) -> None:
    require(int(cfg.num_samples) > 0, f"num_samples must be positive (got {cfg.num_samples}).")
    require(int(cfg.batch_size) > 0, f"batch_size must be positive (got {cfg.batch_size}).")


def sample_shape(model_cfg: dict, dataset_cfg: dict) -> tuple[int, ...]:
    """One sample's shape: from the ADM flags, else from the (embedded, in-memory) dataset."""
    flags = model_cfg.get("flags")
    if flags:
        size = int(flags.get("large_size", flags.get("image_size")))
        return (int(flags.get("in_channels", 3)), size, size)
    return build_dataset(dataset_cfg).sample_shape


def build_sampling_module(cfg: DictConfig, ranges: list[tuple[int, int]]) -> SamplingModule:
    """Model, diffusion, guide and init policy from the config, for the given batches."""
    model_cfg = plain(cfg.model)
    denoiser = load_denoiser(model_cfg, cfg.checkpoint)
    diffusion = build_diffusion_for(model_cfg, plain(cfg.diffusion), cfg.sampler.steps)
    shape = sample_shape(model_cfg, plain(cfg.dataset))
    context = {
        "sample_shape": shape,
        "num_steps": diffusion.num_timesteps,
        "classifier_ckpt": cfg.paths.classifier_ckpt,
        "diffusion": plain(cfg.diffusion),
        "seed": int(cfg.seed),
    }
    num_classes = (
        int(model_cfg["flags"].get("num_classes", 1000)) if is_class_conditional(model_cfg) else 0
    )
    return SamplingModule(
        denoiser,
        diffusion,
        shape,
        int(cfg.seed),
        ranges,
        sampler=cfg.sampler.name,
        eta=float(cfg.sampler.eta),
        clip_denoised=bool(cfg.sampler.clip_denoised),
        guide=build_guide(plain(cfg.guidance), plain(cfg.schedule), context),
        init=Initialisation(float(cfg.init.gamma), int(cfg.init.skip)),
        num_classes=num_classes,
        progress=bool(cfg.progress),
    )


def sample_task(cfg: DictConfig) -> Path:
    """Draw ``num_samples`` into ``run_dir``; finished shards are kept and skipped on relaunch.

    Returns:
        The merged ``samples.npz``.
    """
    check_sampling_config(cfg)
    folder = run_dir(cfg)
    shards = folder / "shards"
    ranges = pending_ranges(shards, int(cfg.num_samples), int(cfg.batch_size))
    module = build_sampling_module(cfg, ranges)
    trainer = None
    if ranges:
        trainer = make_trainer(
            cfg, folder, "sample", callbacks=[ShardWriter(shards)], inference_mode=False
        )
        trainer.predict(module, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return folder / "samples.npz"
    out = merge_shards(shards, int(cfg.num_samples), folder / "samples.npz")
    samples = np.load(out)["arr_0"]
    mixture = build_dataset(plain(cfg.dataset)).mixture if cfg.dataset.name == "toy2d" else None
    picture = save_picture(
        samples, folder / ("scatter.png" if samples.ndim == 2 else "grid.png"), mixture
    )
    log.info("samples: %s, picture: %s", out, picture)
    values = evaluate_task(cfg) if cfg.evaluate else {}
    if trainer is not None:
        log_results(trainer.logger, values, picture)
    return out

"""sample.py: draw N samples into a run folder (shards → samples.npz → picture), resumably."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from minority.data.images import read_npz
from minority.diffusion.build import build_diffusion_for
from minority.errors import require
from minority.guidance.build import TermContext
from minority.instantiate import instantiate
from minority.lit.build import build_dataset, build_guide, build_init, load_denoiser
from minority.lit.data import item_dataset
from minority.lit.sampling import SamplingModule, ShardWriter, pending_ranges
from minority.models.build import is_class_conditional
from minority.models.runtime import prepare_network
from minority.outputs import merge_shards, save_picture
from minority.sampling.base import Sampler
from minority.tasks.common import (
    adopt_diffusers_folder,
    close_logger,
    log,
    make_trainer,
    plain,
    run_dir,
)
from minority.tasks.evaluate import evaluate_task, run_title
from minority.tasks.provenance import prepare_run_folder, run_folder_lock, sampling_provenance
from minority.tasks.tracking import log_results, log_stage, sample_run_artifacts


def check_sampling_config(cfg: DictConfig) -> None:
    require(int(cfg.num_samples) > 0, f"num_samples must be positive (got {cfg.num_samples}).")
    require(int(cfg.batch_size) > 0, f"batch_size must be positive (got {cfg.batch_size}).")


def sample_shape(
    model_cfg: dict, dataset_cfg: dict, cfg: DictConfig | None = None
) -> tuple[int, ...]:
    """One sample's shape: from the ADM flags, else from the dataset's first item (image
    formats read that one image, not the whole set; ``cfg``: the whole config, for its
    ``allowed_targets``)."""
    flags = model_cfg.get("flags")
    if flags:
        size = int(flags.get("large_size", flags.get("image_size")))
        return (int(flags.get("in_channels", 3)), size, size)
    return tuple(item_dataset(dataset_cfg, cfg)[0][0].shape)


def low_res_conditions(cfg: DictConfig, model_cfg: dict) -> tuple[np.ndarray | None, Tensor | None]:
    """A super-resolution model's inputs: images i < num_samples of ``upsample.low_res_npz``
    (uint8 N×h×w×C) and, when class-conditional, their labels (int64 (N,)); (None, None) for
    other models. The archive is guided-diffusion's format, e.g. a 64×64 run's samples.npz.
    """
    if model_cfg.get("arch") != "adm_sr":
        return None, None
    from minority.models.adm import SRFlags

    path = OmegaConf.select(cfg, "upsample.low_res_npz", default=None)
    require(
        path is not None,
        "A super-resolution model needs upsample.low_res_npz=<samples.npz> of the low-res images.",
    )
    flags, n = SRFlags.coerce(model_cfg["flags"]), int(cfg.num_samples)
    images, labels = read_npz(Path(path), flags.class_cond)
    size = (flags.small_size, flags.small_size, flags.in_channels)
    require(
        images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == size,
        f"The low-res archive {path} holds {images.dtype} images of shape {images.shape[1:]}; "
        f"the upsampler takes uint8 {'×'.join(map(str, size))} images (small_size).",
    )
    require(
        len(images) >= n,
        f"The low-res archive {path} holds {len(images)} images, fewer than num_samples={n}.",
    )
    if labels is None:
        return images[:n], None
    labels = labels[:n]
    require(
        labels.shape == (n,) and labels.min() >= 0 and labels.max() < flags.num_classes,
        f"The labels (arr_1) of {path} are not classes in 0..{flags.num_classes - 1}; the "
        "class-conditional upsampler needs those of the low-res samples.",
    )
    return images[:n], torch.from_numpy(labels.astype(np.int64))


# Keys of a sampler node that are not the sampler's own: the grid (sampler.steps, which
# respaces the diffusion) and the label run names use (sampler.name).
GRID_KEYS = ("name", "steps")


def build_sampler(cfg: DictConfig) -> Sampler:
    """The sampler ``cfg.sampler`` names by its ``_target_`` (its other keys but the grid and
    the name are the constructor's arguments), e.g. ``minority.sampling.ddim.DDIM(eta=0.0)``."""
    node = {key: value for key, value in plain(cfg.sampler).items() if key not in GRID_KEYS}
    sampler = instantiate(node, cfg)
    require(
        isinstance(sampler, Sampler),
        f"sampler._target_={node['_target_']} is not a minority.sampling.base.Sampler.",
    )
    return sampler


def build_sampling_module(cfg: DictConfig, ranges: list[tuple[int, int]]) -> SamplingModule:
    """Model, diffusion, sampler, guide and init policy from the config, for the given
    batches."""
    model_cfg = plain(cfg.model)
    low_res, labels = low_res_conditions(cfg, model_cfg)
    denoiser = load_denoiser(model_cfg, cfg.checkpoint, plain(cfg.diffusion), cfg)
    denoiser.net = prepare_network(denoiser.net, **plain(cfg.precision))
    diffusion = build_diffusion_for(model_cfg, plain(cfg.diffusion), cfg.sampler.steps)
    shape = sample_shape(model_cfg, plain(cfg.dataset), cfg)
    context = TermContext(
        sample_shape=shape,
        num_steps=diffusion.num_timesteps,
        classifier_ckpt=cfg.paths.classifier_ckpt,
        diffusion=plain(cfg.diffusion),
        seed=int(cfg.seed),
    )
    num_classes = (
        int(model_cfg["flags"].get("num_classes", 1000)) if is_class_conditional(model_cfg) else 0
    )
    return SamplingModule(
        denoiser,
        diffusion,
        shape,
        int(cfg.seed),
        ranges,
        sampler=build_sampler(cfg),
        guide=build_guide(plain(cfg.guidance), plain(cfg.schedule), context, cfg),
        init=build_init(plain(cfg.init), cfg),
        num_classes=num_classes,
        labels=labels,
        low_res=low_res,
        progress=bool(cfg.progress),
    )


# The results a sample run leaves (cleared by overwrite=true); a run writes the first ones anew,
# and the evaluation's when it evaluates.
MERGED = ("samples.npz", "grid.png", "scatter.png")
EVALUATION = ("metrics.json", "distributions.png", "per_sample.npz")
SAMPLE_RESULTS = ("shards", *MERGED, *EVALUATION)


def sample_task(cfg: DictConfig) -> Path:
    """Draw ``num_samples`` into ``run_dir``; finished shards of the same configuration are kept
    and skipped on relaunch, those of another configuration stop the run (module
    :mod:`minority.tasks.provenance`).

    Returns:
        The merged ``samples.npz``.
    """
    adopt_diffusers_folder(cfg, cfg.checkpoint)
    check_sampling_config(cfg)
    folder = Path(cfg.run_dir)
    provenance = sampling_provenance(cfg)
    with run_folder_lock(folder):
        replaced = MERGED + EVALUATION if cfg.evaluate else MERGED
        prepare_run_folder(folder, provenance, bool(cfg.overwrite), SAMPLE_RESULTS, replaced)
        run_dir(cfg)
        return draw_samples(cfg, folder)


def draw_samples(cfg: DictConfig, folder: Path) -> Path:
    """Draw the missing shards, merge them, save the picture and evaluate if asked."""
    shards = folder / "shards"
    ranges = pending_ranges(shards, int(cfg.num_samples), int(cfg.batch_size))
    if not ranges:
        log.info("all %d samples of this configuration are already drawn", int(cfg.num_samples))
    module = build_sampling_module(cfg, ranges)
    trainer = None
    if ranges:
        trainer = make_trainer(
            cfg,
            folder,
            "sample",
            callbacks=[ShardWriter(shards)],
            inference_mode=False,
            use_distributed_sampler=False,
        )
        trainer.predict(module, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return folder / "samples.npz"
    out = merge_shards(shards, int(cfg.num_samples), folder / "samples.npz")
    with np.load(out) as archive:
        samples, labels = archive["arr_0"], archive["arr_1"]
    mixture = (
        build_dataset(plain(cfg.dataset), cfg).mixture if cfg.dataset.name == "toy2d" else None
    )
    picture = save_picture(
        samples,
        folder / ("scatter.png" if samples.ndim == 2 else "grid.png"),
        mixture,
        title=run_title(cfg, folder.name),
        labels=labels,
    )
    log.info("samples: %s, picture: %s", out, picture)
    values = evaluate_task(cfg) if cfg.evaluate else {}
    if trainer is not None:
        plots = {"samples": picture, "distributions": folder / "distributions.png"}
        log_results(trainer.loggers, values, {k: p for k, p in plots.items() if p.is_file()})
        log_stage(trainer.loggers, *sample_run_artifacts(cfg, folder, cfg.checkpoint))
    close_logger(trainer)
    return out


def chosen_metric(cfg: DictConfig) -> float | None:
    """The run's ``optimized_metric`` from its ``metrics.json`` (what a Hydra sweeper such as
    Optuna minimises or maximises); None when no metric is chosen."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    path = Path(cfg.run_dir) / "metrics.json"
    require(cfg.evaluate and path.is_file(), "optimized_metric needs evaluate=true.")
    values = json.loads(path.read_text())
    require(
        values.get(name) is not None,
        f"optimized_metric '{name}' is not among this run's metrics ({', '.join(sorted(values))}).",
    )
    return float(values[name])

"""Typed schemas of the configs: a value of the wrong type fails when the config is composed.

The dataclasses here are registered in Hydra's ConfigStore and named at the head of the
defaults lists of ``conf/{sample,train,evaluate}.yaml`` and of the ``guidance``, ``sampler`` and
``init`` groups, so ``num_samples=abc`` or ``guidance.scale=abc`` stop with Hydra's message
before anything loads. Every field is ``MISSING`` here: the YAML files are the one source of
every default. Group nodes whose content another group decides are typed ``Any``.

:func:`check_values` holds the checks a type cannot express (ranges, the forms of
``guidance.target_class``); the entry points run it before the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from minority.errors import require


@dataclass
class _Stage:
    """Keys every entry point's config has."""

    paths: Any = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    scores: Any = MISSING
    classifier: Any = MISSING
    run_dir: Any = MISSING
    weights: Any = MISSING
    allowed_targets: list[str] = MISSING  # module prefixes _target_ may name beyond minority


@dataclass
class _Run(_Stage):
    """Keys of the stages that run a Lightning Trainer (train.py, sample.py)."""

    diffusion: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: dict[str, Any] = MISSING  # name -> a node with _target_
    seed: int = MISSING
    stage_dir: str = MISSING
    train: Any = MISSING  # task=diffusion's settings; presets such as experiment=digits set them


@dataclass
class TrainSchema(_Run):
    task: str = MISSING
    steps_of_task: Any = MISSING
    resume: str = MISSING
    ckpt_path: str | None = MISSING
    checkpoint: Any = MISSING  # a public denoiser the later stages read (experiment presets)


@dataclass
class SampleSchema(_Run):
    sampler: Any = MISSING
    guidance: Any = MISSING
    schedule: Any = MISSING
    init: Any = MISSING
    metrics: Any = MISSING
    num_samples: int = MISSING
    batch_size: int = MISSING
    checkpoint: str = MISSING
    progress: bool = MISSING
    upsample: Any = MISSING
    evaluate: bool = MISSING
    table: str = MISSING
    run_name: str = MISSING
    overwrite: bool = MISSING
    precision: Any = MISSING
    optimized_metric: str | None = MISSING


@dataclass
class EvaluateSchema(_Stage):
    metrics: Any = MISSING
    npz: str | None = MISSING
    table: str = MISSING


@dataclass
class NoGuidanceSchema:
    name: str = MISSING
    scale: float = MISSING


@dataclass
class MinorityGuidanceSchema(NoGuidanceSchema):
    _target_: str = MISSING
    target_class: Any = MISSING  # null, an int, or [low, high]: see check_values
    classifier_ckpt: str | None = MISSING
    extractor_weights: str | None = MISSING


@dataclass
class SelfGuidanceSchema(NoGuidanceSchema):
    _target_: str = MISSING
    distance: str = MISSING
    p_ratio: float = MISSING
    perturb_t: int | None = MISSING
    num_mc_samples: int = MISSING
    normalize: bool = MISSING
    clip_denoised: bool = MISSING
    lpips_weights: str | None = MISSING


@dataclass
class SamplerSchema:
    """Keys of every sampler: ``_target_`` builds it (its other keys but ``name`` and
    ``steps`` are the constructor's arguments, :func:`minority.tasks.sample.build_sampler`)."""

    _target_: str = MISSING
    name: str = MISSING
    steps: str = MISSING
    clip_denoised: bool = MISSING


@dataclass
class DDIMSamplerSchema(SamplerSchema):
    eta: float = MISSING  # DDIM's alone: the other samplers refuse sampler.eta at composition


@dataclass
class InitSchema:
    _target_: str = MISSING
    name: str = MISSING
    gamma: float = MISSING
    skip: int = MISSING


@dataclass
class ScheduleSchema:
    _target_: str = MISSING
    kind: str = MISSING
    every: int = MISSING
    stop_fraction: float = MISSING


@dataclass
class DiffusersModelSchema:
    arch: str = MISSING
    flags: dict[str, Any] | None = MISSING  # filled in from the model's folder at run start


@dataclass
class _BuiltModelSchema:
    _target_: str = MISSING
    arch: str = MISSING


@dataclass
class MLPModelSchema(_BuiltModelSchema):
    dim: int = MISSING
    hidden: int = MISSING
    depth: int = MISSING
    learn_sigma: bool = MISSING


@dataclass
class ADMModelSchema(_BuiltModelSchema):
    flags: dict[str, Any] = MISSING  # guided-diffusion's flags, checked when the UNet is built


@dataclass
class _DatasetSchema:
    _target_: str = MISSING
    name: str = MISSING
    seed: int = MISSING


@dataclass
class Toy2DSchema(_DatasetSchema):
    num_samples: int = MISSING
    means: list[list[float]] = MISSING
    stds: list[float] = MISSING
    weights: list[float] = MISSING


@dataclass
class DigitsSchema(_DatasetSchema):
    keep_fraction: dict[int, float] = MISSING


@dataclass
class ImagesSchema(_DatasetSchema):
    format: str = MISSING
    root: str = MISSING
    image_size: int | None = MISSING  # None: the stored size, which every image must share
    class_cond: bool = MISSING
    random_flip: bool = MISSING
    max_images: int | None = MISSING
    num_workers: int = MISSING


@dataclass
class CelebASchema(ImagesSchema):
    crop: int = MISSING


@dataclass
class CIFAR10Schema(ImagesSchema):
    split: str = MISSING


@dataclass
class ImageNetSchema(ImagesSchema):
    path: str | None = MISSING  # an .npz instead of root, with format=npz
    classes: Any = MISSING  # null, a list of synsets or a file naming one per line


@dataclass
class LoggerSchema:
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class WandbLoggerSchema(LoggerSchema):
    project: str = MISSING
    entity: str | None = MISSING
    mode: str = MISSING
    group: str | None = MISSING
    job_type: str | None = MISSING
    tags: list[str] = MISSING
    log_model: Any = MISSING  # false, true or "all"
    id: str | None = MISSING
    resume: str | None = MISSING


@dataclass
class ManyLoggersSchema:
    name: str = MISSING
    loggers: dict[str, Any] = MISSING  # name -> a logger node


@dataclass
class ScoresSchema:
    distance: str = MISSING
    perturb_t: int = MISSING
    num_draws: int = MISSING
    clip_denoised: bool = MISSING
    num_classes: int = MISSING
    val_fraction: float = MISSING
    batch_size: int = MISSING
    lpips_weights: str | None = MISSING


@dataclass
class ClassifierSchema:
    arch: str = MISSING
    arch_kwargs: dict[str, Any] = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    max_steps: int = MISSING
    batch_size: int = MISSING
    augment: str | None = MISSING
    random_flip: bool = MISSING


@dataclass
class MetricsSchema:
    columns: dict[str, Any] = MISSING  # column -> {features, metric, reference}
    k_avgknn: int = MISSING
    k_lof: int = MISSING
    k_rarity: int = MISSING
    k_manifold: int = MISSING
    unique_fraction: float = MISSING
    unique_features: str = MISSING
    ground_truth: bool = MISSING
    weights: dict[str, Any] = MISSING  # feature name -> weight file (null: standard places)
    device: str = MISSING
    cache_dir: str = MISSING


SCHEMAS: dict[tuple[str, str], type] = {
    ("schema", "train"): TrainSchema,
    ("schema", "sample"): SampleSchema,
    ("schema", "evaluate"): EvaluateSchema,
    ("schema/guidance", "none"): NoGuidanceSchema,
    ("schema/guidance", "minority"): MinorityGuidanceSchema,
    ("schema/guidance", "self"): SelfGuidanceSchema,
    ("schema/sampler", "ddpm"): SamplerSchema,
    ("schema/sampler", "ddim"): DDIMSamplerSchema,
    ("schema/sampler", "dpmpp2m"): SamplerSchema,
    ("schema", "init"): InitSchema,
    ("schema", "schedule"): ScheduleSchema,
    ("schema/model", "mlp"): MLPModelSchema,
    ("schema/model", "adm"): ADMModelSchema,
    ("schema/model", "adm_sr"): ADMModelSchema,
    ("schema/model", "diffusers"): DiffusersModelSchema,
    ("schema/dataset", "toy2d"): Toy2DSchema,
    ("schema/dataset", "digits"): DigitsSchema,
    ("schema/dataset", "images"): ImagesSchema,
    ("schema/dataset", "celeba"): CelebASchema,
    ("schema/dataset", "cifar10"): CIFAR10Schema,
    ("schema/dataset", "imagenet"): ImageNetSchema,
    ("schema/logger", "csv"): LoggerSchema,
    ("schema/logger", "tensorboard"): LoggerSchema,
    ("schema/logger", "wandb"): WandbLoggerSchema,
    ("schema/logger", "many"): ManyLoggersSchema,
    ("schema", "scores"): ScoresSchema,
    ("schema", "classifier"): ClassifierSchema,
    ("schema", "metrics"): MetricsSchema,
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore (the configs name them in their defaults)."""
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)


def _is_class(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_target_class(value: Any) -> None:
    pair = isinstance(value, ListConfig | list) and len(value) == 2
    require(
        value is None or _is_class(value) or (pair and all(map(_is_class, value))),
        "guidance.target_class must be an integer class, null (the most unique class) or a "
        f"[low, high] range of classes (got {value!r}).",
    )


def check_values(cfg: DictConfig) -> None:
    """Checks no type expresses, run before any model loads.

    Raises:
        UserError: a ``_target_`` outside the allow-list, a negative seed, a non-positive
            training batch size, a target class that is none of its three forms, a sampler
            that does not build (e.g. η outside [0, 1]), or a non-finite guidance scale or γ.
    """
    from minority.instantiate import allowed_prefixes, check_targets
    from minority.lit.build import build_init, build_schedule
    from minority.tasks.sample import build_sampler

    check_targets(cfg, allowed_prefixes(cfg))
    seed = OmegaConf.select(cfg, "seed")
    require(seed is None or seed >= 0, f"seed must be a non-negative integer (got {seed}).")
    for key in ("train.batch_size", "classifier.batch_size"):
        size = OmegaConf.select(cfg, key)
        require(size is None or int(size) > 0, f"{key} must be positive (got {size}).")
    if "sampler" in cfg:
        build_sampler(cfg)
        build_init(cfg.init, cfg)
        build_schedule(cfg.guidance.scale, cfg.schedule, cfg)
        _check_target_class(OmegaConf.select(cfg, "guidance.target_class"))

"""W&B runs that can be found again: named, grouped by sweep, typed by task, tagged; results in
the run summary; the stage's files as artifacts linked to the files that made them.

Works offline (``WANDB_MODE=offline``): everything, the input lineage included, goes into the
run's transaction log and reaches the server with ``wandb sync``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("minority")


@dataclass(frozen=True)
class LoggerContext:
    """What a logger's builder may need beyond its node: the whole config, the run folder, the
    task (``diffusion``, ``scores``, ``classifier``, ``sample``) and the step a resumed run
    continues from (None: a fresh run)."""

    cfg: DictConfig
    folder: Path
    job_type: str
    resume_step: int | None


# Stage files, by artifact kind: (W&B artifact type, the config path of the file).
STAGE_FILES = {
    "denoiser": ("model", "paths.diffusion_ckpt"),
    "scores": ("scores", "paths.scores"),
    "classifier": ("model", "paths.classifier_ckpt"),
}


def hydra_job() -> Any | None:
    """The running Hydra job's config (None outside ``@hydra.main``, e.g. under ``compose``)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_name() -> str | None:
    """The sweep folder's name when this job is one point of a Hydra multirun, else None."""
    from hydra.types import RunMode

    job = hydra_job()
    if job is None or job.mode != RunMode.MULTIRUN:
        return None
    return Path(job.sweep.dir).name


def work_name(cfg: DictConfig) -> str:
    """The dataset's work folder name (``toy2d``, ``digits_rare``): the stages' chain."""
    return Path(cfg.paths.work_dir).name


def run_identity(
    cfg: DictConfig,
    job_type: str,
    group: str | None = None,
    tags: Sequence[str] = (),
    wandb_job_type: str | None = None,
) -> dict[str, Any]:
    """W&B ``name``, ``group``, ``job_type`` and ``tags`` of this run.

    The name is ``run_name`` (or the task); a sweep point adds its folder's name (job number
    and overrides), so every point of a sweep is told apart. The group is ``group``, else the
    sweep (``<work>-<sweep folder>``), else the dataset's stage chain (``<work>``); the job
    type is ``wandb_job_type``, else the task. Tags: ``tags``, the work folder, the task, the
    experiment and the method's choices.
    """
    work, sweep = work_name(cfg), sweep_name()
    name = str(cfg.get("run_name") or job_type)
    if sweep:
        name = f"{name}-{Path(cfg.run_dir).name}"
    job = hydra_job()
    experiment = job.runtime.choices.get("experiment") if job is not None else None
    methods = [cfg[k].name for k in ("guidance", "sampler", "init") if k in cfg]
    tags = [*tags, work, job_type, experiment, *methods]
    return {
        "name": name,
        "group": group or (f"{work}-{sweep}" if sweep else work),
        "job_type": wandb_job_type or job_type,
        "tags": list(dict.fromkeys(str(t) for t in tags if t)),
    }


def wandb_logger(
    context: LoggerContext,
    project: str,
    entity: str | None,
    mode: str,
    group: str | None,
    job_type: str | None,
    tags: Sequence[str],
    log_model: bool | str,
    id: str | None,  # noqa: A002 (W&B's name)
    resume: str | None,
) -> Any:
    """A Lightning ``WandbLogger`` for this run (the options of ``logger/wandb.yaml``); its
    config is the composed one (resolved).

    The run is started here (rank 0 only, as Lightning would), silently: one log line says
    where it is.
    """
    import wandb
    from lightning_fabric.utilities.rank_zero import rank_zero_only
    from pytorch_lightning.loggers import WandbLogger

    folder = str(context.folder)
    if rank_zero_only.rank != 0:
        return WandbLogger(project=project, save_dir=folder, mode="disabled")
    identity = run_identity(context.cfg, context.job_type, group, tags, job_type)
    run = wandb.init(
        project=project,
        entity=entity,
        mode=mode,
        dir=folder,
        id=id,
        resume=resume,
        config=OmegaConf.to_container(context.cfg, resolve=True),
        settings=wandb.Settings(silent=True),
        **identity,
    )
    log.info("W&B run '%s' (group %s, %s) in %s", run.name, run.group, mode, run.dir)
    return WandbLogger(experiment=run, save_dir=folder, log_model=log_model)


def wandb_run(loggers: Any) -> Any | None:
    """The W&B run among a trainer's loggers (rank 0), or None."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers or ():
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None


def artifact_name(*parts: str) -> str:
    """A valid W&B artifact name (letters, digits, ``-``, ``_``, ``.``) from ``parts``."""
    return re.sub(r"[^\w.-]+", "-", "-".join(parts)).strip("-")


def file_artifact(name: str, kind: str, path: Path, reference: bool) -> Any:
    """A one-file artifact; ``reference`` records the file by path and checksum (large
    checkpoints), otherwise its content is uploaded."""
    import wandb

    artifact = wandb.Artifact(name, type=kind, metadata={"file": path.name})
    if reference:
        artifact.add_reference(path.resolve().as_uri(), name=path.name)
    else:
        artifact.add_file(str(path))
    return artifact


def stage_artifact(cfg: DictConfig, kind: str, path: str | Path | None = None) -> Any:
    """The artifact of a stage file (``denoiser``, ``scores``, ``classifier``).

    The file at its standard place in the work folder is ``<work>-<kind>``, so the training
    run that logs it and the sampling run that uses it name the same artifact; any other file
    (a downloaded checkpoint) is ``<kind>-<file stem>``.
    """
    from minority.models.build import checkpoint_file

    artifact_type, key = STAGE_FILES[kind]
    standard = Path(OmegaConf.select(cfg, key))
    path = Path(standard if path is None else path)
    path = path if path.is_dir() else checkpoint_file(path)  # a folder: a diffusers model
    same = path.resolve() == standard.resolve()
    name = artifact_name(work_name(cfg), kind) if same else artifact_name(kind, path.stem)
    return file_artifact(name, artifact_type, path, reference=True)


def use_inputs(run: Any, artifacts: list[Any]) -> None:
    """Declare ``artifacts`` as inputs of ``run`` (the W&B lineage graph).

    Offline, ``use_artifact`` refuses; the artifact is then logged with the use-after-commit
    flag, the record ``use_artifact`` itself writes for a new artifact, which ``wandb sync``
    replays as a use of this run.
    """
    for artifact in artifacts:
        if run.offline:
            run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
        else:
            run.use_artifact(artifact)


def log_stage(loggers: Any, inputs: list[Any], outputs: list[Any]) -> None:
    """Inputs used and outputs logged by this run (no-op without a W&B logger)."""
    run = wandb_run(loggers)
    if run is None:
        return
    use_inputs(run, inputs)
    for artifact in outputs:
        run.log_artifact(artifact)


def log_results(loggers: Any, values: Mapping[str, Any], pictures: Mapping[str, Path]) -> None:
    """A run's metrics into its summary (one value each, not a one-point history), the
    metrics as a one-row table, and its pictures (no-op without a W&B logger)."""
    run = wandb_run(loggers)
    if run is None:
        return
    import wandb

    from minority.metrics.outputs import plain as json_plain

    if values:
        clean = json_plain(dict(values))
        run.summary.update(clean)
        run.log({"metrics_table": wandb.Table(columns=list(clean), data=[list(clean.values())])})
    run.log({key: wandb.Image(str(path), caption=path.name) for key, path in pictures.items()})


def sample_run_artifacts(cfg: DictConfig, folder: Path, checkpoint: Path) -> tuple[list, list]:
    """(inputs, outputs) of a sampling run: the denoiser (and the minority classifier when
    guidance uses it) in; ``samples.npz`` and ``metrics.json`` (when evaluated) out."""
    inputs = [stage_artifact(cfg, "denoiser", checkpoint)]
    if cfg.guidance.name == "minority":
        classifier = cfg.guidance.classifier_ckpt or cfg.paths.classifier_ckpt
        inputs.append(stage_artifact(cfg, "classifier", classifier))
    run = artifact_name(work_name(cfg), folder.name)
    outputs = [file_artifact(f"{run}-samples", "samples", folder / "samples.npz", reference=False)]
    if (folder / "metrics.json").is_file() and cfg.evaluate:
        outputs.append(
            file_artifact(f"{run}-metrics", "metrics", folder / "metrics.json", reference=False)
        )
    return inputs, outputs

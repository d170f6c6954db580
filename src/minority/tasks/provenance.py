"""Each stage's provenance, and the rules that keep a folder's files true to its config.

* Sample runs: a run folder holds ``provenance.json``; its shards are reused only when the new
  run's fingerprint matches, else the run stops (another ``run_name``, or ``overwrite=true``,
  which clears the folder's outputs first). A lock file refuses a second run in the same folder
  while one is writing there.
* Trained stages (denoiser, classifier, scores): the output file records its provenance; a
  rerun with the same fingerprint does nothing, a Lightning checkpoint is resumed only when it
  was saved with the same fingerprint.

Only rank 0 checks and writes; the other ranks of a DDP run start after it (Lightning launches
them when the Trainer starts) and use what rank 0 prepared.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from minority.errors import UserError
from minority.models.build import checkpoint_file
from minority.models.diffusers_unet import DIFFUSERS_ARCH
from minority.provenance import (
    describe_differences,
    file_fingerprint,
    read_json,
    record,
    write_json,
)
from minority.tasks.common import is_rank_zero, log, plain

PROVENANCE_FILE = "provenance.json"
LOCK_FILE = "run.lock"
SAMPLING_KEYS = (
    "model",
    "diffusion",
    "dataset",
    "guidance",
    "schedule",
    "init",
    "sampler",
    "precision",
)


def inputs_present(paths: Mapping[str, Any]) -> dict[str, str]:
    """Fingerprints of the given input files that exist (a missing one is reported by the
    stage that reads it)."""
    return {k: file_fingerprint(p) for k, p in paths.items() if p and Path(p).is_file()}


def denoiser_fingerprint(cfg: DictConfig, path: str | Path) -> str:
    """The fingerprint of the denoiser a stage reads: its checkpoint file, or the whole folder
    of a diffusers model."""
    if cfg.model.get("arch") == DIFFUSERS_ARCH:
        return file_fingerprint(path)
    return file_fingerprint(checkpoint_file(path))


def sampling_provenance(cfg: DictConfig) -> dict:
    """What a sample run's content depends on: model, diffusion, data, guidance, schedule,
    init, sampler, seed, num_samples, and the files it reads (denoiser, minority classifier,
    low-res archive). Batch size, progress, logger, evaluation and paths are left out."""
    settings = {k: plain(cfg[k]) for k in SAMPLING_KEYS}
    settings["guidance"].pop("classifier_ckpt", None)  # the file's fingerprint stands for it
    settings.update(seed=int(cfg.seed), num_samples=int(cfg.num_samples))
    inputs: dict[str, Any] = {}
    if cfg.guidance.name == "minority":
        inputs["classifier"] = cfg.guidance.classifier_ckpt or cfg.paths.classifier_ckpt
    inputs["low_res"] = OmegaConf.select(cfg, "upsample.low_res_npz", default=None)
    upstream = {"denoiser": denoiser_fingerprint(cfg, cfg.checkpoint)}
    return record(settings, {**upstream, **inputs_present(inputs)})


def denoiser_provenance(cfg: DictConfig) -> dict:
    """What a trained denoiser depends on: model, diffusion, data, seed and training settings."""
    settings = {k: plain(cfg[k]) for k in ("model", "diffusion", "dataset", "train")}
    settings["train"].pop("preview", None)  # pictures while training: no effect on the weights
    settings.update(seed=int(cfg.seed), max_steps=int(cfg.trainer.max_steps))
    return record(settings)


def scores_provenance(cfg: DictConfig) -> dict:
    """What minority scores depend on: the denoiser file, its diffusion, data, seed and score
    settings (not the batch size: noise is seeded per data index)."""
    scores = {k: v for k, v in plain(cfg.scores).items() if k != "batch_size"}
    settings = {
        "diffusion": plain(cfg.diffusion),
        "dataset": plain(cfg.dataset),
        "scores": scores,
        "seed": int(cfg.seed),
    }
    denoiser = denoiser_fingerprint(cfg, cfg.paths.diffusion_ckpt)
    return record(settings, {"denoiser": denoiser})


def classifier_provenance(cfg: DictConfig, max_steps: int) -> dict:
    """What a minority classifier depends on: its settings, the scores file, data, diffusion,
    seed and the number of training steps."""
    settings = {k: plain(cfg[k]) for k in ("classifier", "diffusion", "dataset")}
    settings.update(seed=int(cfg.seed), max_steps=int(max_steps))
    return record(settings, {"scores": file_fingerprint(cfg.paths.scores)})


# Sample run folders --------------------------------------------------------------------------


def _lock_holder(lock: Path) -> dict | None:
    """The live run holding ``lock`` ({"pid", "host"}), or None when the lock is stale."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    if holder.get("host") != socket.gethostname():
        return holder  # cannot tell whether a process on another machine still runs
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return holder


@contextmanager
def run_folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/run.lock`` while a run writes there; a second run is refused."""
    if not is_rank_zero():
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            with open(lock, "x") as handle:
                handle.write(content)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise UserError(
                    f"Run folder {folder} is in use by another run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}); wait for it to finish, choose another run_name, or "
                    f"delete {lock} if that run is gone."
                ) from None
            lock.unlink(missing_ok=True)
    else:
        raise UserError(f"Could not lock run folder {folder}; delete {lock} and rerun.")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def remove_outputs(folder: Path, names: Sequence[str]) -> None:
    """Delete the named files or folders of ``folder`` (absent ones are skipped)."""
    for name in names:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_run_folder(
    folder: Path,
    provenance: Mapping[str, Any],
    overwrite: bool,
    results: Sequence[str],
    replaced: Sequence[str],
) -> None:
    """Make ``folder`` hold only files of this configuration (rank 0; a no-op elsewhere).

    Args:
        folder: the run folder.
        provenance: this run's record (written to ``provenance.json``).
        overwrite: clear the ``results`` of another configuration instead of stopping.
        results: every result the run may leave (shards, archives, pictures, metrics).
        replaced: the outputs this run writes anew, deleted before it starts so that a
            killed run never leaves an old one that looks complete.

    Raises:
        UserError: the folder holds results of another configuration and ``overwrite`` is off.
    """
    if not is_rank_zero():
        return
    old = read_json(folder / PROVENANCE_FILE)
    holds_results = any((folder / name).exists() for name in results)
    if holds_results and (old or {}).get("fingerprint") != provenance["fingerprint"]:
        if not overwrite:
            what = (
                f"results of other settings ({describe_differences(old, provenance)})"
                if old
                else "results without a provenance record"
            )
            raise UserError(
                f"Run folder {folder} holds {what}; choose another run_name, or pass "
                "overwrite=true to clear it first."
            )
        log.info("overwrite=true: clearing the results of other settings in %s", folder)
        remove_outputs(folder, results)
    remove_outputs(folder, replaced)
    write_json(folder / PROVENANCE_FILE, provenance)


# Trained stages ------------------------------------------------------------------------------


def recorded_provenance(path: str | Path) -> dict | None:
    """The provenance saved in a stage's ``.pt`` file, or None (absent file, older file)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable output is simply not up to date
        return None
    return content.get("provenance") if isinstance(content, dict) else None


def up_to_date(path: str | Path, provenance: Mapping[str, Any], stage: str) -> bool:
    """Whether ``path`` already holds this stage's result for these settings (then say so)."""
    saved = recorded_provenance(path)
    if saved is None or saved.get("fingerprint") != provenance["fingerprint"]:
        return False
    log.info(
        "%s %s is up to date (fingerprint %s); nothing to do.",
        stage,
        path,
        provenance["fingerprint"],
    )
    return True


class RecordProvenance(pl.Callback):
    """Store the stage's provenance in every Lightning checkpoint it saves."""

    def __init__(self, provenance: Mapping[str, Any]):
        self.provenance = dict(provenance)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["provenance"] = self.provenance


class Resume(NamedTuple):
    """A Lightning checkpoint to resume from and the training step it was saved at."""

    path: str
    step: int


def _read_lightning_checkpoint(path: Path) -> dict:
    try:
        content = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}); delete it to train afresh."
        ) from None
    if not isinstance(content, dict):
        raise UserError(f"Checkpoint {path} is not a Lightning checkpoint; delete it.")
    return content


def resume_checkpoint(
    cfg: DictConfig, folder: Path, provenance: Mapping[str, Any]
) -> Resume | None:
    """The Lightning checkpoint to resume from: ``ckpt_path`` if given, else (``resume=auto``)
    the run folder's ``checkpoints/last.ckpt``; None to train from scratch.

    Raises:
        UserError: ``resume`` is neither auto nor never, or the checkpoint is unreadable or was
            saved with other settings (naming them).
    """
    resume = str(cfg.resume)
    if resume not in ("auto", "never"):
        raise UserError(f"resume must be auto or never (got {resume}).")
    given = cfg.get("ckpt_path")
    if given:
        path, way_out = Path(given), "give a checkpoint of these settings, or no ckpt_path"
        if not path.is_file():
            raise UserError(f"ckpt_path {path} does not exist.")
    else:
        path = folder / "checkpoints" / "last.ckpt"
        way_out = "pass resume=never to train afresh (replacing it)"
        if resume == "never" or not path.is_file():
            return None
    content = _read_lightning_checkpoint(path)
    saved = content.get("provenance")
    if (saved or {}).get("fingerprint") != provenance["fingerprint"]:
        what = describe_differences(saved, provenance) if saved else "no provenance record"
        raise UserError(f"Checkpoint {path} was saved with other settings ({what}); {way_out}.")
    step = int(content.get("global_step", 0))
    log.info("resuming from %s (step %d)", path, step)
    return Resume(str(path), step)

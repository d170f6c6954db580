"""Fingerprints, the run-folder lock, load-time checks, resumed logs and resumed sample batches."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minority.errors import UserError
from minority.lit.build import build_denoiser, load_denoiser
from minority.lit.sampling import pending_ranges
from minority.models.build import save_checkpoint
from minority.outputs import write_shard
from minority.provenance import (
    describe_differences,
    differing_keys,
    file_fingerprint,
    fingerprint,
    record,
)
from minority.tasks.csv_log import ResumedExperimentWriter
from minority.tasks.provenance import LOCK_FILE, run_folder_lock


def test_fingerprint_is_the_hash_of_the_canonical_json() -> None:
    value = {"b": [1, 2.5], "a": {"y": None, "x": "s"}}
    canonical = '{"a":{"x":"s","y":null},"b":[1,2.5]}'
    assert fingerprint(value) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert fingerprint({"a": {"x": "s", "y": None}, "b": [1, 2.5]}) == fingerprint(value)
    assert fingerprint({**value, "b": [1, 2.0]}) != fingerprint(value)


def test_a_record_covers_settings_and_upstream_files(tmp_path: Path) -> None:
    file = tmp_path / "denoiser.pt"
    file.write_bytes(b"weights")
    assert file_fingerprint(file) == hashlib.sha256(b"weights").hexdigest()[:16]
    base = record({"seed": 0, "guidance": {"scale": 0.0}}, {"denoiser": file_fingerprint(file)})
    file.write_bytes(b"other weights")
    retrained = record(
        {"seed": 0, "guidance": {"scale": 0.0}}, {"denoiser": file_fingerprint(file)}
    )
    rescaled = record({"seed": 0, "guidance": {"scale": 8.0}}, base["upstream"])
    assert len({base["fingerprint"], retrained["fingerprint"], rescaled["fingerprint"]}) == 3
    assert differing_keys(base, retrained) == ["upstream.denoiser"]
    assert differing_keys(base, rescaled) == ["guidance.scale"]
    assert describe_differences(base, rescaled) == "guidance.scale: 0.0 -> 8.0"
    assert differing_keys(base, record(base["settings"], base["upstream"])) == []


def test_a_missing_input_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        file_fingerprint(tmp_path / "absent.pt")


def test_a_held_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(UserError, match="in use by another run"), run_folder_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_FILE).exists()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": finished.pid, "host": holder["host"]}))
    with run_folder_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_denoiser_trained_on_another_schedule_is_refused_at_load(tmp_path: Path) -> None:
    model = {
        "_target_": "minority.models.small.MLPNet",
        "arch": "mlp",
        "dim": 2,
        "hidden": 16,
        "depth": 1,
    }
    trained = {"noise_schedule": "cosine", "diffusion_steps": 1000}
    path = save_checkpoint(
        tmp_path / "d.pt", build_denoiser(model), {"model": model, "diffusion": trained}
    )
    load_denoiser(model, path, trained)
    with pytest.raises(UserError, match="diffusion.noise_schedule=cosine"):
        load_denoiser(model, path, {**trained, "noise_schedule": "linear"})
    with pytest.raises(UserError, match="diffusion.diffusion_steps=1000"):
        load_denoiser(model, path, {**trained, "diffusion_steps": 500})


def test_a_resumed_csv_log_keeps_the_rows_before_the_resumed_step(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss\n0,9,1.0\n0,19,0.9\n0,29,0.8\n")
    writer = ResumedExperimentWriter(str(tmp_path), resume_step=20)
    writer.log_metrics({"train/loss": 0.5, "lr": 0.1, "epoch": 0}, step=29)
    writer.save()
    with log.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["train/loss"], r["lr"]) for r in rows] == [
        ("9", "1.0", ""),
        ("19", "0.9", ""),
        ("29", "0.5", "0.1"),
    ]
    ResumedExperimentWriter(str(tmp_path), resume_step=None)
    assert not log.exists()


def test_pending_batches_fill_the_gaps_left_by_shards_of_another_batch_size(
    tmp_path: Path,
) -> None:
    for start, end in ((0, 10), (20, 30)):
        write_shard(tmp_path, start, end, np.zeros((end - start, 2)), np.zeros(end - start))
    assert pending_ranges(tmp_path, 45, 6) == [(10, 16), (16, 20), (30, 36), (36, 42), (42, 45)]
    assert pending_ranges(tmp_path / "absent", 14, 6) == [(0, 6), (6, 12), (12, 14)]


def test_a_checkpoint_from_before_targets_loads_and_another_backbone_is_refused(
    tmp_path: Path,
) -> None:
    legacy = {"arch": "mlp", "dim": 2, "hidden": 16, "depth": 1}  # what checkpoints recorded
    model = {"_target_": "minority.models.small.MLPNet", **legacy}
    denoiser = build_denoiser(model)
    path = save_checkpoint(tmp_path / "old.pt", denoiser, {"model": legacy})
    loaded = load_denoiser(model, path)
    for name, tensor in denoiser.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[name], tensor)
    other = {**model, "_target_": "my_lab.MLPNet"}  # the same arguments, another backbone
    path = save_checkpoint(tmp_path / "other.pt", denoiser, {"model": other})
    with pytest.raises(UserError, match="was trained with model"):
        load_denoiser(model, path)

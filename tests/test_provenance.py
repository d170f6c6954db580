"""Fingerprints: stable, sensitive to every setting, blind to key order; the run-folder lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minority.errors import UserError
from minority.provenance import (
    describe_differences,
    differing_keys,
    file_fingerprint,
    fingerprint,
    record,
)
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

"""Read an offline W&B run back from its transaction log (``run-<id>.wandb``).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version), then
32 KiB blocks of records, each a 7-byte header (CRC32, length, type: full / first / middle /
last) and a piece of a serialised ``wandb.proto`` ``Record``.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0:  # zero padding up to the next block
            position += left
            continue
        pending += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


class OfflineRun:
    """What one offline run recorded: its identity, summary, history keys and artifacts."""

    def __init__(self, folder: Path):
        (log,) = folder.glob("run-*.wandb")
        self.run = None
        self.summary: dict[str, object] = {}
        self.history_keys: set[str] = set()
        self.artifacts: list[wandb_internal_pb2.ArtifactRecord] = []
        self.counts: dict[str, int] = defaultdict(int)
        for record in records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
            elif kind == "summary":
                for item in record.summary.update:
                    key = item.key or ".".join(item.nested_key)
                    self.summary[key] = json.loads(item.value_json)
            elif kind == "history":
                self.history_keys |= {i.key or i.nested_key[0] for i in record.history.item}
            elif kind == "artifact":
                self.artifacts.append(record.artifact)

    def inputs(self) -> list[wandb_internal_pb2.ArtifactRecord]:
        return [a for a in self.artifacts if a.use_after_commit]

    def outputs(self) -> list[wandb_internal_pb2.ArtifactRecord]:
        return [a for a in self.artifacts if not a.use_after_commit and a.type != "run_table"]


def artifact_files(artifact: wandb_internal_pb2.ArtifactRecord) -> dict[str, str]:
    """Entry path -> its reference URI (or '' for an uploaded file)."""
    return {entry.path: entry.ref for entry in artifact.manifest.contents}

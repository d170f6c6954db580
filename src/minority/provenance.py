"""Provenance: a fingerprint of what determines a stage's output, and of the files it read.

A stage (denoiser, scores, classifier, sample run, evaluation) records
``{"fingerprint", "settings", "upstream"}``: ``settings`` are the config values its content
depends on (never presentation keys such as progress bars, loggers or paths), ``upstream`` the
fingerprints of the files it read. The fingerprint is a SHA-256 of the canonical JSON of both,
so equal fingerprints mean equal inputs, and a result is reused only when they match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minority.errors import UserError

DIGITS = 16  # hex digits kept: 64 bits, ample to tell configurations apart
CHUNK = 1 << 20
ABSENT = "<absent>"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(value: Any) -> str:
    """A stable hash (16 hex digits) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:DIGITS]


def file_fingerprint(path: str | Path) -> str:
    """A stable hash (16 hex digits) of a file's content, or of a folder's files (their paths
    relative to it and their contents, e.g. a diffusers model folder)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{path} does not exist (or is not a file); it is an input of this stage.")
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()[:DIGITS]


def record(settings: Mapping[str, Any], upstream: Mapping[str, str] | None = None) -> dict:
    """The provenance of a stage: its settings, its inputs' fingerprints and their fingerprint.

    Args:
        settings: the config values the stage's content depends on (plain JSON values).
        upstream: input name -> fingerprint (e.g. ``{"denoiser": file_fingerprint(ckpt)}``).
    """
    body = {"settings": dict(settings), "upstream": dict(upstream or {})}
    return {"fingerprint": fingerprint(body), **body}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _leaves(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """A record's settings and upstream fingerprints as dotted keys (``guidance.scale``,
    ``upstream.denoiser``)."""
    provenance = provenance or {}
    return flatten({**provenance.get("settings", {}), "upstream": provenance.get("upstream", {})})


def differing_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two provenance records."""
    a, b = _leaves(old), _leaves(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, ABSENT) != b.get(k, ABSENT))


def describe_differences(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], limit: int = 4
) -> str:
    """``"guidance.scale: 0.0 -> 8.0, seed: 0 -> 1"`` (first ``limit`` keys)."""
    a, b = _leaves(old), _leaves(new)
    keys = differing_keys(old, new)
    shown = [f"{k}: {a.get(k, ABSENT)} -> {b.get(k, ABSENT)}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


def read_json(path: str | Path) -> dict | None:
    """A provenance file's record, or None when it is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON; delete it (or the run folder).") from None


def write_json(path: str | Path, provenance: Mapping[str, Any]) -> Path:
    """Write a provenance record as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")
    partial.replace(path)
    return path

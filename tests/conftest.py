"""Shared fixtures: the golden reference folder and deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never reach the network: no weight file is downloaded (the download test serves its
# own file on 127.0.0.1). Subprocesses inherit this.
os.environ["MINORITY_OFFLINE"] = "1"

# Tests use tiny networks, which run fastest (and most reproducibly) on one thread.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(
    os.environ.get("MINORITY_GOLDEN", REPO.parent / "shared" / "reference" / "golden")
)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of the golden fixtures produced by the authors' code; skips when absent."""
    if not GOLDEN_DIR.is_dir():
        pytest.skip(f"golden fixtures not found at {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def load_golden(golden_dir: Path):
    """Load a golden ``.pt`` file by stem, cached per session."""
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(golden_dir / f"{name}.pt", weights_only=True)
        return cache[name]

    return load

"""The GPU benchmark's code paths, run on CPU at tiny shapes (benchmarks/bench_gpu.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402


def test_tiny_cpu_run_prints_one_row_per_arch_precision_and_job(capsys) -> None:
    precisions = "float32,bf16 convert"
    options = ["--device", "cpu", "--tiny", "--steps", "10", "--repeats", "1", "--max-batch", "1"]
    code = bench_gpu.main([*options, "--precisions", precisions])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and "images/s" not in line]
    assert len(rows) == len(bench_gpu.ARCHS) * 2 * len(bench_gpu.JOBS)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] == "1" and float(cells[5]) > 0 and cells[6] == "-"


def test_run_estimate_counts_guided_steps() -> None:
    assert bench_gpu.run_seconds("ancestral", 1.0, 3.0, 250) == 250
    assert bench_gpu.run_seconds("minority-guided", 1.0, 3.0, 250) == 750
    assert bench_gpu.run_seconds("self-guided n=5", 1.0, 3.0, 250) == 200 + 50 * 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only message")
def test_without_cuda_it_says_so_in_one_sentence(capsys) -> None:
    assert bench_gpu.main([]) == 2
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "No CUDA device" in out

"""AvgkNN + LOF: the metric suite's exact chunked kNN against scikit-learn, on the same data.

Random float32 features (N real, N generated, D dims) are written once; each implementation then
runs in its own process, so its time and peak resident memory are measured alone:

- ours: ``compute_metrics(generated, real, ["avgknn", "lof"])`` (one self search of the real set,
  one generated-vs-real search, shared by both metrics);
- scikit-learn: ``NearestNeighbors(k).kneighbors`` for AvgkNN and
  ``LocalOutlierFactor(n_neighbors, novelty=True)``, LOF = −``score_samples``.

It prints a table of times and peak memory, the speed ratio and the largest relative
difference of the per-sample values.

    python benchmarks/bench_knn_lof.py                   # N = 20 000, D = 2048
    python benchmarks/bench_knn_lof.py --n 3000 --d 256  # a quick run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="real and generated set size")
    parser.add_argument("--d", type=int, default=2048, help="feature dimension")
    parser.add_argument("--k-avgknn", type=int, default=5)
    parser.add_argument("--k-lof", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=2048, help="kNN tile side (ours)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="GEMM precision of our search (distances are refined in float64)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["ours", "sklearn"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) resident memory of this process, in MB.

    Read from /proc, which, unlike ``ru_maxrss``, does not count the launching process's peak;
    elsewhere the peak from ``getrusage`` is used.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def threads() -> int:
    """Threads the numerical libraries use (torch's count; OpenMP / BLAS follow the same cores)."""
    import torch

    return torch.get_num_threads()


def run_ours(real: np.ndarray, generated: np.ndarray, args: argparse.Namespace) -> dict:
    import torch

    from minority.metrics import compute_metrics

    start = time.perf_counter()
    result = compute_metrics(
        generated,
        real,
        ["avgknn", "lof"],
        k_avgknn=args.k_avgknn,
        k_lof=args.k_lof,
        chunk_size=args.chunk_size,
        dtype=getattr(torch, args.dtype),
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **result.per_sample}


def run_sklearn(real: np.ndarray, generated: np.ndarray, args: argparse.Namespace) -> dict:
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    start = time.perf_counter()
    distances, _ = NearestNeighbors(n_neighbors=args.k_avgknn).fit(real).kneighbors(generated)
    avgknn = distances.mean(axis=1)
    avgknn_seconds = time.perf_counter() - start
    model = LocalOutlierFactor(n_neighbors=args.k_lof, novelty=True).fit(real)
    lof = -model.score_samples(generated)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "avgknn_seconds": avgknn_seconds, "avgknn": avgknn, "lof": lof}


def worker(args: argparse.Namespace) -> None:
    """Run one implementation on the saved data; save its values and a JSON of measurements."""
    real = np.load(args.data / "real.npy")
    generated = np.load(args.data / "generated.npy")
    if args.worker == "ours":
        import minority.metrics  # noqa: F401  (imported before the memory baseline)
    else:
        import sklearn.neighbors  # noqa: F401
    baseline = memory_mb("VmRSS")
    run = run_ours if args.worker == "ours" else run_sklearn
    out = run(real, generated, args)
    np.savez(args.data / f"{args.worker}.npz", avgknn=out["avgknn"], lof=out["lof"])
    measurements = {k: v for k, v in out.items() if k.endswith("seconds")}
    measurements.update(peak_mb=memory_mb("VmHWM"), data_mb=baseline, threads=threads())
    (args.data / f"{args.worker}.json").write_text(json.dumps(measurements))


def launch(name: str, folder: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--data",
        str(folder),
        "--n",
        str(args.n),
        "--d",
        str(args.d),
        "--k-avgknn",
        str(args.k_avgknn),
        "--k-lof",
        str(args.k_lof),
        "--chunk-size",
        str(args.chunk_size),
        "--dtype",
        args.dtype,
    ]
    subprocess.run(command, check=True)
    return json.loads((folder / f"{name}.json").read_text())


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a / b - 1)))


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "real.npy", rng.standard_normal((args.n, args.d), dtype=np.float32))
        generated = rng.standard_normal((args.n, args.d), dtype=np.float32) * 1.1
        np.save(folder / "generated.npy", generated)
        ours, sk = launch("ours", folder, args), launch("sklearn", folder, args)
        ours_values, sk_values = np.load(folder / "ours.npz"), np.load(folder / "sklearn.npz")
        diffs = {
            m: max_relative_difference(ours_values[m], sk_values[m]) for m in ("avgknn", "lof")
        }

    print(
        f"AvgkNN (k={args.k_avgknn}) + LOF (k={args.k_lof}), N = {args.n} real and "
        f"{args.n} generated, D = {args.d}, float32 features, {ours['threads']} threads; "
        f"ours: {args.dtype} GEMM, chunk {args.chunk_size}"
    )
    print("| implementation | AvgkNN + LOF time (s) | peak RSS (MB) | RSS before the run (MB) |")
    print("|---|---|---|---|")
    for name, m in (("minority.metrics", ours), ("scikit-learn", sk)):
        print(f"| {name} | {m['seconds']:.1f} | {m['peak_mb']:.0f} | {m['data_mb']:.0f} |")
    print(f"scikit-learn AvgkNN alone: {sk['avgknn_seconds']:.1f} s")
    print(f"speed ratio (scikit-learn / ours): {sk['seconds'] / ours['seconds']:.2f}x")
    print(f"max relative difference: AvgkNN {diffs['avgknn']:.2e}, LOF {diffs['lof']:.2e}")


if __name__ == "__main__":
    main()

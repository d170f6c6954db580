"""The full metric pass — AvgkNN, LOF, Rarity, precision / recall — against scikit-learn.

Random float32 features (N real, N generated, D dims) are written once; each implementation then
runs in its own process, so its time and peak resident memory are measured alone:

- ours: ``compute_metrics(generated, real, ["avgknn", "lof", "rarity", "precision", "recall"])``
  (self searches of the real and of the generated set, each computing only the tiles on and
  above the diagonal, and one pass over the generated × real tiles serving the generated
  samples' kNN and the ball covers of Rarity, precision and recall: about two GEMMs);
- scikit-learn: ``NearestNeighbors(k).kneighbors`` for AvgkNN and the k = 3 radii,
  ``LocalOutlierFactor(n_neighbors, novelty=True)`` (LOF = −``score_samples``), and
  ``pairwise_distances_chunked`` for the ball tests of Rarity, precision and recall. Its process
  runs with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment, so its
  BLAS picks the kernel of this processor (the kernel is printed, via threadpoolctl).

Both run on one thread by default (``--threads``). It prints a table of wall and CPU times and
peak memory, the speed ratio, the CPU times in units of one dense N × N × D float32 GEMM at the
same thread count (torch.mm; exact methods need the generated × real distances, and LOF and the
manifolds the real × real and generated × generated ones, half a GEMM each by symmetry: a floor
of about two), and the largest relative difference of the per-sample values. CPU times are the
figures to compare on a shared machine, where wall time also counts waits for a core.

    python benchmarks/bench_knn_lof.py                   # N = 20 000, D = 2048
    python benchmarks/bench_knn_lof.py --n 3000 --d 256  # a quick run
    # the papers' 50 k × 50 k, one side at a time (long), then the table from the saved results
    python benchmarks/bench_knn_lof.py --n 50000 --workdir /tmp/knn50k --only ours
    python benchmarks/bench_knn_lof.py --n 50000 --workdir /tmp/knn50k --only sklearn
    python benchmarks/bench_knn_lof.py --n 50000 --workdir /tmp/knn50k --only none
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--threads", type=int, default=1, help="threads of both implementations")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the features and each side's results here (default: a temporary folder); "
        "a later run with the same folder reuses them",
    )
    parser.add_argument(
        "--only",
        choices=["ours", "sklearn", "none"],
        help="run one side only, or none (the results saved in --workdir are reported)",
    )
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


METRICS = ["avgknn", "lof", "rarity", "precision", "recall"]
SKLEARN_ENV_DROPPED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
GEMM_SLICE = 8192  # rows of the timed GEMM slice


def gemm_seconds(real: np.ndarray, generated: np.ndarray) -> tuple[float, float]:
    """Wall and CPU seconds of one dense float32 generated × realᵀ product (N × N × D).

    Timed on a slice of at most ``GEMM_SLICE`` generated rows (best of two) and scaled to N
    rows: a GEMM of this size runs at a constant rate, and the full product would take as long
    as the pass itself.
    """
    import torch

    a, b = torch.from_numpy(generated[:GEMM_SLICE]), torch.from_numpy(real)
    times = []
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b.T)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    scale = len(generated) / len(a)
    return min(t[0] for t in times) * scale, min(t[1] for t in times) * scale


def run_ours(real: np.ndarray, generated: np.ndarray, args: argparse.Namespace) -> dict:
    import torch

    from minority.metrics import compute_metrics

    start, cpu = time.perf_counter(), time.process_time()
    result = compute_metrics(
        generated,
        real,
        METRICS,
        k_avgknn=args.k_avgknn,
        k_lof=args.k_lof,
        chunk_size=args.chunk_size,
        dtype=getattr(torch, args.dtype),
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    values = {k: np.array(v) for k, v in result.values.items() if k in ("precision", "recall")}
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, **result.per_sample, **values}


def smallest_ball(query: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Per query, the smallest radius of a ball (centre, radius) holding it (inf: none)."""
    from sklearn.metrics import pairwise_distances_chunked

    def reduce(chunk: np.ndarray, start: int) -> np.ndarray:
        return np.where(chunk < radii[None, :], radii[None, :], np.inf).min(axis=1)

    return np.concatenate(list(pairwise_distances_chunked(query, centers, reduce_func=reduce)))


def kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]


def run_sklearn(real: np.ndarray, generated: np.ndarray, args: argparse.Namespace) -> dict:
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    start, cpu = time.perf_counter(), time.process_time()
    distances, _ = NearestNeighbors(n_neighbors=args.k_avgknn).fit(real).kneighbors(generated)
    avgknn = distances.mean(axis=1)
    avgknn_seconds = time.perf_counter() - start
    model = LocalOutlierFactor(n_neighbors=args.k_lof, novelty=True).fit(real)
    lof = -model.score_samples(generated)
    real_radii = kth_radii(real, 3)
    ball = smallest_ball(generated, real, real_radii)
    rarity = np.where(np.isfinite(ball), ball, np.nan)
    precision = np.isfinite(ball).mean()
    recall = np.isfinite(smallest_ball(real, generated, kth_radii(generated, 3))).mean()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "avgknn_seconds": avgknn_seconds,
        "avgknn": avgknn,
        "lof": lof,
        "rarity": rarity,
        "precision": np.array(precision),
        "recall": np.array(recall),
        "blas": blas_kernel(),
    }


def blas_kernel() -> str:
    """The BLAS library and kernel numpy runs (threadpoolctl), e.g. ``openblas Haswell``."""
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i.get('internal_api')} {i.get('architecture')}" for i in blas)


def worker(args: argparse.Namespace) -> None:
    """Run one implementation on the saved data; save its values and a JSON of measurements."""
    real = np.load(args.data / "real.npy")
    generated = np.load(args.data / "generated.npy")
    if args.worker == "ours":
        import torch

        import minority.metrics  # noqa: F401  (imported before the memory baseline)

        torch.set_num_threads(args.threads)
    else:
        import sklearn.neighbors  # noqa: F401
    baseline = memory_mb("VmRSS")
    run = run_ours if args.worker == "ours" else run_sklearn
    out = run(real, generated, args)
    np.savez(args.data / f"{args.worker}.npz", **{m: out[m] for m in METRICS})
    measurements = {k: v for k, v in out.items() if k.endswith("seconds") or k == "blas"}
    measurements.update(peak_mb=memory_mb("VmHWM"), data_mb=baseline, threads=threads())
    if args.worker == "ours":  # the floor unit, timed after the peak memory is read
        measurements["gemm_seconds"], measurements["gemm_cpu_seconds"] = gemm_seconds(
            real, generated
        )
    (args.data / f"{args.worker}.json").write_text(json.dumps(measurements))


def launch(name: str, folder: Path, args: argparse.Namespace) -> None:
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
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ) | dict.fromkeys(THREAD_VARIABLES, str(args.threads))
    if name == "sklearn":
        for variable in SKLEARN_ENV_DROPPED:
            env.pop(variable, None)
    subprocess.run(command, check=True, env=env)


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a − b| / |b| where both are defined (Rarity is NaN outside every ball); equal
    values differ by 0, also where both are 0."""
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    a, b = a[both], b[both]
    exact = np.where(a == b, 0.0, np.inf)
    relative = np.divide(np.abs(a - b), np.abs(b), out=exact, where=b != 0)
    return float(np.max(relative, initial=0.0))


def write_features(folder: Path, args: argparse.Namespace) -> None:
    """Random real and generated float32 features (the latter 1.1× wider), kept if present."""
    shape = (args.n, args.d)
    paths = [folder / "real.npy", folder / "generated.npy"]
    if all(p.is_file() and np.load(p, mmap_mode="r").shape == shape for p in paths):
        return
    rng = np.random.default_rng(args.seed)
    np.save(paths[0], rng.standard_normal(shape, dtype=np.float32))
    np.save(paths[1], rng.standard_normal(shape, dtype=np.float32) * 1.1)


SETTINGS = ("n", "d", "seed", "k_avgknn", "k_lof", "chunk_size", "dtype", "threads")


def check_workdir(folder: Path, args: argparse.Namespace) -> None:
    """Record this run's settings in ``folder``, or stop when its saved results had others:
    a table must never mix the two."""
    settings = {key: getattr(args, key) for key in SETTINGS}
    path = folder / "settings.json"
    if not path.is_file():
        path.write_text(json.dumps(settings))
        return
    saved = json.loads(path.read_text())
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        changes = ", ".join(
            f"--{k.replace('_', '-')} {old} (now {new})" for k, (old, new) in differ.items()
        )
        sys.exit(f"{folder} holds results measured with {changes}; use those or another --workdir.")


def run_sides(folder: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Each side's measurements (run now or saved), and the values' largest differences."""
    check_workdir(folder, args)
    write_features(folder, args)
    for name in ("ours", "sklearn"):
        if args.only in (None, name):
            launch(name, folder, args)
    sides = {
        name: json.loads((folder / f"{name}.json").read_text())
        for name in ("ours", "sklearn")
        if (folder / f"{name}.json").is_file()
    }
    if len(sides) == 2:
        ours_values, sk_values = np.load(folder / "ours.npz"), np.load(folder / "sklearn.npz")
        diffs = {m: max_relative_difference(ours_values[m], sk_values[m]) for m in METRICS}
        sides["differences"] = diffs
    return sides


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sides = run_sides(args.workdir, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            sides = run_sides(Path(tmp), args)
    if "ours" not in sides:
        raise SystemExit("No result of ours to report; run it (--only ours).")
    print_table(sides, args)


def print_table(sides: dict[str, dict], args: argparse.Namespace) -> None:
    """The measurements as a Markdown table, in units of the GEMM timed by ours' process."""
    ours, sk = sides["ours"], sides.get("sklearn")
    gemm, gemm_cpu = ours["gemm_seconds"], ours["gemm_cpu_seconds"]
    print(
        f"AvgkNN (k={args.k_avgknn}), LOF (k={args.k_lof}), Rarity (k=3), precision / recall "
        f"(k=3); N = {args.n} real and {args.n} generated, D = {args.d}, float32 features, "
        f"{ours['threads']} thread(s); ours: {args.dtype} GEMM, chunk {args.chunk_size}"
        + (
            f"; scikit-learn's BLAS: {sk['blas']} ({', '.join(SKLEARN_ENV_DROPPED)} unset)"
            if sk
            else ""
        )
    )
    print(
        "| implementation | full pass (s) | CPU (s) | in GEMMs (CPU) | peak RSS (MB) "
        "| RSS before (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for name, m in (("minority.metrics", ours), ("scikit-learn", sk)):
        if m is None:
            continue
        print(
            f"| {name} | {m['seconds']:.1f} | {m['cpu_seconds']:.1f} "
            f"| {m['cpu_seconds'] / gemm_cpu:.2f} | {m['peak_mb']:.0f} | {m['data_mb']:.0f} |"
        )
    print(
        f"one dense {args.n} × {args.n} × {args.d} float32 GEMM (torch.mm, the floor unit): "
        f"{gemm:.1f} s wall, {gemm_cpu:.1f} s CPU"
    )
    if sk is None:
        return
    diffs = sides["differences"]
    print(f"scikit-learn AvgkNN alone: {sk['avgknn_seconds']:.1f} s")
    print(
        f"speed ratio (scikit-learn / ours): {sk['seconds'] / ours['seconds']:.2f}x wall, "
        f"{sk['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU"
    )
    print("max relative difference: " + ", ".join(f"{m} {d:.2e}" for m, d in diffs.items()))


if __name__ == "__main__":
    main()

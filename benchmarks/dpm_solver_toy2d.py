"""Minority guidance with DPM-Solver++(2M) at few steps against 100-step DDPM, on toy2d.

Needs the toy2d work folder of ``make demo`` (denoiser, minority scores, minority classifier)
under ``--outputs``. Every run samples the same seeds with the same guidance scale; the table
gives the exact-density figures of each (light share, off-manifold share, mean log p) and the
network evaluations it took.

    python benchmarks/dpm_solver_toy2d.py                       # w = 0 and 4, 4000 samples
    python benchmarks/dpm_solver_toy2d.py --scales 4 6 --num-samples 1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from minority.lit.build import build_dataset
from minority.metrics.ground_truth import toy2d_ground_truth
from minority.tasks.common import plain
from minority.tasks.sample import sample_task

REPO = Path(__file__).resolve().parents[1]
RUNS = (
    ("DDPM", "ddpm", "100"),
    ("DPM-Solver++(2M)", "dpmpp2m", "10"),
    ("DPM-Solver++(2M)", "dpmpp2m", "20"),
    ("DPM-Solver++(2M)", "dpmpp2m", "25"),
)


def figures(outputs: Path, num_samples: int, name: str, *overrides: str) -> dict[str, float]:
    """Sample one configuration into ``<outputs>/toy2d/dpm_solver/<name>``; its figures."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[
                f"paths.root={outputs}",
                f"run_dir={outputs / 'toy2d' / 'dpm_solver' / name}",
                "trainer.enable_progress_bar=false",
                "progress=false",
                f"num_samples={num_samples}",
                "batch_size=1000",
                *overrides,
            ],
        )
    samples = np.load(sample_task(cfg))["arr_0"]
    return toy2d_ground_truth(build_dataset(plain(cfg.dataset)).mixture, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 4.0])
    args = parser.parse_args()
    print("| guidance | sampler | steps | light share | off-manifold | mean log p |")
    print("|---|---|---|---|---|---|")
    for scale in args.scales:
        guidance = ["guidance=minority", f"guidance.scale={scale}"] if scale else []
        for label, sampler, steps in RUNS:
            name = f"{sampler}{steps}_w{scale:g}"
            run = [f"sampler={sampler}", f"sampler.steps={steps}", *guidance]
            got = figures(args.outputs, args.num_samples, name, *run)
            print(
                f"| {f'minority, w = {scale:g}' if scale else 'none'} | {label} | {steps} "
                f"| {got['light_share']:.3f} | {100 * got['off_manifold_share']:.1f} % "
                f"| {got['mean_log_density']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

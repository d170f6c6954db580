"""Minority guidance with DPM-Solver++(2M) at 10 / 20 / 25 steps against 100- and 250-step
DDPM with the same guidance, on toy2d or (``--dataset digits``) the rare-class digits.

Needs the work folder of ``make demo`` (denoiser, minority scores, minority classifier) under
``--outputs``. Every run samples the same seeds with the same guidance scale and is evaluated
(``metrics=embedded``); the table gives the minority figures of each — toy2d: light share,
off-manifold share, mean exact log p; digits: rare-class share (classes 3 and 8), AvgkNN, LOF,
Rarity, precision, recall, FID — and the denoiser evaluations per sample (NFE). One picture puts the
runs' scatter plots (toy2d) or sample grids (digits) side by side.

    python benchmarks/dpm_solver_toy2d.py                       # toy2d, w = 0 and 4, 4000 samples
    python benchmarks/dpm_solver_toy2d.py --dataset digits --scales 2 --num-samples 2000
    python benchmarks/dpm_solver_toy2d.py --figure docs/figures/dpm_solver_toy2d.png
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from minority import schema  # noqa: E402
from minority.tasks.sample import sample_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = (
    ("DDPM", "ddpm", "100"),
    ("DDPM", "ddpm", "250"),
    ("DPM-Solver++(2M)", "dpmpp2m", "10"),
    ("DPM-Solver++(2M)", "dpmpp2m", "20"),
    ("DPM-Solver++(2M)", "dpmpp2m", "25"),
    ("DPM-Solver++(2M)", "dpmpp2m", "trailing20"),
)
DATASETS = {
    # experiment, work folder, picture of a run, columns: (metrics.json key, header, format)
    "toy2d": (
        "toy2d",
        "toy2d",
        "scatter.png",
        (
            ("light_share", "light share", "{:.3f}"),
            ("off_manifold_share", "off-manifold", "{:.1%}"),
            ("mean_log_density", "mean log p", "{:.3f}"),
        ),
    ),
    "digits": (
        "digits",
        "digits_rare",
        "grid.png",
        (
            ("rare_class_share", "rare-class share", "{:.3f}"),
            ("avgknn", "AvgkNN", "{:.3f}"),
            ("lof", "LOF", "{:.3f}"),
            ("rarity", "Rarity", "{:.3f}"),
            ("precision", "precision", "{:.3f}"),
            ("recall", "recall", "{:.3f}"),
            ("fid", "FID", "{:.3f}"),
        ),
    ),
}


def evaluate_run(outputs: Path, dataset: str, num_samples: int, name: str, *overrides: str):
    """Sample and evaluate one configuration into ``<work>/dpm_solver/<name>``; returns its
    run folder and its metrics."""
    experiment, work, _, _ = DATASETS[dataset]
    folder = outputs / work / "dpm_solver" / name
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[
                f"experiment={experiment}",
                f"paths.root={outputs}",
                f"run_dir={folder}",
                f"table={folder.parent / 'metrics.md'}",
                "trainer.enable_progress_bar=false",
                "progress=false",
                "evaluate=true",
                "overwrite=true",
                f"num_samples={num_samples}",
                "batch_size=1000",
                *overrides,
            ],
        )
    with contextlib.redirect_stdout(io.StringIO()):  # the evaluation prints its metrics
        sample_task(cfg)
    return folder, json.loads((folder / "metrics.json").read_text())


def save_side_by_side(pictures: list[tuple[str, Path]], path: Path, columns: int = 3) -> None:
    """The runs' pictures, ``columns`` to a row, each under its label."""
    rows = -(-len(pictures) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 4.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, picture) in zip(axes.flat, pictures, strict=False):
        ax.imshow(plt.imread(picture))
        ax.set_title(label, fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="toy2d")
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 4.0])
    parser.add_argument(
        "--figure", type=Path, default=None, help="where to save the guided runs' pictures"
    )
    args = parser.parse_args()
    schema.register()
    _, _, picture, columns = DATASETS[args.dataset]
    print(f"| guidance | sampler | steps | NFE | {' | '.join(c[1] for c in columns)} |")
    print("|---" * (4 + len(columns)) + "|")
    for scale in args.scales:
        guidance = ["guidance=minority", f"guidance.scale={scale}"] if scale else []
        pictures = []
        for label, sampler, steps in RUNS:
            name = f"{sampler}{steps}_w{scale:g}"
            run = [f"sampler={sampler}", f"sampler.steps={steps}", *guidance]
            folder, got = evaluate_run(args.outputs, args.dataset, args.num_samples, name, *run)
            pictures.append((f"{label}, {steps} steps", folder / picture))
            cells = " | ".join(fmt.format(got[key]) for key, _, fmt in columns)
            print(
                f"| {f'minority, w = {scale:g}' if scale else 'none'} | {label} | {steps} "
                f"| {steps.removeprefix('trailing')} | {cells} |",
                flush=True,
            )
        if args.figure is not None and scale:
            save_side_by_side(pictures, args.figure)


if __name__ == "__main__":
    main()

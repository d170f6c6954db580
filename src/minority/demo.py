"""The whole pipeline on the embedded data, as a user would type it (``make demo``).

toy2d and digits: train the denoiser → minority scores → minority classifier → sample with
ancestral DDPM, DDIM, minority guidance, self-guidance and Boost-and-Skip → evaluate → print
the tables and where the pictures are. Every stage is an ordinary ``train.py`` / ``sample.py``
command (``sample.py … evaluate=true`` evaluates as it finishes), printed before it runs;
finished stages are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig

SAMPLERS = {
    "ancestral": ["run_name=ancestral"],
    "ddim": ["sampler=ddim", "run_name=ddim"],
    "minority_guidance": ["guidance=minority", "run_name=minority_guidance"],
    "self_guidance": ["guidance=self", "run_name=self_guidance"],
    "boost_skip": ["init=boost_skip", "run_name=boost_skip"],
}
EXPERIMENTS = {
    "toy2d": {
        "minority_guidance": ["guidance.scale=4"],
        "self_guidance": ["guidance.scale=1.5"],
        "boost_skip": ["sampler=ddim", "init.gamma=1.2", "init.skip=3"],
    },
    "digits": {
        "minority_guidance": ["guidance.scale=2"],
        "self_guidance": ["guidance.scale=0.5"],
        "boost_skip": ["sampler=ddim", "init.gamma=1.2", "init.skip=3"],
    },
}


# The experiments run side by side, one core each: small networks gain little from a second
# thread, and two pipelines in parallel nearly halve the wall time on a 2-core machine.
ENV = {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(args: list[str], root: Path, tag: str) -> None:
    """Run one stage, echoing the command; stop the demo if it fails."""
    start = time.time()
    done = subprocess.run(
        [sys.executable, *args], cwd=root, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL
    )
    if done.returncode:
        raise SystemExit(
            f"demo stopped: `python {' '.join(args)}` failed (exit {done.returncode})."
        )
    print(f"[{tag}] python {' '.join(args)}  ({time.time() - start:.0f} s)", flush=True)


def pipeline(experiment: str, root: Path, num_samples: int, work: Path) -> Path:
    """All stages of one experiment, whose work folder is ``work``; returns its metrics table."""
    common = [f"experiment={experiment}", "trainer.enable_progress_bar=false"]
    if not (work / "diffusion" / "denoiser.pt").is_file():
        run(["train.py", "task=diffusion", *common], root, experiment)
    if not (work / "scores" / "scores.pt").is_file():
        run(["train.py", "task=scores", *common], root, experiment)
    if not (work / "classifier" / "classifier.pt").is_file():
        run(["train.py", "task=classifier", *common], root, experiment)
    table = work / "metrics.md"
    table.unlink(missing_ok=True)
    for name, overrides in SAMPLERS.items():
        extra = EXPERIMENTS[experiment].get(name, [])
        run(
            [
                "sample.py",
                *common,
                f"num_samples={num_samples}",
                "progress=false",
                "evaluate=true",
                "overwrite=true",  # a rerun with other --num-samples replaces the old runs
                *overrides,
                *extra,
            ],
            root,
            experiment,
        )
    return table


def composed(root: Path, overrides: list[str]) -> DictConfig:
    """``conf/sample.yaml`` with ``overrides``, as the stages compose it (paths included)."""
    from hydra import compose, initialize_config_dir

    from minority import schema

    schema.register()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose("sample", overrides)


def toy2d_reference(root: Path) -> str:
    """The real data's figures, to read the toy2d table against."""
    from minority.lit.build import build_dataset
    from minority.tasks.common import plain

    data = build_dataset(plain(composed(root, ["dataset=toy2d"]).dataset))
    weights = ", ".join(f"{w:.2f}" for w in data.mixture.weights.tolist())
    return (
        f"toy2d data: mean exact log-density {data.mixture.log_prob(data.x).mean():.4f}, "
        f"component weights {weights} (light share {1 - data.mixture.weights.max():.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--num-samples", type=int, default=4000)
    args = parser.parse_args()
    root = Path.cwd()
    if not (root / "train.py").is_file():
        sys.exit("Run the demo from the repository root (where train.py is).")
    # the folders conf/paths gives (paths.root follows $MINORITY_OUTPUTS), composed up front:
    # Hydra's compose is not for concurrent threads
    outputs = root / composed(root, []).paths.root
    works = {e: root / composed(root, [f"experiment={e}"]).paths.work_dir for e in args.experiments}
    with ThreadPoolExecutor(max_workers=len(args.experiments)) as pool:
        tables = list(
            pool.map(lambda e: pipeline(e, root, args.num_samples, works[e]), args.experiments)
        )
    for table in tables:
        print(f"\n{table}:\n{table.read_text()}")
    if "toy2d" in args.experiments:
        print(toy2d_reference(root))
    print("pictures:")
    for picture in sorted(outputs.glob("*/samples/*/*.png")):
        print(f"  {picture.relative_to(root) if picture.is_relative_to(root) else picture}")


if __name__ == "__main__":
    main()

"""Cost of guided sampling steps relative to an unguided ancestral step, on CPU.

For (a) the small ADM UNet of ``conf/model/unet8.yaml`` on 1×8×8 digits and (b) an ADM-shaped
UNet at 3×64×64 with reduced width (the CelebA-64 checkpoint's flags at width 64), it measures,
side by side in one process (variants interleaved):

* the per-step cost of an unguided DDPM step; of a minority-guided step, with the small conv
  classifier for digits and an ADM encoder of the official shape at 64×64 (it fires at every
  step, so its whole-run ratio is its step ratio); of a self-guided step; and, for reference,
  of a self-guided step paying the official code's redundant no-grad forward at x_t;
* the whole-run ratio self-guided (guidance every n = 5 respaced steps) / ancestral, measured,
  and as predicted from the step costs: (T' − G + G·c)/T' with G guided steps of cost c.

With ``--authors-sg PATH --authors-mg PATH`` (checkouts of the authors' sg-minority and
minority-guidance repositories, imported from there, never copied) it also times, on the same
weights at 64×64, the authors' ancestral, self-guided (every step and every n-th) and
minority-guided runs side by side with the project's, and prints project / authors.

Every ratio is relative to the unguided step (or run) of the same model. Times are the minimum
over interleaved repeats, the estimate least disturbed by other processes on shared cores
(with 2 threads on a busy machine, each of the UNet's many small parallel ops may wait for a
descheduled thread, so wall times can be dominated by that wait; ``--threads 1 --cpu-time``
measures the work itself). From the repo root:

    python benchmarks/bench_guided_steps.py            # full (several minutes on 2 free cores)
    python benchmarks/bench_guided_steps.py --quick    # a short smoke run (width-32 UNet)
    python benchmarks/bench_guided_steps.py --threads 1 --cpu-time   # on a busy machine
    python benchmarks/bench_guided_steps.py --threads 1 --cpu-time --only-authors \
        --authors-sg ../sg-minority --authors-mg ../minority-guidance
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from minority.diffusion.gaussian import GaussianDiffusion, build_diffusion
from minority.guidance.base import GuidanceContext, Guide, WeightSchedule
from minority.guidance.classifier import MinorityGuidance
from minority.guidance.self_guidance import SelfGuidance
from minority.models.adm import create_model
from minority.models.classifiers import build_classifier
from minority.models.denoiser import Denoiser
from minority.sampling.loop import sample, step
from minority.seeding import SeededNoise

REPO = Path(__file__).resolve().parents[1]
NUM_LEVELS = 100  # L, the official number of minority classes
ADM64_FLAGS = dict(
    image_size=64,
    num_res_blocks=3,
    attention_resolutions="32,16,8",
    resblock_updown=True,
    use_new_attention_order=True,
    use_scale_shift_norm=True,
    learn_sigma=True,
)
ADM64_CLASSIFIER = dict(
    classifier_depth=2,
    classifier_attention_resolutions="32,16,8",
)


@dataclass
class Setup:
    """One model to time: its denoiser, noisy classifier and sample shape."""

    name: str
    denoiser: Denoiser
    classifier: torch.nn.Module
    shape: tuple[int, ...]


class OfficialCost:
    """A self-guidance term that also pays the official code's redundant no-grad forward."""

    needs_graph = True

    def __init__(self, term: SelfGuidance):
        self.term = term

    def direction(self, ctx: GuidanceContext) -> Tensor:
        with torch.no_grad():
            ctx.denoiser(ctx.x.detach(), ctx.t, ctx.y)
        return self.term.direction(ctx)


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval().requires_grad_(False)


def digits_setup(batch: int) -> Setup:
    flags = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "unet8.yaml"))["flags"]
    denoiser = Denoiser(frozen(create_model(flags)), learn_sigma=flags["learn_sigma"])
    classifier = frozen(build_classifier("conv", NUM_LEVELS, (1, 8, 8)))
    return Setup("digits 1×8×8, unet8", denoiser, classifier, (batch, 1, 8, 8))


def adm64_setup(batch: int, width: int = 64) -> Setup:
    head = min(64, width)
    unet = create_model({**ADM64_FLAGS, "num_channels": width, "num_head_channels": head})
    classifier_flags = {
        **ADM64_CLASSIFIER,
        "classifier_width": width,
        "classifier_num_head_channels": head,
    }
    classifier = frozen(build_classifier("adm", NUM_LEVELS, (3, 64, 64), **classifier_flags))
    name = f"ADM 3×64×64, width {width}"
    return Setup(name, Denoiser(frozen(unet), learn_sigma=True), classifier, (batch, 3, 64, 64))


def guides(setup: Setup, every: int = 1) -> dict[str, Guide | None]:
    """The variants timed, by row label."""
    self_guidance = SelfGuidance("l2", p_ratio=0.8)
    schedule = WeightSchedule(0.4, "var", every=every)
    minority = MinorityGuidance(setup.classifier, NUM_LEVELS - 1, num_classes=NUM_LEVELS)
    return {
        "unguided": None,
        "minority-guided": Guide(minority, WeightSchedule(3.5, "var", every=every)),
        "self-guided": Guide(self_guidance, schedule),
        "self-guided, official 3 calls": Guide(OfficialCost(self_guidance), schedule),
    }


Clock = Callable[[], float]


def interleaved_minima(
    jobs: dict[str, Callable[[], object]], repeats: int, clock: Clock, warm_up: bool = True
) -> dict[str, float]:
    """Minimum time of each job on ``clock``, the jobs run in turn ``repeats`` times."""
    if warm_up:
        for job in jobs.values():
            job()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = clock()
            job()
            times[name].append(clock() - start)
    return {name: min(values) for name, values in times.items()}


def step_costs(
    setup: Setup, diffusion: GaussianDiffusion, repeats: int, clock: Clock
) -> dict[str, float]:
    """Seconds of one step at the middle of the grid, per variant."""
    i = diffusion.num_timesteps // 2
    x = torch.randn(setup.shape)

    def job(guide: Guide | None) -> Callable[[], object]:
        noise = SeededNoise(0, range(setup.shape[0]))
        return lambda: step(setup.denoiser, diffusion, x, i, noise, guide=guide)

    return interleaved_minima({n: job(g) for n, g in guides(setup).items()}, repeats, clock)


def run_costs(
    setup: Setup, diffusion: GaussianDiffusion, every: int, repeats: int, clock: Clock
) -> dict[str, float]:
    """Seconds of a whole ancestral run and of self-guided runs (every n steps)."""
    variants = guides(setup, every)

    def job(guide: Guide | None) -> Callable[[], object]:
        def run() -> Tensor:
            noise = SeededNoise(0, range(setup.shape[0]))
            return sample(setup.denoiser, diffusion, setup.shape, noise, guide=guide)

        return run

    names = ("unguided", "self-guided", "self-guided, official 3 calls")
    jobs = {n: job(variants[n]) for n in names}
    return interleaved_minima(jobs, repeats, clock, warm_up=False)


def report(
    setup: Setup, steps: dict[str, float], runs: dict[str, float], num_steps: int, every: int
) -> None:
    base_step, base_run = steps["unguided"], runs["unguided"]
    guided = len(range(0, num_steps, every))
    print(
        f"\n{setup.name}, batch {setup.shape[0]}: unguided step {base_step * 1e3:.0f} ms, "
        f"ancestral run of {num_steps} steps {base_run:.1f} s"
    )
    columns = ("step ratio", f"run ratio (n={every})", "run ratio predicted")
    print(f"| {'variant':<30} | {columns[0]:>10} | {columns[1]:>19} | {columns[2]:>19} |")
    print(f"|{'-' * 32}|{'-' * 11}:|{'-' * 20}:|{'-' * 20}:|")
    for name, seconds in steps.items():
        cost = seconds / base_step
        run, predicted = "-", "-"
        if name in runs:
            run = f"{runs[name] / base_run:.2f}"
            predicted = f"{(num_steps - guided + guided * cost) / num_steps:.2f}"
        print(f"| {name:<30} | {cost:>10.2f} | {run:>19} | {predicted:>19} |")


def import_authors(checkout: Path) -> ModuleType:
    """``guided_diffusion.script_util`` of an authors' checkout, imported from there.

    Both authors' repositories name their package ``guided_diffusion``; each import is kept out
    of ``sys.modules`` afterwards so the two checkouts can be loaded side by side.
    """

    def loaded() -> list[str]:
        return [name for name in sys.modules if name.split(".")[0] == "guided_diffusion"]

    saved = {name: sys.modules.pop(name) for name in loaded()}
    sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module("guided_diffusion.script_util")
    finally:
        sys.path.remove(str(checkout))
        for name in loaded():
            del sys.modules[name]
        sys.modules.update(saved)


def authors_model(script_util: ModuleType, setup: Setup, width: int) -> torch.nn.Module:
    """The authors' UNet with the setup's weights, in eval mode as their samplers use it."""
    model = script_util.create_model(
        **ADM64_FLAGS, num_channels=width, num_head_channels=min(64, width)
    )
    model.load_state_dict(setup.denoiser.net.state_dict())
    return model.eval()


def authors_classifier(script_util: ModuleType, setup: Setup, width: int) -> torch.nn.Module:
    """The authors' noisy classifier (EncoderUNetModel) with the setup's classifier weights."""
    flags = {**script_util.classifier_defaults(), **ADM64_CLASSIFIER}
    flags.update(classifier_width=width, out_channels=NUM_LEVELS)
    classifier = script_util.create_classifier(**flags)
    classifier.load_state_dict(setup.classifier.state_dict())
    return classifier.eval()


def authors_sg_kwargs(every: int) -> dict:
    """The authors' self-guidance arguments matching :func:`guides` (l2, p_ratio 0.8, w 0.4)."""
    return dict(
        use_ms_grad=True,
        norm_for_mg=2.0,
        t_mid=-1.0,
        mg_scale=0.4,
        p_ratio=0.8,
        num_mc_samples=1,
        mg_scale_type="var",
        use_normed_grad=True,
        mg_clip_denoised=False,
        loss_lpips=None,
        inter_rate=every,
    )


def authors_jobs(
    sg: ModuleType, mg: ModuleType, setup: Setup, width: int, num_steps: int, every: int
) -> dict[str, Callable[[], object]]:
    """Whole runs with the authors' samplers, by row label (the same rows as ``project_jobs``)."""
    spacing = dict(steps=1000, learn_sigma=True, noise_schedule="cosine")
    sg_diffusion = sg.create_gaussian_diffusion(**spacing, timestep_respacing=str(num_steps))
    mg_diffusion = mg.create_gaussian_diffusion(**spacing, timestep_respacing=str(num_steps))
    sg_model, mg_model = authors_model(sg, setup, width), authors_model(mg, setup, width)
    classifier = authors_classifier(mg, setup, width)
    target = torch.full((setup.shape[0],), NUM_LEVELS - 1)

    def cond_fn(x: Tensor, t: Tensor) -> Tensor:  # the authors' classifier_sample.cond_fn
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t), dim=-1)
            selected = log_probs[range(len(log_probs)), target]
            return torch.autograd.grad(selected.sum(), x_in)[0] * 3.5

    def self_guided(n: int) -> Callable[[], object]:
        kwargs = authors_sg_kwargs(n)
        return lambda: sg_diffusion.p_sample_loop(sg_model, setup.shape, mg_kwargs=kwargs)

    return {
        "ancestral": lambda: sg_diffusion.p_sample_loop(sg_model, setup.shape),
        "self-guided, every step": self_guided(1),
        f"self-guided, every {every}th step": self_guided(every),
        "minority-guided": lambda: mg_diffusion.p_sample_loop(
            mg_model, setup.shape, cond_fn=cond_fn, model_kwargs={}
        ),
    }


def project_jobs(
    setup: Setup, diffusion: GaussianDiffusion, every: int
) -> dict[str, Callable[[], object]]:
    """Whole runs with this project's sampler, by row label."""

    def run(guide: Guide | None) -> Callable[[], object]:
        def job() -> Tensor:
            noise = SeededNoise(0, range(setup.shape[0]))
            return sample(setup.denoiser, diffusion, setup.shape, noise, guide=guide)

        return job

    every_step, sparse = guides(setup, 1), guides(setup, every)
    return {
        "ancestral": run(None),
        "self-guided, every step": run(every_step["self-guided"]),
        f"self-guided, every {every}th step": run(sparse["self-guided"]),
        "minority-guided": run(every_step["minority-guided"]),
    }


def against_authors(args: argparse.Namespace, clock: Clock, num_steps: int, repeats: int) -> None:
    """Print project / authors for whole runs on the same weights (ADM 64×64, width 64)."""
    sg, mg = import_authors(args.authors_sg), import_authors(args.authors_mg)
    width, batch = 64, 1 if args.quick else 4
    setup = adm64_setup(batch, width)
    diffusion = build_diffusion("cosine", 1000, str(num_steps), "learned_range")
    theirs = authors_jobs(sg, mg, setup, width, num_steps, args.every)
    ours = project_jobs(setup, diffusion, args.every)
    jobs = {
        f"{side} {name}": job
        for name in ours
        for side, job in (("a", theirs[name]), ("p", ours[name]))
    }
    times = interleaved_minima(jobs, repeats, clock, warm_up=False)
    print(f"\n{setup.name}, batch {batch}, {num_steps} DDPM steps, the same weights")
    print(f"| {'job':<28} | {'authors':>9} | {'project':>9} | {'project / authors':>17} |")
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 10}:|{'-' * 18}:|")
    for name in ours:
        a, p = times[f"a {name}"], times[f"p {name}"]
        print(f"| {name:<28} | {a:>8.2f}s | {p:>8.2f}s | {p / a:>17.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, short runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=5, help="self-guidance every n steps")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU clock: with --threads 1, immune to other processes",
    )
    parser.add_argument("--authors-sg", type=Path, help="checkout of soobin-um/sg-minority")
    parser.add_argument("--authors-mg", type=Path, help="checkout of soobin-um/minority-guidance")
    parser.add_argument(
        "--only-authors", action="store_true", help="only the table against the authors' code"
    )
    parser.add_argument("--run-steps", type=int, default=10, help="steps of the authors' runs")
    args = parser.parse_args()
    if (args.authors_sg is None) != (args.authors_mg is None):
        parser.error("give both --authors-sg and --authors-mg, or neither")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = time.process_time if args.cpu_time else time.perf_counter
    num_steps, step_repeats, run_repeats = (5, 2, 1) if args.quick else (25, 5, 2)
    diffusion = build_diffusion("cosine", 1000, str(num_steps), "learned_range")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'CPU' if args.cpu_time else 'wall'} time, {num_steps}-step cosine grid; "
        "self-guidance: l2, p_ratio 0.8, M 1; minority guidance: L = 100"
    )
    if args.authors_sg is not None:
        against_authors(args, clock, 2 if args.quick else args.run_steps, run_repeats)
    if args.only_authors:
        return
    if args.quick:
        setups = (digits_setup(batch=16), adm64_setup(batch=1, width=32))
    else:
        setups = (digits_setup(batch=64), adm64_setup(batch=4, width=64))
    for setup in setups:
        steps = step_costs(setup, diffusion, step_repeats, clock)
        runs = run_costs(setup, diffusion, args.every, run_repeats, clock)
        report(setup, steps, runs, num_steps, args.every)


if __name__ == "__main__":
    main()

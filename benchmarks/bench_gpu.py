"""Throughput and peak memory of 250-step sampling on one GPU, per architecture and precision.

For the CelebA-64 architecture at full width (``conf/model/adm_celeba64.yaml``, 192 channels)
and the LSUN-256 one (``conf/model/adm_lsun256.yaml``) it finds, per job and precision, the
largest batch that fits (doubling until out of memory, up to ``--max-batch``), times a few
steps at that batch and prints one table: images/s of a whole ``--steps``-step run (estimated
from the timed steps: ancestral = T'·unguided; minority-guided = T'·guided; self-guided (n = 5) =
(T' − G)·unguided + G·guided with G = ⌈T'/5⌉) and the peak GPU memory of a step.

Jobs: ancestral DDPM, minority-guided (an ADM noisy classifier of the official CelebA shape at the
same resolution, L = 100) and self-guided (l2, p_ratio 0.8, every 5th step). Precisions:
float32; "fp16 convert" (guided-diffusion's ``convert_to_fp16``, the authors' ``use_fp16``);
"bf16 autocast"; more with ``--precisions``. With ``--authors-sg PATH --authors-mg PATH``
(checkouts of the authors' repositories, imported, never copied) the authors' samplers are timed
the same way on the same weights, in float32 and with their own ``convert_to_fp16``.

    python benchmarks/bench_gpu.py                       # on a CUDA machine, under 10 minutes
    python benchmarks/bench_gpu.py --authors-sg ../sg-minority --authors-mg ../minority-guidance
    python benchmarks/bench_gpu.py --device cpu --tiny   # smoke run of every code path on CPU
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_guided_steps import NUM_LEVELS, authors_sg_kwargs, frozen, import_authors
from omegaconf import OmegaConf
from torch import Tensor, nn

from minority.diffusion.gaussian import build_diffusion
from minority.guidance.base import Guide, WeightSchedule
from minority.guidance.classifier import MinorityGuidance
from minority.guidance.self_guidance import SelfGuidance
from minority.models.adm import create_model
from minority.models.classifiers import build_classifier
from minority.models.denoiser import Denoiser
from minority.models.runtime import prepare_network
from minority.sampling.loop import step
from minority.seeding import SeededNoise

REPO = Path(__file__).resolve().parents[1]
ARCHS = {"CelebA-64": ("adm_celeba64.yaml", "cosine"), "LSUN-256": ("adm_lsun256.yaml", "linear")}
# Reduced shapes of the same architectures for --tiny (every code path, seconds on a CPU).
TINY = {
    "CelebA-64": dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2"),
    "LSUN-256": dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,1,2"),
}
PRECISIONS = {
    "float32": ("", "autocast"),
    "fp16 convert": ("float16", "convert"),
    "fp16 autocast": ("float16", "autocast"),
    "bf16 convert": ("bfloat16", "convert"),
    "bf16 autocast": ("bfloat16", "autocast"),
}
JOBS = ("ancestral", "minority-guided", "self-guided n=5")
MAX_BATCH = {"CelebA-64": 256, "LSUN-256": 64}
EVERY = 5


@dataclass
class Row:
    arch: str
    code: str
    precision: str
    job: str
    batch: int
    images_per_s: float
    peak_gib: float | None


def arch_flags(arch: str, tiny: bool) -> dict:
    """The guided-diffusion flags of an architecture (reduced with ``tiny``)."""
    node = OmegaConf.load(REPO / "conf" / "model" / ARCHS[arch][0])
    flags = OmegaConf.to_container(node)["flags"]
    flags = {**flags, "use_fp16": False, "dropout": 0.0}
    if tiny:
        flags.update(TINY[arch], num_head_channels=16)
    return flags


def classifier_flags(flags: dict, tiny: bool) -> dict:
    """The official CelebA minority classifier's flags at the architecture's resolution."""
    width = 32 if tiny else 128
    return dict(
        classifier_width=width,
        classifier_depth=1 if tiny else 2,
        classifier_attention_resolutions="32,16,8",
        classifier_num_head_channels=16 if tiny else 64,
        classifier_channel_mult=flags["channel_mult"],
    )


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in the layers ADM initialises to zero, so every path carries signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    return net


class Timer:
    """Seconds of a callable on ``device`` (synchronised on CUDA) and its peak memory."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def peak_gib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**30

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def seconds(self, fn: Callable[[], object], repeats: int) -> float:
        fn()
        self.sync()
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return best


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def largest_batch(make_step: Callable[[int], Callable[[], object]], max_batch: int) -> int:
    """The largest power-of-two batch ≤ ``max_batch`` whose step runs (0 if none)."""
    fits, batch = 0, 1
    while batch <= max_batch:
        try:
            make_step(batch)()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        fits, batch = batch, 2 * batch
    return fits


def run_seconds(job: str, unguided: float, guided: float, num_steps: int) -> float:
    """Seconds of a whole run from the step costs (module docstring)."""
    if job == "ancestral":
        return num_steps * unguided
    if job == "minority-guided":
        return num_steps * guided
    fired = len(range(0, num_steps, EVERY))
    return (num_steps - fired) * unguided + fired * guided


@dataclass
class Models:
    """One architecture's float32 weights, shared by every precision and by both codes."""

    flags: dict
    classifier_flags: dict
    unet_state: dict
    classifier_state: dict
    schedule: str


def build_models(arch: str, tiny: bool) -> Models:
    torch.manual_seed(0)
    flags = arch_flags(arch, tiny)
    cflags = classifier_flags(flags, tiny)
    size = flags["image_size"]
    unet = randomised(create_model(flags))
    classifier = randomised(build_classifier("adm", NUM_LEVELS, (3, size, size), **cflags))
    return Models(flags, cflags, unet.state_dict(), classifier.state_dict(), ARCHS[arch][1])


def project_steps(
    models: Models, precision: str, device: torch.device, num_steps: int
) -> dict[str, Callable[[int], Callable[[], object]]]:
    """Per job: batch -> one unguided / guided step of this project's sampler."""
    dtype, mode = PRECISIONS[precision]
    size = models.flags["image_size"]
    unet = create_model({**models.flags, "dtype": dtype})
    unet.load_state_dict(models.unet_state)
    net = prepare_network(frozen(unet).to(device), mode)
    denoiser = Denoiser(net, learn_sigma=True)
    cflags = {**models.classifier_flags, "classifier_dtype": dtype}
    classifier = build_classifier("adm", NUM_LEVELS, (3, size, size), **cflags)
    classifier.load_state_dict(models.classifier_state)
    classifier = prepare_network(frozen(classifier).to(device), mode)
    diffusion = build_diffusion(models.schedule, 1000, str(num_steps), "learned_range")
    guides = {
        "minority-guided": Guide(
            MinorityGuidance(classifier, NUM_LEVELS - 1, num_classes=NUM_LEVELS),
            WeightSchedule(3.5, "var"),
        ),
        "self-guided n=5": Guide(SelfGuidance("l2", p_ratio=0.8), WeightSchedule(0.4, "var")),
    }

    def maker(guide: Guide | None) -> Callable[[int], Callable[[], object]]:
        def make(batch: int) -> Callable[[], object]:
            x = torch.randn(batch, 3, size, size, device=device)
            noise = SeededNoise(0, range(batch), device)
            i = num_steps // 2
            return lambda: step(denoiser, diffusion, x, i, noise, guide=guide)

        return make

    return {"unguided": maker(None), **{job: maker(g) for job, g in guides.items()}}


def authors_steps(
    models: Models, precision: str, device: torch.device, num_steps: int, checkouts: tuple
) -> dict[str, Callable[[int], Callable[[], object]]] | None:
    """As :func:`project_steps` for the authors' samplers (float32 or their convert_to_fp16)."""
    if precision not in ("float32", "fp16 convert"):
        return None
    sg, mg = (import_authors(path) for path in checkouts)
    size = models.flags["image_size"]

    def unet(script_util):
        names = script_util.create_model.__code__.co_varnames
        model = script_util.create_model(**{k: v for k, v in models.flags.items() if k in names})
        model.load_state_dict(models.unet_state)
        model.to(device).eval()
        if precision != "float32":
            model.convert_to_fp16()
        return model

    sg_model, mg_model = unet(sg), unet(mg)
    flags = {**mg.classifier_defaults(), **models.classifier_flags, "image_size": size}
    names = mg.create_classifier.__code__.co_varnames
    classifier = mg.create_classifier(
        **{k: v for k, v in flags.items() if k in names}, out_channels=NUM_LEVELS
    )
    classifier.load_state_dict(models.classifier_state)
    classifier.to(device).eval()
    if precision != "float32":
        classifier.convert_to_fp16()
    spacing = dict(steps=1000, learn_sigma=True, noise_schedule=models.schedule)
    sg_diffusion = sg.create_gaussian_diffusion(**spacing, timestep_respacing=str(num_steps))
    mg_diffusion = mg.create_gaussian_diffusion(**spacing, timestep_respacing=str(num_steps))

    def make(job: str) -> Callable[[int], Callable[[], object]]:
        def at(batch: int) -> Callable[[], object]:
            x = torch.randn(batch, 3, size, size, device=device)
            t = torch.full((batch,), num_steps // 2, device=device)
            target = torch.full((batch,), NUM_LEVELS - 1, device=device)

            def cond_fn(x: Tensor, t: Tensor) -> Tensor:  # classifier_sample.cond_fn
                with torch.enable_grad():
                    x_in = x.detach().requires_grad_(True)
                    log_probs = torch.log_softmax(classifier(x_in, t), dim=-1)
                    selected = log_probs[range(len(log_probs)), target]
                    return torch.autograd.grad(selected.sum(), x_in)[0] * 3.5

            def run() -> object:
                with torch.no_grad():  # as in their p_sample_loop_progressive
                    if job == "minority-guided":
                        return mg_diffusion.p_sample(
                            mg_model, x, t, cond_fn=cond_fn, model_kwargs={}
                        )
                    kwargs = authors_sg_kwargs(1) if job == "self-guided n=5" else None
                    return sg_diffusion.p_sample(sg_model, x, t, mg_kwargs=kwargs)

            return run

        return at

    return {job: make(job) for job in ("unguided", *JOBS[1:])}


def measure(
    arch: str,
    code: str,
    precision: str,
    steps: dict[str, Callable[[int], Callable[[], object]]],
    args: argparse.Namespace,
    timer: Timer,
) -> list[Row]:
    """Largest batch, images/s and peak memory of every job of one (code, precision)."""
    rows = []
    for job in JOBS:
        guided = "unguided" if job == "ancestral" else job
        batch = largest_batch(steps[guided], max_batch(arch, args))
        if batch == 0:
            rows.append(Row(arch, code, precision, job, 0, 0.0, None))
            continue
        timer.reset()
        seconds = {
            name: timer.seconds(steps[name](batch), args.repeats) for name in {"unguided", guided}
        }
        run = run_seconds(job, seconds["unguided"], seconds[guided], args.steps)
        rows.append(Row(arch, code, precision, job, batch, batch / run, timer.peak_gib()))
    return rows


def max_batch(arch: str, args: argparse.Namespace) -> int:
    if args.max_batch is not None:
        return args.max_batch
    return 2 if args.tiny else MAX_BATCH[arch]


def print_table(rows: list[Row], args: argparse.Namespace, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, torch {torch.__version__}, {args.steps}-step runs estimated from timed steps, "
        f"largest power-of-two batch that fits{' (tiny shapes)' if args.tiny else ''}"
    )
    head = ("arch", "code", "precision", "job", "batch", "images/s", "peak GiB")
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---:|---:|---:|")
    for r in rows:
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.1f}"
        cells = (r.arch, r.code, r.precision, r.job, str(r.batch), f"{r.images_per_s:.3g}", peak)
        print("| " + " | ".join(cells) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="reduced shapes: a smoke run")
    parser.add_argument("--steps", type=int, default=250, help="T' of the runs estimated")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per cell (minimum)")
    parser.add_argument(
        "--max-batch", type=int, help="largest batch tried (default 256 at 64², 64 at 256²)"
    )
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--precisions", default="float32,fp16 convert,bf16 autocast")
    parser.add_argument("--authors-sg", type=Path, help="checkout of soobin-um/sg-minority")
    parser.add_argument("--authors-mg", type=Path, help="checkout of soobin-um/minority-guidance")
    args = parser.parse_args(argv)
    if (args.authors_sg is None) != (args.authors_mg is None):
        parser.error("give both --authors-sg and --authors-mg, or neither")
    if args.tiny and args.authors_sg is not None:
        parser.error("the authors' classifier exists only at full shapes; drop --tiny")
    unknown = (set(args.archs.split(",")) - set(ARCHS)) | (
        set(args.precisions.split(",")) - set(PRECISIONS)
    )
    if unknown:
        parser.error(f"unknown architecture or precision {sorted(unknown)[0]!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device here: run this on a GPU machine, or pass --device cpu --tiny.")
        return 2
    timer, rows = Timer(device), []
    for arch in args.archs.split(","):
        models = build_models(arch, args.tiny)
        for precision in args.precisions.split(","):
            steps = project_steps(models, precision, device, args.steps)
            rows += measure(arch, "project", precision, steps, args, timer)
            if args.authors_sg is not None:
                checkouts = (args.authors_sg, args.authors_mg)
                theirs = authors_steps(models, precision, device, args.steps, checkouts)
                if theirs is not None:
                    rows += measure(arch, "authors", precision, theirs, args, timer)
    print_table(rows, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

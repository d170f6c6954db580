"""Minority guidance (Um, Lee, Ye, ICLR 2024): steer sampling towards a minority-score class.

The direction is the gradient of the minority classifier's log-probability of the target label,

    g = ∇_{x_t} Σ_b log softmax(f_ψ(x_t, t))[b, l̃_b],

taken at the current (unclipped) x_t with the **original** timestep t; the weight schedule turns
it into μ + w·Σ·g (DDPM) or ε − √(1−ᾱ_t)·w·g (DDIM), as guided-diffusion's classifier guidance.
The classifier never sees the denoiser's graph, so the term does not need it.

Target labels l̃ (0 = most common … L−1 = most unique):

* an ``int``: the same l̃ for every sample;
* a ``Tensor`` (B,): one l̃ per sample;
* a pair ``(low, high)`` (any two-element non-tensor sequence): l̃ drawn uniformly from
  {low, …, high}, both included, for each sample from stream (seed, the sample's global index,
  ``target_class``) — apart from the sample's noise — so it does not depend on the batch.
  The global indices are those of the step's noise source
  (:class:`~minority.seeding.SeededNoise` ``.indices``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minority.errors import UserError, require
from minority.guidance.base import GuidanceContext
from minority.models.classifiers import build_classifier, classifier_spec
from minority.seeding import stream_generator

TargetClass = int | Tensor | Sequence[int]


def sample_target_classes(low: int, high: int, indices: Sequence[int], seed: int = 0) -> Tensor:
    """l̃ uniform on {low, …, high} per sample, from stream (``seed``, global index,
    ``target_class``) of :func:`~minority.seeding.stream_seed`: int64 (B,)."""
    require(low <= high, f"The target-class range ({low}, {high}) is empty.")
    draws = [
        torch.randint(
            int(low),
            int(high) + 1,
            (1,),
            generator=stream_generator(seed, i, "target_class"),
        )
        for i in indices
    ]
    return torch.cat(draws) if draws else torch.zeros(0, dtype=torch.int64)


def validate_target_class(target_class: TargetClass, num_classes: int) -> int | Tensor | tuple:
    """``target_class`` as an int, an int64 tensor or a (low, high) tuple, checked against L.

    Raises:
        UserError: a label outside [0, L), an empty range, or a sequence that is not a pair.
    """
    if isinstance(target_class, Tensor):
        target = target_class.detach().long().reshape(-1)
        values = target.tolist()
    elif isinstance(target_class, Sequence) and not isinstance(target_class, str):
        require(
            len(target_class) == 2,
            f"A target-class range is a pair (low, high); got {list(target_class)}.",
        )
        target = values = tuple(int(v) for v in target_class)
        require(target[0] <= target[1], f"The target-class range {target} is empty.")
    else:
        target = int(target_class)
        values = [target]
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise UserError(
            f"Target class {bad[0]} is outside 0..{num_classes - 1} of a minority classifier "
            f"with L = {num_classes} classes."
        )
    return target


class MinorityGuidance:
    """Guidance term ∇_{x_t} log p_ψ(l̃ | x_t, t) (module docstring); ``needs_graph`` is False.

    Args:
        classifier: ``classifier(x_t, t) -> logits (B, L)``, t original timesteps; frozen by
            the caller (eval mode).
        target_class: l̃ as an int, a per-sample tensor, or a (low, high) range.
        seed: the run's seed, keying a range's per-sample draws.
        num_classes: L, when the classifier does not expose it
            (:func:`~minority.models.classifiers.classifier_spec`).

    Raises:
        UserError: a target outside [0, L) (:func:`validate_target_class`).
    """

    needs_graph = False

    def __init__(
        self,
        classifier: nn.Module,
        target_class: TargetClass,
        seed: int = 0,
        num_classes: int | None = None,
    ):
        self.classifier = classifier
        self.num_classes = (
            num_classes if num_classes is not None else classifier_spec(classifier)[0]
        )
        self.target_class = validate_target_class(target_class, self.num_classes)
        self.seed = seed

    def targets(
        self, batch_size: int, device: torch.device, indices: Sequence[int] | None = None
    ) -> Tensor:
        """l̃ per sample, int64 (B,) on ``device``; a range needs the samples' global indices."""
        target = self.target_class
        if isinstance(target, int):
            return torch.full((batch_size,), target, dtype=torch.int64, device=device)
        if isinstance(target, tuple):
            if indices is None:
                raise UserError(
                    "A target-class range needs per-sample seeded noise (global sample indices)."
                )
            target = sample_target_classes(*target, indices, self.seed)
        require(
            target.numel() == batch_size,
            f"{target.numel()} target classes given for a batch of {batch_size}.",
        )
        return target.to(device)

    def log_prob_and_grad(
        self, x: Tensor, t: Tensor, indices: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """log p_ψ(l̃_b | x_b, t_b) (B,) and its gradient w.r.t. x (shape of x), both detached.

        Works under ``torch.no_grad`` and ``torch.inference_mode`` (Lightning's predict).

        Args:
            x: x_t (B, …), any (it is copied, not modified).
            t: int64 (B,) original timesteps.
            indices: global sample indices (for a target range).
        """
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            logits = self.classifier(x_in, t.clone())
            if logits.shape[-1] != self.num_classes:
                raise UserError(
                    f"The minority classifier outputs {logits.shape[-1]} classes, not the "
                    f"expected L = {self.num_classes}."
                )
            log_probs = F.log_softmax(logits, dim=-1)
            target = self.targets(x.shape[0], x.device, indices)
            selected = log_probs[torch.arange(x.shape[0], device=x.device), target]
            (grad,) = torch.autograd.grad(selected.sum(), x_in)
        return selected.detach(), grad.detach()

    def direction(self, ctx: GuidanceContext) -> Tensor:
        """g = ∇_{x_t} Σ_b log p_ψ(l̃_b | x_t, t), shape of ``ctx.x``, detached."""
        indices = getattr(ctx.noise, "indices", None)
        return self.log_prob_and_grad(ctx.x, ctx.t, indices)[1]


def check_classifier_fits(
    source: nn.Module | Mapping[str, Any],
    num_classes: int | None = None,
    sample_shape: Sequence[int] | None = None,
    noise_schedule: str | None = None,
    diffusion_steps: int | None = None,
) -> None:
    """Check that a minority classifier suits the sampling run; None skips a check.

    Args:
        source: the classifier module, or the hyper-parameters saved with it (a mapping with
            ``num_classes``, ``sample_shape`` and optionally ``noise_schedule`` /
            ``diffusion_steps``, as :class:`~minority.lit.classifier.MinorityClassifierModule`
            stores them).
        num_classes: the L the run's target labels refer to.
        sample_shape: the shape of one generated sample.
        noise_schedule, diffusion_steps: the denoiser's schedule.

    Raises:
        UserError: the classifier was trained for another L, sample shape or schedule.
    """
    if isinstance(source, nn.Module):
        trained_classes, trained_shape = classifier_spec(source)
        saved: Mapping[str, Any] = {}
    else:
        saved = source
        trained_classes, trained_shape = int(saved["num_classes"]), saved["sample_shape"]
    if num_classes is not None and trained_classes != num_classes:
        raise UserError(
            f"The minority classifier was trained for L = {trained_classes} classes but "
            f"L = {num_classes} is requested; use a classifier trained with {num_classes}."
        )
    if sample_shape is not None and tuple(trained_shape) != tuple(sample_shape):
        raise UserError(
            f"The minority classifier takes samples of shape {tuple(trained_shape)} but this "
            f"run generates {tuple(sample_shape)}; train one for this data."
        )
    for name, expected in (
        ("noise_schedule", noise_schedule),
        ("diffusion_steps", diffusion_steps),
    ):
        if expected is not None and name in saved and saved[name] != expected:
            raise UserError(
                f"The minority classifier was trained with {name} = {saved[name]} but the "
                f"diffusion model uses {expected}; train it on the model's schedule."
            )


def released_cascade(
    head_state: Mapping[str, Tensor], extractor_weights: str | None = None
) -> nn.Module:
    """The official LSUN cascade from the released head (``mc_lsun.pt``, a bare state dict)
    and the ADM 256×256 classifier file (``extractor_weights``; None searches the standard
    places). L is read from the head's output layer."""
    from minority.models.adm import create_minority_cascade, lsun_head_flags

    num_classes = int(head_state["out.2.c_proj.bias"].numel())
    cascade = create_minority_cascade(head_flags=lsun_head_flags(num_classes))
    cascade.load_head(dict(head_state))
    cascade.load_extractor(extractor_weights)
    return cascade.requires_grad_(False).eval()


def load_minority_classifier(
    path: str | Path,
    num_classes: int | None = None,
    sample_shape: Sequence[int] | None = None,
    noise_schedule: str | None = None,
    diffusion_steps: int | None = None,
    map_location: str | torch.device = "cpu",
    extractor_weights: str | None = None,
) -> nn.Module:
    """The frozen classifier (eval mode) of a
    :class:`~minority.lit.classifier.MinorityClassifierModule` checkpoint, or
    the official LSUN cascade when ``path`` is the released head (``mc_lsun.pt`` layout).

    The given expectations (None skips one) are checked against the saved hyper-parameters
    before the weights are loaded (:func:`~minority.guidance.classifier.check_classifier_fits`).

    Raises:
        UserError: the file is missing or is not such a checkpoint, or it does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Minority-classifier checkpoint {path} does not exist; train it first.")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
        if "out.2.c_proj.bias" in content:
            return released_cascade(content, extractor_weights)
        hparams = content["hyper_parameters"]
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(
            f"{path} is not a minority-classifier checkpoint ({type(error).__name__})."
        ) from None
    check_classifier_fits(hparams, num_classes, sample_shape, noise_schedule, diffusion_steps)
    classifier = build_classifier(
        hparams["arch"],
        hparams["num_classes"],
        hparams["sample_shape"],
        **dict(hparams["arch_kwargs"] or {}),
    )
    state = {key.removeprefix("classifier."): value for key, value in content["state_dict"].items()}
    classifier.load_state_dict(state)
    return classifier.requires_grad_(False).eval()

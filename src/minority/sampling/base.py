"""The sampler contract: one object per algorithm, one ``step`` per reverse step.

A :class:`Sampler` turns x_i into x_{i−1} on the respaced grid of a diffusion. Its ``step``
reads like the paper's algorithm box: it evaluates the model (:func:`evaluate`, as often as the
algorithm needs), draws the step's own noise, adds the guidance direction in its own way when
the loop passes a guide (a mean shift for DDPM, an ε shift for DDIM and DPM-Solver++), and
returns a :class:`StepOutput`. What a multistep sampler remembers between steps lives in the
:class:`Trajectory` of one call of :func:`minority.sampling.loop.sample`
(:meth:`Sampler.trajectory` makes a fresh one), never in the sampler, so one sampler object
serves any number of runs.

Order of draws within a step (the golden trajectories replay it): the step's own noise first,
then whatever the guidance term draws.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from minority.diffusion.gaussian import GaussianDiffusion
from minority.guidance.base import GuidanceContext
from minority.models.denoiser import Denoiser
from minority.seeding import NoiseSource

if TYPE_CHECKING:
    from minority.guidance.base import Guide


@dataclass
class StepOutput:
    """One step's result. x_prev: x_{i−1}; pred_xstart: the (clipped) x̂0 it used."""

    x_prev: Tensor
    pred_xstart: Tensor


@dataclass
class Trajectory:
    """What the steps of one sampling run share.

    Attributes:
        denoiser: the ε-prediction model.
        diffusion: the respaced diffusion.
        noise: the source of every draw (:mod:`minority.seeding`).
        y: class labels of a class-conditional model, int64 (B,), or None.
        state: the sampler's multistep state (None for one-step samplers).
    """

    denoiser: Denoiser
    diffusion: GaussianDiffusion
    noise: NoiseSource
    y: Tensor | None = None
    state: Any = None


@dataclass
class Evaluation:
    """The model at x_i.

    Attributes:
        x: x_i (B, …); a leaf with ``requires_grad`` when evaluated with graph.
        k: respaced indices, int64 (B,).
        eps: ε_θ(x_i, t) (B, …), attached to ``x`` when evaluated with graph.
        log_variance: log σ²_i of p(x_{i−1} | x_i), broadcastable to x (noise scale).
        variance: Σ_i, guided-diffusion's ``variance`` (0 at i = 0 for fixed_small).
        pred_xstart: Tweedie's x̂0, clipped to [−1, 1] when asked, detached.
    """

    x: Tensor
    k: Tensor
    eps: Tensor
    log_variance: Tensor
    variance: Tensor
    pred_xstart: Tensor

    def direction(self, trajectory: Trajectory, guide: Guide) -> Tensor:
        """The guide's direction g at this evaluation (B, …), detached."""
        diffusion = trajectory.diffusion
        ctx = GuidanceContext(
            self.x,
            self.k,
            diffusion.original_timestep(self.k),
            self.eps,
            self.log_variance,
            diffusion,
            trajectory.denoiser,
            trajectory.noise,
            trajectory.y,
        )
        return guide.term.direction(ctx)


def evaluate(
    trajectory: Trajectory, x: Tensor, i: int, graph: bool, clip_denoised: bool
) -> Evaluation:
    """One forward pass of the model at (x_i, i). With ``graph`` it is made with gradient, so
    a guidance term can differentiate ε_θ through it (no second forward at x_i)."""
    diffusion = trajectory.diffusion
    k = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
    x_in = x.detach().requires_grad_(graph)
    with torch.set_grad_enabled(graph):
        out = trajectory.denoiser(x_in, diffusion.original_timestep(k), trajectory.y)
    x, eps = x_in.detach(), out.eps.detach()
    var_values = None if out.var_values is None else out.var_values.detach()
    pred_xstart = diffusion.pred_xstart(x, k, eps)
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    return Evaluation(
        x_in,
        k,
        out.eps,
        diffusion.log_variance(k, x, var_values),
        diffusion.variance(k, x, var_values),
        pred_xstart,
    )


def not_last(k: Tensor, like: Tensor) -> Tensor:
    """1[i ≠ 0] per sample, shaped to broadcast over ``like``: no noise is added at i = 0."""
    return (k != 0).to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class Sampler(ABC):
    """A reverse-process algorithm.

    Args:
        clip_denoised: clip x̂0 to [−1, 1] on the main path (as the official samplers do).
    """

    name: str = "sampler"

    def __init__(self, clip_denoised: bool = True) -> None:
        self.clip_denoised = bool(clip_denoised)

    def initial_state(self, diffusion: GaussianDiffusion) -> Any:
        """The multistep state a trajectory starts with (None: the sampler keeps none)."""
        return None

    def trajectory(
        self,
        denoiser: Denoiser,
        diffusion: GaussianDiffusion,
        noise: NoiseSource,
        y: Tensor | None = None,
    ) -> Trajectory:
        """A fresh trajectory for this sampler (its multistep state from the start)."""
        return Trajectory(denoiser, diffusion, noise, y, self.initial_state(diffusion))

    def evaluate(
        self, trajectory: Trajectory, x: Tensor, i: int, guide: Guide | None
    ) -> Evaluation:
        """The model at x_i, with graph when the guide's term differentiates through ε_θ."""
        graph = guide is not None and guide.term.needs_graph
        return evaluate(trajectory, x, i, graph, self.clip_denoised)

    @abstractmethod
    def step(
        self, trajectory: Trajectory, x: Tensor, i: int, guide: Guide | None = None
    ) -> StepOutput:
        """x_{i−1} from x_i (B, …) at respaced index ``i``; ``guide`` only when it fires here.
        Called for i = start, …, 0 in order within one trajectory."""

    def settings(self) -> dict[str, Any]:
        """The sampler's config keys and values (for messages about a run's settings)."""
        return {"sampler": self.name, "sampler.clip_denoised": self.clip_denoised}

"""The Denoiser contract: one callable interface over every backbone.

Given x_t, the **original** integer timestep and optional class labels, a Denoiser returns ε and,
for models with learned variance, the variance interpolant v. Respacing never reaches a network.
A super-resolution backbone is also conditioned on one low-resolution image per sample; those
images are bound to the denoiser of a batch (:meth:`Denoiser.with_low_res`), so samplers and
guidance terms call it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from minority.errors import UserError


@dataclass
class ModelOutput:
    """A denoiser's prediction at (x_t, t).

    Attributes:
        eps: predicted noise ε_θ(x_t, t), shape of x_t.
        var_values: learned-variance interpolant v (about [−1, 1]), shape of x_t, or None.
    """

    eps: Tensor
    var_values: Tensor | None = None


class Denoiser(nn.Module):
    """Wrap a network ``net(x, t, y=None) -> (B, C or 2C, …)`` as ε (and v) prediction.

    Args:
        net: the backbone; receives original timesteps (int64 (B,)), never respaced indices.
        learn_sigma: whether the output's channel axis (dim 1) stacks [ε, v].
        class_cond: whether ``y`` is passed on to the backbone.
        super_res: whether the backbone is ``net(x, t, low_res, y=None)``
            (:class:`~minority.models.adm.SuperResModel`); bind the low-resolution images of a
            batch with :meth:`with_low_res` before calling it.
    """

    def __init__(
        self,
        net: nn.Module,
        learn_sigma: bool = False,
        class_cond: bool = False,
        super_res: bool = False,
    ):
        super().__init__()
        self.net = net
        self.learn_sigma = learn_sigma
        self.class_cond = class_cond
        self.super_res = super_res
        self.low_res: Tensor | None = None

    def with_low_res(self, low_res: Tensor) -> Denoiser:
        """A denoiser sharing this network, conditioned on ``low_res``: (B, C, h, w) in [−1, 1],
        image b for sample b of the batch it denoises."""
        if not self.super_res:
            raise UserError("Only a super-resolution model (arch adm_sr) takes low-res images.")
        bound = Denoiser(self.net, self.learn_sigma, self.class_cond, super_res=True)
        bound.low_res = low_res
        return bound

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> ModelOutput:
        """x: (B, …) noisy input; t: int64 (B,) original timesteps; y: int64 (B,) or None."""
        inputs = (x, t, self._low_res_for(x)) if self.super_res else (x, t)
        out = self.net(*inputs, y) if self.class_cond else self.net(*inputs)
        if not self.learn_sigma:
            return ModelOutput(eps=out)
        eps, var_values = out.chunk(2, dim=1)
        return ModelOutput(eps=eps, var_values=var_values)

    def _low_res_for(self, x: Tensor) -> Tensor:
        """The bound images for x's batch; an x stacking m copies of the batch on the batch
        axis (Monte-Carlo draws) gets m stacked copies of them."""
        if self.low_res is None:
            raise UserError(
                "The super-resolution model needs low-resolution images; set upsample.low_res_npz."
            )
        copies, rest = divmod(x.shape[0], self.low_res.shape[0])
        if rest:
            raise ValueError(f"{x.shape[0]} inputs for {self.low_res.shape[0]} low-res images")
        return self.low_res.repeat(copies, *([1] * (x.ndim - 1)))

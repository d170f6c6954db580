"""Inference-time options of a network: half-precision mode, memory layout, checkpointing, compile.

None of them changes what a network computes beyond rounding; they trade memory and speed:

* ``mode``: "autocast" (default; the ADM flags ``use_fp16`` / ``dtype`` run the forward under
  ``torch.autocast``) or "convert" (guided-diffusion's ``convert_to_fp16``: the ADM torso's
  convolutions stored and run in the compute dtype, normalisation and embeddings in float32;
  :meth:`~minority.models.adm.unet._ADMBase.convert_torso`).
* ``channels_last``: NHWC weights and activations (faster convolutions on recent GPUs and, for the
  ADM UNet, on CPU).
* ``checkpointing``: recompute each ADM block's activations in the backward pass (the forward
  with graph of self-guidance keeps far less memory, at the cost of a second forward).
* ``compile``: ``torch.compile`` the network; if compiling fails on the first call, a warning
  says so and the network runs eagerly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from minority.errors import require

PRECISION_MODES = ("autocast", "convert")


class CompiledOrEager(nn.Module):
    """``torch.compile(net)``, falling back to ``net`` itself when compilation fails."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self._compiled: list[Any] = [torch.compile(net)]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled:
            try:
                return self._compiled[0](*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); running eagerly.",
                    stacklevel=2,
                )
                self._compiled.clear()
        return self.net(*args, **kwargs)


def enable_checkpointing(net: nn.Module) -> None:
    """Switch on activation checkpointing of every ADM residual and attention block."""
    for module in net.modules():
        if hasattr(module, "use_checkpoint"):
            module.use_checkpoint = True


def prepare_network(
    net: nn.Module,
    mode: str = "autocast",
    channels_last: bool = False,
    checkpointing: bool = False,
    compile: bool = False,
) -> nn.Module:
    """Apply the inference options (module docstring) to ``net``; returns the network to call.

    Raises:
        UserError: an unknown ``mode``, or "convert" for a network that has no ADM torso.
    """
    require(mode in PRECISION_MODES, f"precision.mode must be one of {PRECISION_MODES}.")
    if mode == "convert":
        require(
            hasattr(net, "convert_torso"),
            "precision.mode=convert needs an ADM network (arch adm or adm_sr).",
        )
        net.convert_torso()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if checkpointing:
        enable_checkpointing(net)
    return CompiledOrEager(net) if compile else net

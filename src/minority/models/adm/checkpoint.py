"""Loading guided-diffusion ``.pt`` state dicts, with a diagnosis when they do not fit.

A checkpoint built with other flags than the model fails ``strict=True`` loading with a long
PyTorch message. Here the mismatch is summarised in one sentence that names the flag most
likely to be wrong, judged from which keys are missing or unexpected and which shapes differ.
Flags that change no shape (num_heads, num_head_channels, use_new_attention_order, dropout)
cannot be detected from a state dict.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from minority.errors import UserError
from minority.models.adm.unet import EncoderUNetModel
from minority.outputs import load_torch_file
from minority.weights import find_weights

StateSource = str | os.PathLike | Mapping[str, Tensor]
_EXAMPLES = 3


@dataclass(frozen=True)
class _FlagNames:
    """How the flags that shape a network are called for one kind of model."""

    width: str
    depth: str
    channel_mult: str
    attention: str
    scale_shift: str
    updown: str


_UNET_FLAGS = _FlagNames(
    "num_channels",
    "num_res_blocks",
    "channel_mult",
    "attention_resolutions",
    "use_scale_shift_norm",
    "resblock_updown",
)
_CLASSIFIER_FLAGS = _FlagNames(
    "classifier_width",
    "classifier_depth",
    "classifier_channel_mult (or image_size)",
    "classifier_attention_resolutions",
    "classifier_use_scale_shift_norm",
    "classifier_resblock_updown",
)


def read_state_dict(source: StateSource) -> dict[str, Tensor]:
    """A state dict from a mapping or a ``.pt`` file (loaded on CPU with ``weights_only``).

    Raises:
        MissingWeightsError: the file does not exist (the message names the path).
        UserError: the file is not a readable state dict.
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = find_weights(Path(source).name, path=source, purpose="ADM checkpoint")
    state = load_torch_file(path, "Checkpoint", "give a guided-diffusion state dict (.pt)")
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"Checkpoint {path} is not a plain state dict of tensors.")
    return dict(state)


def load_adm_checkpoint(
    model: nn.Module,
    source: StateSource,
    ignore_prefixes: Sequence[str] = (),
    name: object = None,
) -> None:
    """Load a guided-diffusion state dict into ``model`` with ``strict=True``.

    Args:
        model: a :class:`UNetModel`, :class:`SuperResModel` or :class:`EncoderUNetModel`.
        source: path of a ``.pt`` file, or a state dict.
        ignore_prefixes: checkpoint keys starting with any of these are dropped first (e.g.
            ``("out.",)`` to load a full classifier into a feature extractor).
        name: what to call the checkpoint in errors (default: its path, or "(state dict)").

    Raises:
        UserError: missing file, unreadable file, or a checkpoint that does not fit; the message
            lists a few missing / unexpected keys and shape mismatches and names the flag that
            is most likely wrong.
    """
    state = {
        k: v for k, v in read_state_dict(source).items() if not k.startswith(tuple(ignore_prefixes))
    }
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ckpt = {k: tuple(v.shape) for k, v in state.items()}
    if own != ckpt:
        name = name or (source if not isinstance(source, Mapping) else "(state dict)")
        raise UserError(_mismatch_message(model, name, ckpt, own))
    model.load_state_dict(state, strict=True)


Shapes = Mapping[str, tuple[int, ...]]


def _mismatch_message(model: nn.Module, name: object, ckpt: Shapes, own: Shapes) -> str:
    missing = sorted(own.keys() - ckpt.keys())
    unexpected = sorted(ckpt.keys() - own.keys())
    shapes = [
        f"{k} {ckpt[k]} in the checkpoint vs {own[k]}"
        for k in sorted(own.keys() & ckpt.keys())
        if ckpt[k] != own[k]
    ]
    return (
        f"Checkpoint {name} does not fit the {type(model).__name__} built from the flags "
        f"(likely wrong flag: {' or '.join(suspect_flags(model, ckpt, own))}): "
        f"{_some(missing)} missing, {_some(unexpected)} unexpected, "
        f"{_some(shapes, 'shape mismatches')}."
    )


def _some(items: list[str], what: str = "keys") -> str:
    """A count with the first few names, e.g. ``12 keys (a, b, c, …)``."""
    if not items:
        return f"0 {what}"
    more = ", …" if len(items) > _EXAMPLES else ""
    return f"{len(items)} {what} ({', '.join(items[:_EXAMPLES])}{more})"


def suspect_flags(model: nn.Module, ckpt: Shapes, own: Shapes) -> list[str]:
    """Flags whose wrong value explains how a checkpoint differs from ``model``.

    Args:
        model: the model the checkpoint should fit (decides the flag names).
        ckpt, own: key → shape of the checkpoint and of the model.

    Independent causes (class labels, output head, FiLM width, input channels) are all
    reported; of the structural causes (width, block counts, attention placement, resampling
    blocks, level widths) only the first that applies, since each one also disturbs the keys
    the later ones look at.
    """
    names = _CLASSIFIER_FLAGS if isinstance(model, EncoderUNetModel) else _UNET_FLAGS
    mismatched = {k: (ckpt[k], own[k]) for k in own.keys() & ckpt.keys() if ckpt[k] != own[k]}
    differing = sorted(own.keys() ^ ckpt.keys())
    hints = _label_hints(ckpt, own)
    hints += _output_hints(model, differing, mismatched)
    stem = mismatched.pop("input_blocks.0.0.weight", None)
    if stem and stem[0][1] != stem[1][1]:
        hints.append(f"in_channels (the checkpoint takes {stem[0][1]} input channels)")
    film = _film_keys(ckpt, own)
    if film:
        hints.append(names.scale_shift)
    trunk = re.compile(r"^(time_embed|input_blocks|middle_block|output_blocks)\.")
    unexplained = {k: v for k, v in mismatched.items() if trunk.match(k) and k not in film}
    if stem and stem[0][0] != stem[1][0]:
        unexplained["input_blocks.0.0.weight"] = stem
    hints += _structural_hints(
        names, ckpt, own, [k for k in differing if trunk.match(k)], unexplained
    )[:1]
    return hints or ["one of the architecture flags"]


def _label_hints(ckpt: Shapes, own: Shapes) -> list[str]:
    key = "label_emb.weight"
    if key in own and key not in ckpt:
        return ["class_cond (the checkpoint is unconditional)"]
    if key in ckpt and key not in own:
        return ["class_cond (the checkpoint is class-conditional)"]
    if key in own and ckpt[key] != own[key]:
        return [f"num_classes (the checkpoint has {ckpt[key][0]})"]
    return []


def _output_hints(model: nn.Module, differing: list[str], mismatched: dict) -> list[str]:
    """Output-head causes: learned sigma (UNet), class count, pool type, pool size (classifier)."""
    is_classifier = isinstance(model, EncoderUNetModel)
    if is_classifier and any(k.startswith("out.") for k in differing):
        return ["classifier_pool"]
    hints = []
    pool_embedding = mismatched.get("out.2.positional_embedding")
    if pool_embedding and pool_embedding[0][0] == pool_embedding[1][0]:
        hints.append("image_size (size of the attention pool)")
    final = [k for k in model.state_dict() if k.startswith("out.") and k.endswith(".weight")][-1:]
    if final and final[0] in mismatched:
        ckpt, own = mismatched[final[0]]
        if ckpt[0] != own[0] and ckpt[1:] == own[1:]:
            hints.append(_output_width_hint(is_classifier, ckpt[0], own[0]))
    return hints


def _output_width_hint(is_classifier: bool, ckpt: int, own: int) -> str:
    if is_classifier:
        return f"out_channels (the checkpoint has {ckpt} classes)"
    if ckpt == 2 * own:
        return "learn_sigma (the checkpoint learns the variance)"
    if own == 2 * ckpt:
        return "learn_sigma (the checkpoint has a fixed variance)"
    return f"in_channels (the checkpoint outputs {ckpt} channels)"


def _film_keys(ckpt: Shapes, own: Shapes) -> list[str]:
    """Embedding projections, all twice (or all half) as wide in the checkpoint as in the model
    with the same input width: scale-shift norm on one side only. Empty when not all are."""
    keys = [k for k in own.keys() & ckpt.keys() if k.endswith("emb_layers.1.weight")]
    for factor in (2.0, 0.5):
        if keys and all(ckpt[k][1] == own[k][1] and ckpt[k][0] == factor * own[k][0] for k in keys):
            return [k[: -len("weight")] + suffix for k in keys for suffix in ("weight", "bias")]
    return []


_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.")
_ATTENTION = re.compile(r"\.(qkv|proj_out|norm)\.")
_RESAMPLE = re.compile(r"\.\d+\.(op|conv)\.(weight|bias)$")


def _blocks(keys: Iterable[str]) -> set[tuple[str, str]]:
    """(input_blocks|output_blocks, index) pairs present among ``keys``."""
    return {m.groups() for m in map(_BLOCK.match, keys) if m}


def _structural_hints(
    names: _FlagNames, ckpt: Shapes, own: Shapes, differing: list[str], mismatched: dict
) -> list[str]:
    """Candidate structural causes, most fundamental first."""
    hints = []
    if "time_embed.0.weight" in mismatched:
        width = mismatched["time_embed.0.weight"][0][1]
        hints.append(f"{names.width} (the checkpoint has {width})")
    if _blocks(ckpt) != _blocks(own):
        hints.append(f"{names.depth} or {names.channel_mult} (the number of blocks differs)")
    if any(_ATTENTION.search(k) for k in differing):
        hints.append(names.attention)
    if any(_RESAMPLE.search(k) for k in differing):
        hints.append(names.updown)
    if mismatched:
        hints.append(names.channel_mult)
    return hints

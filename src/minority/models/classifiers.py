"""Noise-conditional minority classifiers p_ψ(l | x_t, t) for the small data sets, and a factory.

Every classifier is called as ``classifier(x_t, t) -> logits (B, L)`` with t the **original**
timestep (int64 (B,)), and exposes ``num_classes`` (L) and ``input_shape`` (the shape of one
sample) so that a classifier trained for another L or another image size is detected before
sampling (:func:`classifier_spec`). The ADM :class:`~minority.models.adm.EncoderUNetModel` and
the LSUN :class:`~minority.models.adm.MinorityCascadeClassifier` share the call signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from minority.errors import UserError, require
from minority.models.adm.layers import timestep_embedding

CLASSIFIER_ARCHS = ("mlp", "conv", "adm", "adm_cascade")


def _time_mlp(width: int) -> nn.Sequential:
    """Sinusoidal features of t (width ``width``) → a learned embedding of the same width."""
    return nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))


class MLPClassifier(nn.Module):
    """MLP on flattened samples with the timestep embedding added after the input layer.

    Args:
        num_classes: L.
        input_shape: shape of one sample, e.g. (2,) for toy2d points; flattened on input.
        hidden: width of every hidden layer.
        depth: number of hidden layers (≥ 1).
    """

    def __init__(
        self, num_classes: int, input_shape: Sequence[int] = (2,), hidden: int = 256, depth: int = 3
    ):
        super().__init__()
        require(depth >= 1, f"MLP classifier depth must be at least 1 (got {depth}).")
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.hidden = hidden
        self.inp = nn.Linear(math.prod(self.input_shape), hidden)
        self.time = _time_mlp(hidden)
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.body = nn.Sequential(*layers, nn.SiLU(), nn.Linear(hidden, self.num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, *input_shape) noisy samples; t: int64 (B,) original timesteps → (B, L)."""
        return self.body(
            self.inp(x.flatten(1)) + self.time(timestep_embedding(t, self.hidden).to(x.dtype))
        )


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (as many as divide ``channels``)."""
    return nn.GroupNorm(math.gcd(channels, 32), channels)


class TimeResBlock(nn.Module):
    """Residual block conditioned on t by scale-shift after the second norm (ADM's FiLM):
    h = conv3×3(SiLU(GN(x))); h = conv3×3(SiLU(GN(h)·(1 + scale) + shift)); out = skip(x) + h.
    """

    def __init__(self, channels_in: int, channels_out: int, emb_width: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(channels_in), nn.SiLU(), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_width, 2 * channels_out))
        self.out_norm = _norm(channels_out)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels_out, channels_out, 3, padding=1)
        )
        self.skip = (
            nn.Identity()
            if channels_in == channels_out
            else nn.Conv2d(channels_in, channels_out, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(self.in_layers(x)) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class ConvClassifier(nn.Module):
    """A small convolutional encoder for C×H×W images (e.g. 1×8×8 digits).

    One :class:`TimeResBlock` per level, 2×2 average pooling between levels, then
    GN → SiLU → global average → linear.

    Args:
        num_classes: L.
        input_shape: (C, H, W).
        width: channels of the first level.
        channel_mult: width multiplier per level; H and W must be divisible by
            2^(levels − 1).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int] = (1, 8, 8),
        width: int = 64,
        channel_mult: Sequence[int] = (1, 2),
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        require(len(self.input_shape) == 3, f"ConvClassifier needs (C, H, W), got {input_shape}.")
        factor = 2 ** (len(channel_mult) - 1)
        require(
            self.input_shape[1] % factor == 0 and self.input_shape[2] % factor == 0,
            f"Image size {self.input_shape[1:]} is not divisible by {factor} "
            f"({len(channel_mult)} levels); use fewer levels in channel_mult.",
        )
        self.width = width
        self.time = _time_mlp(width)
        self.stem = nn.Conv2d(self.input_shape[0], width, 3, padding=1)
        widths = [width * int(m) for m in channel_mult]
        self.blocks = nn.ModuleList(
            TimeResBlock(w_in, w_out, width)
            for w_in, w_out in zip([width, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(
            _norm(widths[-1]),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(widths[-1], self.num_classes),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, C, H, W) noisy images; t: int64 (B,) original timesteps → (B, L)."""
        emb = self.time(timestep_embedding(t, self.width).to(x.dtype))
        h = self.stem(x)
        for level, block in enumerate(self.blocks):
            if level:
                h = self.pool(h)
            h = block(h, emb)
        return self.head(h)


def classifier_spec(classifier: nn.Module) -> tuple[int, tuple[int, ...]]:
    """(L, input shape) of a minority classifier: the project's, an ADM encoder or a cascade.

    Raises:
        UserError: the classifier's type does not tell its number of classes and input shape.
    """
    from minority.models.adm import EncoderUNetModel, MinorityCascadeClassifier

    if isinstance(classifier, MinorityCascadeClassifier):
        extractor = classifier.extractor
        size = extractor.image_size
        return classifier.head.out_channels, (extractor.in_channels, size, size)
    if isinstance(classifier, EncoderUNetModel):
        size = classifier.image_size
        return classifier.out_channels, (classifier.in_channels, size, size)
    if hasattr(classifier, "num_classes") and hasattr(classifier, "input_shape"):
        return int(classifier.num_classes), tuple(classifier.input_shape)
    raise UserError(
        f"Cannot tell the classes and input shape of a {type(classifier).__name__}; give it "
        "'num_classes' and 'input_shape' attributes."
    )


def build_classifier(
    arch: str, num_classes: int, sample_shape: Sequence[int], **kwargs: Any
) -> nn.Module:
    """A minority classifier with random weights (the cascade's extractor is pretrained).

    Args:
        arch: "mlp" (:class:`MLPClassifier`; kwargs hidden, depth), "conv"
            (:class:`ConvClassifier`; kwargs width, channel_mult), "adm" (an ADM
            EncoderUNetModel; kwargs are guided-diffusion classifier flags, e.g.
            classifier_width, classifier_depth, classifier_attention_resolutions; image_size,
            in_channels and out_channels follow ``sample_shape`` and ``num_classes``) or
            "adm_cascade" (the LSUN cascade; kwargs extractor_flags, head_flags — flag
            mappings, None for the official ones — and extractor_weights, the path of
            ``256x256_classifier.pt`` or None to search the weight folders).
        num_classes: L.
        sample_shape: shape of one sample, (D,) or (C, H, W).
    """
    shape = tuple(int(s) for s in sample_shape)
    if arch == "mlp":
        return MLPClassifier(num_classes, shape, **kwargs)
    if arch == "conv":
        return ConvClassifier(num_classes, shape, **kwargs)
    if arch == "adm":
        from minority.models.adm import create_classifier

        channels, size = _square_image(shape)
        flags = {**kwargs, "image_size": size, "in_channels": channels, "out_channels": num_classes}
        return create_classifier(flags)
    if arch == "adm_cascade":
        return _cascade(num_classes, shape, **kwargs)
    raise UserError(f"Unknown classifier arch '{arch}'; choose one of {CLASSIFIER_ARCHS}.")


def _square_image(shape: tuple[int, ...]) -> tuple[int, int]:
    require(
        len(shape) == 3 and shape[1] == shape[2],
        f"ADM classifiers need square C×H×W images, got sample shape {shape}.",
    )
    return shape[0], shape[1]


def _cascade(
    num_classes: int,
    shape: tuple[int, ...],
    extractor_flags: Mapping[str, Any] | None = None,
    head_flags: Mapping[str, Any] | None = None,
    extractor_weights: str | None = None,
) -> nn.Module:
    from minority.models.adm import (
        ClassifierFlags,
        MinorityCascadeClassifier,
        create_classifier,
        create_feature_extractor,
        lsun_extractor_flags,
        lsun_head_flags,
    )

    extractor_flags = ClassifierFlags.coerce(extractor_flags or lsun_extractor_flags())
    require(
        (extractor_flags.in_channels, extractor_flags.image_size) == _square_image(shape),
        f"The cascade's extractor takes {extractor_flags.in_channels}×"
        f"{extractor_flags.image_size}² images but the samples are {shape}.",
    )
    extractor = create_feature_extractor(extractor_flags)
    head = create_classifier(
        replace(ClassifierFlags.coerce(head_flags), out_channels=num_classes)
        if head_flags
        else lsun_head_flags(num_classes, extractor.trunk_channels)
    )
    cascade = MinorityCascadeClassifier(extractor, head)
    cascade.load_extractor(extractor_weights)
    return cascade

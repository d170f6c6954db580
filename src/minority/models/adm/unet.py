"""ADM networks: the UNet denoiser, its super-resolution variant and the encoder classifier.

Parameter names and shapes equal those of guided-diffusion's ``UNetModel``, ``SuperResModel`` and
``EncoderUNetModel``, so the released checkpoints load with ``strict=True``. Networks receive
**original** timesteps (no rescaling, no respaced indices).

Precision: by default weights stay float32. ``use_fp16=True`` (or ``dtype=torch.float16``) runs
the forward pass under ``torch.autocast`` in float16 on CUDA (on CPU it runs in float32, where
float16 is slow); ``dtype=torch.bfloat16`` autocasts on CUDA and on CPU. GroupNorm stays in
float32; outputs come back in the input's dtype. :meth:`_ADMBase.convert_torso` switches to
guided-diffusion's ``convert_to_fp16`` semantics instead: the convolutions of the input, middle
(and output) blocks are stored in the compute dtype and run without autocast, while
normalisation, the time / label embeddings and the output head stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minority.models.adm.layers import (
    AttentionBlock,
    AttentionPool2d,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    timestep_embedding,
    zero_init,
)

POOLS = ("adaptive", "attention", "spatial", "spatial_v2")
_DTYPES = {
    "": None,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_compute_dtype(use_fp16: bool, dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Autocast dtype from guided-diffusion's ``use_fp16`` or an explicit ``dtype``.

    ``dtype`` wins when given (a torch dtype or a name such as "bfloat16"; "" means not given).
    Returns None for plain float32.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype is None:
        return torch.float16 if use_fp16 else None
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported compute dtype {dtype}")
    return None if dtype == torch.float32 else dtype


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast for ``dtype`` on ``device``: fp16 on CUDA only, bf16 on CUDA and CPU."""
    if dtype is None or device.type not in ("cuda", "cpu"):
        return nullcontext()
    if device.type == "cpu" and dtype != torch.bfloat16:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass(frozen=True)
class _BlockFactory:
    """Builds residual and attention blocks sharing one set of hyper-parameters."""

    emb_channels: int
    dropout: float
    use_checkpoint: bool
    use_scale_shift_norm: bool
    num_heads: int
    num_head_channels: int
    use_new_attention_order: bool

    def res(self, channels: int, out: int | None = None, **updown: bool) -> ResBlock:
        return ResBlock(
            channels,
            self.emb_channels,
            self.dropout,
            out_channels=out,
            use_scale_shift_norm=self.use_scale_shift_norm,
            use_checkpoint=self.use_checkpoint,
            **updown,
        )

    def attention(self, channels: int, num_heads: int | None = None) -> AttentionBlock:
        return AttentionBlock(
            channels,
            num_heads=self.num_heads if num_heads is None else num_heads,
            num_head_channels=self.num_head_channels,
            use_checkpoint=self.use_checkpoint,
            use_new_attention_order=self.use_new_attention_order,
        )


class _ADMBase(nn.Module):
    """Shared pieces: time-embedding MLP, encoder half (input + middle blocks), autocast."""

    def _setup(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        use_fp16: bool,
        dtype: torch.dtype | str | None,
    ) -> None:
        """Record the sizes and the compute dtype; create the time-embedding MLP."""
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.compute_dtype = resolve_compute_dtype(use_fp16, dtype)
        self.torso_dtype: torch.dtype | None = None
        self.time_embed = _time_embed_mlp(model_channels)

    def _build_trunk(
        self,
        in_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        channel_mult: Sequence[float],
        conv_resample: bool,
        resblock_updown: bool,
        blocks: _BlockFactory,
    ) -> list[int]:
        """Create ``input_blocks`` and ``middle_block``; return each input block's width.

        Also sets ``self.trunk_channels`` (middle-block width) and ``self.trunk_downsample``
        (total downsampling factor of the trunk).
        """
        attention_ds = set(attention_resolutions)
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        widths = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = int(mult * model_channels)
                layers: list[nn.Module] = [blocks.res(ch, out)]
                ch = out
                if ds in attention_ds:
                    layers.append(blocks.attention(ch))
                self.input_blocks.append(EmbedSequential(*layers))
                widths.append(ch)
            if level != len(channel_mult) - 1:
                down = (
                    blocks.res(ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                )
                self.input_blocks.append(EmbedSequential(down))
                widths.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(blocks.res(ch), blocks.attention(ch), blocks.res(ch))
        self.trunk_channels = ch
        self.trunk_downsample = ds
        return widths

    def _embed(self, timesteps: Tensor | int, x: Tensor) -> Tensor:
        """(N, 4C) embedding of original timesteps (a scalar is broadcast over the batch)."""
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.time_embed(timestep_embedding(t, self.model_channels))

    def _autocast(self, x: Tensor) -> AbstractContextManager:
        if self.torso_dtype is not None:
            return nullcontext()
        return autocast_context(x.device, self.compute_dtype)

    def _torso_parts(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block]

    def convert_torso(self) -> None:
        """guided-diffusion's ``convert_to_fp16``: store the torso's convolutions in the compute
        dtype (float16 or bfloat16, on every device) and run them without autocast.

        The torso is ``input_blocks``, ``middle_block`` (and ``output_blocks``); normalisation
        computes in float32, embeddings and the output head stay float32. Without a compute
        dtype (plain float32) nothing changes. Call it after loading weights or before: loading
        casts into the stored dtypes.
        """
        if self.compute_dtype is None:
            return
        for part in self._torso_parts():
            for module in part.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    module.to(self.compute_dtype)
        self.torso_dtype = self.compute_dtype

    def _into_torso(self, x: Tensor) -> Tensor:
        """x in the torso's dtype (unchanged unless :meth:`convert_torso` was called)."""
        return x if self.torso_dtype is None else x.to(self.torso_dtype)


def _time_embed_mlp(model_channels: int) -> nn.Sequential:
    """Linear(C → 4C) → SiLU → Linear(4C → 4C) on the sinusoidal embedding."""
    dim = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, dim), nn.SiLU(), nn.Linear(dim, dim))


class UNetModel(_ADMBase):
    """The ADM UNet with attention and timestep (and optional class) embedding.

    Args:
        image_size: training resolution (kept for reference; any size divisible by the total
            downsampling works).
        in_channels: input channels (3 for RGB).
        model_channels: base width C.
        out_channels: output channels (2·in_channels with learned variance: [ε, v]).
        num_res_blocks: residual blocks per level.
        attention_resolutions: downsample rates (1, 2, 4 …) at which attention is used.
        dropout: dropout probability inside residual blocks.
        channel_mult: width multiplier per level.
        conv_resample: learned 3×3 convs for up/downsampling (when not ``resblock_updown``).
        num_classes: number of classes for a class-conditional model (label embedding), or None.
        use_checkpoint: activation checkpointing in every block.
        use_fp16: run under float16 autocast on CUDA (weights stay float32).
        num_heads: attention heads (when ``num_head_channels`` is −1).
        num_head_channels: channels per attention head; −1 to use ``num_heads``.
        num_heads_upsample: heads in the decoder; −1 means ``num_heads``.
        use_scale_shift_norm: FiLM conditioning in residual blocks.
        resblock_updown: residual blocks for up/downsampling.
        use_new_attention_order: q/k/v split before heads (see ``token_attention``).
        dtype: explicit autocast dtype (torch dtype or name); overrides ``use_fp16``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        dtype: torch.dtype | str | None = None,
    ):
        super().__init__()
        num_heads_upsample = num_heads if num_heads_upsample == -1 else num_heads_upsample
        attention_ds = tuple(attention_resolutions)
        self.num_classes = num_classes
        self._setup(image_size, in_channels, model_channels, out_channels, use_fp16, dtype)
        blocks = _BlockFactory(
            4 * model_channels,
            dropout,
            use_checkpoint,
            use_scale_shift_norm,
            num_heads,
            num_head_channels,
            use_new_attention_order,
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, 4 * model_channels)
        skip_widths = self._build_trunk(
            in_channels,
            model_channels,
            num_res_blocks,
            attention_ds,
            channel_mult,
            conv_resample,
            resblock_updown,
            blocks,
        )
        ch, ds = self.trunk_channels, self.trunk_downsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                out = int(mult * model_channels)
                layers: list[nn.Module] = [blocks.res(ch + skip_widths.pop(), out)]
                ch = out
                if ds in attention_ds:
                    layers.append(blocks.attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    up = blocks.res(ch, up=True) if resblock_updown else Upsample(ch, conv_resample)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, out_channels, 3, padding=1))
        )

    def _torso_parts(self) -> list[nn.Module]:
        return [*super()._torso_parts(), self.output_blocks]

    def forward(self, x: Tensor, timesteps: Tensor | int, y: Tensor | None = None) -> Tensor:
        """Predict the network output at (x_t, t).

        Args:
            x: (N, in_channels, H, W) noisy images x_t, about [−1, 1] at small t.
            timesteps: (N,) original timesteps τ ∈ {0 … T−1} (or one scalar for the batch).
            y: (N,) int64 class labels; required iff the model is class-conditional.

        Returns:
            (N, out_channels, H, W) in x's dtype; with learned variance, channels are [ε, v].
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        with self._autocast(x):
            emb = self._embed(timesteps, x)
            if y is not None:
                emb = emb + self.label_emb(y)
            skips = []
            h = self._into_torso(x)
            for block in self.input_blocks:
                h = block(h, emb)
                skips.append(h)
            h = self.middle_block(h, emb)
            for block in self.output_blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            out = self.out(h.to(x.dtype))
        return out.to(x.dtype)


class SuperResModel(UNetModel):
    """A UNet conditioned on a low-resolution image, upsampled bilinearly and concatenated.

    Takes the same arguments as :class:`UNetModel`; ``in_channels`` counts the image channels
    only (the first conv sees twice as many).
    """

    def __init__(self, image_size: int, in_channels: int, *args, **kwargs):
        super().__init__(image_size, 2 * in_channels, *args, **kwargs)

    def forward(  # type: ignore[override]
        self, x: Tensor, timesteps: Tensor | int, low_res: Tensor, y: Tensor | None = None
    ) -> Tensor:
        """x: (N, C, H, W) noisy high-res image; low_res: (N, C, h, w) clean low-res image in
        [−1, 1]; timesteps, y as in :meth:`UNetModel.forward`. Returns (N, out_channels, H, W)."""
        upsampled = F.interpolate(low_res, size=x.shape[-2:], mode="bilinear")
        return super().forward(torch.cat([x, upsampled], dim=1), timesteps, y)


class EncoderUNetModel(_ADMBase):
    """The half UNet (input + middle blocks) with a pooling head: the ADM noisy classifier.

    Args are those of :class:`UNetModel` (without the decoder and class-label ones) plus:
        pool: output head, one of "adaptive" (GN → SiLU → global average → 1×1 conv),
            "attention" (GN → SiLU → :class:`AttentionPool2d`; needs ``num_head_channels``),
            "spatial" / "spatial_v2" (an MLP on the spatial means of every block's output), or
            None for a feature extractor without head whose forward returns :meth:`features`.

    ``forward`` returns (N, out_channels) logits; :meth:`features` returns the middle block's
    output, (N, ``trunk_channels``, H/d, W/d) with d = ``trunk_downsample``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str | None = "adaptive",
        dtype: torch.dtype | str | None = None,
    ):
        super().__init__()
        if pool is not None and pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; expected one of {POOLS} or None")
        self.pool = pool
        self._setup(image_size, in_channels, model_channels, out_channels, use_fp16, dtype)
        blocks = _BlockFactory(
            4 * model_channels,
            dropout,
            use_checkpoint,
            use_scale_shift_norm,
            num_heads,
            num_head_channels,
            use_new_attention_order,
        )
        widths = self._build_trunk(
            in_channels,
            model_channels,
            num_res_blocks,
            attention_resolutions,
            channel_mult,
            conv_resample,
            resblock_updown,
            blocks,
        )
        if pool is not None:
            self.out = self._pool_head(pool, out_channels, num_head_channels, sum(widths))

    def _pool_head(
        self, pool: str, out_channels: int, num_head_channels: int, spatial_features: int
    ) -> nn.Sequential:
        ch = self.trunk_channels
        if pool == "adaptive":
            return nn.Sequential(
                GroupNorm32(ch),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                zero_init(nn.Conv2d(ch, out_channels, 1)),
                nn.Flatten(),
            )
        if pool == "attention":
            if num_head_channels == -1:
                raise ValueError("attention pooling needs num_head_channels")
            side = self.image_size // self.trunk_downsample
            return nn.Sequential(
                GroupNorm32(ch),
                nn.SiLU(),
                AttentionPool2d(side, ch, num_head_channels, out_channels),
            )
        features = spatial_features + ch
        if pool == "spatial":
            return nn.Sequential(
                nn.Linear(features, 2048), nn.ReLU(), nn.Linear(2048, out_channels)
            )
        return nn.Sequential(
            nn.Linear(features, 2048), GroupNorm32(2048), nn.SiLU(), nn.Linear(2048, out_channels)
        )

    def _trunk(self, x: Tensor, timesteps: Tensor | int, means: list[Tensor] | None) -> Tensor:
        """Middle-block output; appends every block's spatial mean to ``means`` when given."""
        emb = self._embed(timesteps, x)
        h = self._into_torso(x)
        for block in [*self.input_blocks, self.middle_block]:
            h = block(h, emb)
            if means is not None:
                means.append(h.to(x.dtype).mean(dim=(2, 3)))
        return h.to(x.dtype)

    def features(self, x: Tensor, timesteps: Tensor | int) -> Tensor:
        """Middle-block features (N, trunk_channels, H/d, W/d) of x_t at original timesteps."""
        with self._autocast(x):
            h = self._trunk(x, timesteps, None)
        return h.to(x.dtype)

    def forward(self, x: Tensor, timesteps: Tensor | int) -> Tensor:
        """x: (N, in_channels, H, W) noisy input; timesteps: (N,) original timesteps.

        Returns (N, out_channels) logits, or the middle-block features when ``pool`` is None.
        """
        if self.pool is None:
            return self.features(x, timesteps)
        spatial = self.pool.startswith("spatial")
        means: list[Tensor] | None = [] if spatial else None
        with self._autocast(x):
            h = self._trunk(x, timesteps, means)
            out = self.out(torch.cat(means, dim=-1) if means is not None else h)
        return out.to(x.dtype)

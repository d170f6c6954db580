"""Building blocks of the ADM networks (Dhariwal & Nichol 2021).

Every module registers its parameters under the attribute names and ``nn.Sequential`` positions
that guided-diffusion's released checkpoints carry (``in_layers.2``, ``emb_layers.1``,
``out_layers.3``, ``qkv``, ``proj_out``, ``positional_embedding`` …), so those state dicts load
with ``strict=True``. Parameter-free positions (SiLU, Dropout) are kept as modules only to hold
those indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

NORM_GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups (eps 1e-5), computed in float32 and returned in the input dtype."""

    def __init__(self, channels: int):
        super().__init__(NORM_GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (output layers of residual branches start at 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos(τ f_i), sin(τ f_i)], f_i = max_period^(−i/half), cos first.

    Args:
        timesteps: (N,) original timesteps τ (integer or fractional).
        dim: embedding width; an odd width is padded with one zero column.

    Returns:
        (N, dim) float32 embedding, values in [−1, 1].
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
    freqs = torch.exp(exponent).to(timesteps.device)
    angles = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def token_attention(qkv: Tensor, num_heads: int, per_head_order: bool) -> Tensor:
    """Multi-head self-attention on a packed projection in token-major layout.

    Each head's channels are the innermost axis here, so ``scaled_dot_product_attention``
    takes its fused (flash) kernel on CPU and GPU; a channel-major layout would force the
    slower math fallback.

    Args:
        qkv: (N, L, 3·H·c) packed queries, keys and values of L tokens.
        num_heads: H.
        per_head_order: True for guided-diffusion's legacy layout, channels grouped per head as
            [q_h; k_h; v_h]; False for the "new" layout [q of all heads; k …; v …].

    Returns:
        (N, L, H·c) attention output, heads stacked along channels. Scores are q·k/√c with a
        softmax over keys.
    """
    n, length, width = qkv.shape
    c = width // (3 * num_heads)
    if per_head_order:
        parts = qkv.view(n, length, num_heads, 3, c).unbind(3)
    else:
        parts = qkv.view(n, length, 3, num_heads, c).unbind(2)
    q, k, v = (part.transpose(1, 2) for part in parts)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n, length, num_heads * c)


def pointwise(conv: nn.Conv1d, tokens: Tensor) -> Tensor:
    """A 1×1 ``Conv1d`` applied to token-major input: (N, L, C_in) -> (N, L, C_out)."""
    return F.linear(tokens, conv.weight[..., 0], conv.bias)


def heads_for(channels: int, num_heads: int, num_head_channels: int) -> int:
    """Head count: ``channels // num_head_channels`` when that is set (≠ −1), else ``num_heads``."""
    if num_head_channels == -1:
        return num_heads
    if channels % num_head_channels:
        raise ValueError(f"{channels} channels are not divisible by {num_head_channels} per head")
    return channels // num_head_channels


def resample(x: Tensor, mode: str | None) -> Tensor:
    """Nearest ×2 upsampling ("up"), 2×2 average pooling ("down") or identity (None)."""
    if mode == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if mode == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    return x


class Upsample(nn.Module):
    """Nearest ×2 upsampling, followed by a 3×3 conv (``conv``) when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(resample(x, "up"))


class Downsample(nn.Module):
    """×1/2 downsampling: a strided 3×3 conv (``op``) when ``use_conv``, else 2×2 average pool."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def maybe_checkpoint(enabled: bool, fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """Run ``fn(*args)``, with activation checkpointing when ``enabled`` and grad is on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class ResBlock(nn.Module):
    """Residual block conditioned on the (time + class) embedding.

    in-layers GN → SiLU → [resample] → conv3×3; the embedding, SiLU → Linear, is either added
    (h + e) or applied as FiLM with ``use_scale_shift_norm``: GN(h)·(1 + scale) + shift, scale
    first. Then SiLU → dropout → conv3×3 (zero-initialised), plus the skip path (identity, or a
    1×1 conv when the width changes; resampled alike).

    Args:
        channels: input channels.
        emb_channels: embedding width (4 × model width).
        dropout: dropout probability before the last conv.
        out_channels: output channels (default ``channels``).
        use_scale_shift_norm: FiLM conditioning instead of an additive embedding.
        use_checkpoint: recompute activations in the backward pass to save memory.
        up, down: resample ×2 / ×1/2 inside the block (``resblock_updown``).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.resample_mode = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (N, channels, H, W); emb: (N, emb_channels) → (N, out_channels, H', W')."""
        return maybe_checkpoint(self.use_checkpoint, self._forward, x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers[:-1](x)
        h = self.in_layers[-1](resample(h, self.resample_mode))
        x = resample(x, self.resample_mode)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual: x + proj_out(attention(qkv(GN(x)))).

    Args:
        channels: C.
        num_heads: head count, used when ``num_head_channels`` is −1.
        num_head_channels: channels per head (overrides ``num_heads``).
        use_checkpoint: recompute activations in the backward pass.
        use_new_attention_order: split q/k/v before heads (True) or heads before q/k/v (False,
            guided-diffusion's legacy layout).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.num_heads = heads_for(channels, num_heads, num_head_channels)
        self.per_head_order = not use_new_attention_order
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) → (N, C, H, W)."""
        return maybe_checkpoint(self.use_checkpoint, self._forward, x)

    def _forward(self, x: Tensor) -> Tensor:
        n, c, *spatial = x.shape
        tokens = x.reshape(n, c, -1)
        qkv = pointwise(self.qkv, self.norm(tokens).mT)
        h = token_attention(qkv, self.num_heads, self.per_head_order)
        return (tokens + pointwise(self.proj_out, h).mT).reshape(n, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the mean token attends to all tokens; returns its output.

    Args:
        spatial_dim: side S of the (S, S) input map.
        embed_dim: input channels C.
        num_head_channels: channels per head (heads = C / num_head_channels; new q/k/v order).
        output_dim: output width (default C).
    """

    def __init__(
        self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None
    ):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5
        )
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = heads_for(embed_dim, 1, num_head_channels)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, S, S) → (N, output_dim)."""
        tokens = x.flatten(2)
        tokens = torch.cat([tokens.mean(dim=-1, keepdim=True), tokens], dim=-1)
        tokens = tokens + self.positional_embedding[None].to(tokens.dtype)
        qkv = pointwise(self.qkv_proj, tokens.mT)
        h = token_attention(qkv, self.num_heads, per_head_order=False)
        return pointwise(self.c_proj, h[:, 0])


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x

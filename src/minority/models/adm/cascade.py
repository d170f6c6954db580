"""The cascaded minority classifier of minority guidance on LSUN-Bedrooms 256.

p_ψ(l | x_t, t) = head(extractor(x_t, t), t): a frozen feature extractor — the ADM 256×256
ImageNet classifier (``256x256_classifier.pt``) cut after its middle block, features 512×8×8 —
feeds a small trainable :class:`EncoderUNetModel` head (released as ``mc_lsun.pt``, 71 tensors,
2.9 M parameters). Both receive the same original timestep t. Gradients w.r.t. x_t flow through
the frozen extractor, as guidance needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from minority.errors import UserError
from minority.models.adm.checkpoint import StateSource, load_adm_checkpoint
from minority.models.adm.flags import ClassifierFlags, create_classifier, create_feature_extractor
from minority.models.adm.unet import EncoderUNetModel
from minority.weights import find_weights

EXTRACTOR_WEIGHTS = "256x256_classifier.pt"
HEAD_WEIGHTS = "mc_lsun.pt"


def lsun_extractor_flags() -> ClassifierFlags:
    """The ADM 256×256 ImageNet classifier: width 128, depth 2, channel_mult (1,1,2,2,4,4),
    attention at 32,16,8, resblock_updown, scale-shift norm, attention pool, 1000 classes."""
    return ClassifierFlags(image_size=256)


def lsun_head_flags(num_classes: int = 100, in_channels: int = 512) -> ClassifierFlags:
    """The minority-classifier head on 8×8 features: width 128, channel_mult (1,), depth 2,
    attention at 8 (64 channels per head), scale-shift norm, no resblock_updown, attention pool,
    ``num_classes`` outputs (L)."""
    return ClassifierFlags(
        image_size=8,
        in_channels=in_channels,
        out_channels=num_classes,
        classifier_attention_resolutions="8",
        classifier_resblock_updown=False,
    )


class MinorityCascadeClassifier(nn.Module):
    """logits = head(extractor.features(x_t, t), t) with a frozen extractor.

    Args:
        extractor: an :class:`EncoderUNetModel`, normally without output head
            (:func:`create_feature_extractor`); its parameters are frozen and it always stays
            in eval mode.
        head: the trainable :class:`EncoderUNetModel` on the extractor's middle-block features.

    Raises:
        UserError: the head does not take the extractor's feature width or spatial size.
    """

    def __init__(self, extractor: EncoderUNetModel, head: EncoderUNetModel):
        super().__init__()
        if head.in_channels != extractor.trunk_channels:
            raise UserError(
                f"The minority-classifier head takes {head.in_channels} channels but the "
                f"extractor yields {extractor.trunk_channels}; set the head's in_channels."
            )
        side = extractor.image_size // extractor.trunk_downsample
        if head.pool == "attention" and head.image_size != side:
            raise UserError(
                f"The minority-classifier head expects {head.image_size}×{head.image_size} "
                f"features but the extractor yields {side}×{side}; set the head's image_size."
            )
        self.extractor = extractor.requires_grad_(False).eval()
        self.head = head

    def train(self, mode: bool = True) -> MinorityCascadeClassifier:
        """Set the head's mode; the frozen extractor stays in eval mode."""
        super().train(mode)
        self.extractor.eval()
        return self

    def forward(self, x: Tensor, timesteps: Tensor | int) -> Tensor:
        """x: (N, 3, H, W) noisy images x_t; timesteps: (N,) original t → (N, L) logits."""
        return self.head(self.extractor.features(x, timesteps), timesteps)

    def load_extractor(self, source: StateSource | None = None) -> None:
        """Load the extractor from a full ADM classifier state dict (its ``out.*`` keys, the
        ImageNet head, are ignored when the extractor has none). ``source`` None looks for
        ``256x256_classifier.pt`` in the weight folders (:func:`minority.weights.find_weights`).
        """
        if source is None:
            source = find_weights(EXTRACTOR_WEIGHTS, purpose="minority-classifier extractor")
        ignore = ("out.",) if self.extractor.pool is None else ()
        load_adm_checkpoint(self.extractor, source, ignore_prefixes=ignore)

    def load_head(self, source: StateSource | None = None) -> None:
        """Load the head from a plain EncoderUNetModel state dict (``mc_lsun.pt`` layout).
        ``source`` None looks for ``mc_lsun.pt`` in the weight folders."""
        if source is None:
            source = find_weights(HEAD_WEIGHTS, purpose="minority-classifier head")
        load_adm_checkpoint(self.head, source)


def create_minority_cascade(
    extractor_flags: ClassifierFlags | Mapping[str, Any] | None = None,
    head_flags: ClassifierFlags | Mapping[str, Any] | None = None,
) -> MinorityCascadeClassifier:
    """Build (without weights) the cascade; None selects the official LSUN settings
    (:func:`lsun_extractor_flags`, :func:`lsun_head_flags` with L = 100)."""
    extractor = create_feature_extractor(extractor_flags or lsun_extractor_flags())
    head = create_classifier(head_flags or lsun_head_flags(in_channels=extractor.trunk_channels))
    return MinorityCascadeClassifier(extractor, head)

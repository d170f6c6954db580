"""guided-diffusion's command-line flags as dataclasses, and the factories that read them.

The field names, defaults and semantics are those of guided-diffusion's
``model_and_diffusion_defaults`` / ``classifier_defaults`` / ``sr_model_and_diffusion_defaults``
(``attention_resolutions`` lists *resolutions*, turned into downsample rates image_size // r;
an empty ``channel_mult`` picks the per-size default). Fields marked "extension" are not
guided-diffusion flags; their defaults reproduce guided-diffusion's behaviour.

Flags come from a dataclass or any mapping (a Hydra/OmegaConf node, a fixture's ``flags`` dict,
``vars(args)``); diffusion-only flags such as ``noise_schedule`` are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from minority.errors import UserError
from minority.models.adm.unet import EncoderUNetModel, SuperResModel, UNetModel

NUM_CLASSES = 1000

DIFFUSION_FLAGS = frozenset(
    {
        "learn_sigma",
        "diffusion_steps",
        "noise_schedule",
        "timestep_respacing",
        "use_kl",
        "predict_xstart",
        "rescale_timesteps",
        "rescale_learned_sigmas",
        "sigma_small",
    }
)

UNET_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}
CLASSIFIER_CHANNEL_MULT = {**{s: UNET_CHANNEL_MULT[s] for s in (512, 256, 128, 64)}, 8: (1,)}
SR_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}

FlagsT = TypeVar("FlagsT", bound="_Flags")
ListFlag = str | Sequence[float]


class _Flags:
    """Construction from a mapping, shared by the flag dataclasses."""

    @classmethod
    def from_dict(cls: type[FlagsT], flags: Mapping[str, Any], strict: bool = True) -> FlagsT:
        """Build from a mapping, ignoring diffusion-only flags.

        Args:
            flags: flag name → value (guided-diffusion names).
            strict: raise on names that are neither fields nor diffusion flags (catches typos);
                False ignores them, e.g. for a whole script's argument dict.
        """
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(flags) - names - DIFFUSION_FLAGS)
        if unknown and strict:
            raise UserError(
                f"Unknown {cls.__name__} flag(s) {', '.join(unknown)}; "
                f"known flags are {', '.join(sorted(names))}."
            )
        return cls(**{k: flags[k] for k in flags if k in names})

    @classmethod
    def coerce(cls: type[FlagsT], flags: FlagsT | Mapping[str, Any]) -> FlagsT:
        """Return ``flags`` itself if it is already a ``cls``, else :meth:`from_dict` of it."""
        return flags if isinstance(flags, cls) else cls.from_dict(flags)


@dataclass
class ADMFlags(_Flags):
    """UNet flags (guided-diffusion ``model_and_diffusion_defaults`` without the diffusion ones).

    ``attention_resolutions`` and ``channel_mult`` are comma-separated strings ("32,16,8",
    "1,1,2") or sequences. ``dtype`` (extension): autocast dtype name ("", "float32",
    "float16", "bfloat16"); "" follows ``use_fp16``. ``in_channels`` and ``num_classes``
    (extensions) default to RGB and ImageNet's 1000 classes.
    """

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    num_heads: int = 4
    num_heads_upsample: int = -1
    num_head_channels: int = -1
    attention_resolutions: ListFlag = "16,8"
    channel_mult: ListFlag = ""
    dropout: float = 0.0
    class_cond: bool = False
    use_checkpoint: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    learn_sigma: bool = False
    in_channels: int = 3
    num_classes: int = NUM_CLASSES
    dtype: str = ""


@dataclass
class SRFlags(ADMFlags):
    """Super-resolution UNet flags: ``large_size`` is the output resolution (``image_size`` is
    not used), ``small_size`` the conditioning one. ``channel_mult`` "" picks guided-diffusion's
    default for ``large_size``."""

    large_size: int = 256
    small_size: int = 64


@dataclass
class ClassifierFlags(_Flags):
    """Noisy-classifier flags (guided-diffusion / minority-guidance ``classifier_defaults``).

    ``in_channels`` / ``out_channels`` come from the minority-guidance copy (input channels and
    number of classes). Extensions: ``classifier_channel_mult`` ("" → the per-size default),
    ``classifier_num_head_channels`` (64, hard-coded upstream) and ``classifier_dtype``
    (autocast dtype name, "" follows ``classifier_use_fp16``).
    """

    image_size: int = 64
    classifier_use_fp16: bool = False
    classifier_width: int = 128
    classifier_depth: int = 2
    classifier_attention_resolutions: ListFlag = "32,16,8"
    classifier_use_scale_shift_norm: bool = True
    classifier_resblock_updown: bool = True
    classifier_pool: str = "attention"
    in_channels: int = 3
    out_channels: int = NUM_CLASSES
    classifier_channel_mult: ListFlag = ""
    classifier_num_head_channels: int = 64
    classifier_dtype: str = ""


def _numbers(value: ListFlag, name: str) -> tuple[float, ...]:
    """Parse "1,1,2" or [1, 1, 2] into numbers (int where integral)."""
    if isinstance(value, int | float):
        value = [value]
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        message = f"Flag {name}={value!r} is not a comma-separated list of numbers."
        raise UserError(message) from None
    return tuple(int(n) if n.is_integer() else n for n in numbers)


def parse_channel_mult(
    channel_mult: ListFlag, image_size: int, defaults: Mapping[int, tuple[float, ...]]
) -> tuple[float, ...]:
    """Width multipliers per level: explicit, or guided-diffusion's default for ``image_size``."""
    if not channel_mult:
        if image_size not in defaults:
            raise UserError(
                f"No default channel_mult for image_size {image_size} (defaults exist for "
                f"{sorted(defaults)}); set channel_mult explicitly, e.g. '1,2,2'."
            )
        return defaults[image_size]
    return _numbers(channel_mult, "channel_mult")


def attention_downsample_rates(resolutions: ListFlag, image_size: int) -> tuple[int, ...]:
    """Resolutions at which to attend ("32,16,8") → downsample rates image_size // r."""
    return tuple(image_size // int(r) for r in _numbers(resolutions, "attention_resolutions"))


def _unet_kwargs(flags: ADMFlags, image_size: int, channel_mult: tuple[float, ...]) -> dict:
    return dict(
        image_size=image_size,
        in_channels=flags.in_channels,
        model_channels=flags.num_channels,
        out_channels=flags.in_channels * (2 if flags.learn_sigma else 1),
        num_res_blocks=flags.num_res_blocks,
        attention_resolutions=attention_downsample_rates(flags.attention_resolutions, image_size),
        dropout=flags.dropout,
        channel_mult=channel_mult,
        num_classes=flags.num_classes if flags.class_cond else None,
        use_checkpoint=flags.use_checkpoint,
        use_fp16=flags.use_fp16,
        num_heads=flags.num_heads,
        num_head_channels=flags.num_head_channels,
        num_heads_upsample=flags.num_heads_upsample,
        use_scale_shift_norm=flags.use_scale_shift_norm,
        resblock_updown=flags.resblock_updown,
        use_new_attention_order=flags.use_new_attention_order,
        dtype=flags.dtype,
    )


def create_model(flags: ADMFlags | Mapping[str, Any]) -> UNetModel:
    """The UNet that guided-diffusion's ``create_model`` builds from these flags."""
    flags = ADMFlags.coerce(flags)
    mult = parse_channel_mult(flags.channel_mult, flags.image_size, UNET_CHANNEL_MULT)
    return UNetModel(**_unet_kwargs(flags, flags.image_size, mult))


def create_sr_model(flags: SRFlags | Mapping[str, Any]) -> SuperResModel:
    """The super-resolution UNet of guided-diffusion's ``sr_create_model`` at ``large_size``."""
    flags = SRFlags.coerce(flags)
    mult = parse_channel_mult(flags.channel_mult, flags.large_size, SR_CHANNEL_MULT)
    return SuperResModel(**_unet_kwargs(flags, flags.large_size, mult))


def _classifier_kwargs(flags: ClassifierFlags) -> dict:
    mult = parse_channel_mult(
        flags.classifier_channel_mult, flags.image_size, CLASSIFIER_CHANNEL_MULT
    )
    return dict(
        image_size=flags.image_size,
        in_channels=flags.in_channels,
        model_channels=flags.classifier_width,
        out_channels=flags.out_channels,
        num_res_blocks=flags.classifier_depth,
        attention_resolutions=attention_downsample_rates(
            flags.classifier_attention_resolutions, flags.image_size
        ),
        channel_mult=mult,
        use_fp16=flags.classifier_use_fp16,
        num_head_channels=flags.classifier_num_head_channels,
        use_scale_shift_norm=flags.classifier_use_scale_shift_norm,
        resblock_updown=flags.classifier_resblock_updown,
        pool=flags.classifier_pool,
        dtype=flags.classifier_dtype,
    )


def create_classifier(flags: ClassifierFlags | Mapping[str, Any]) -> EncoderUNetModel:
    """The noisy classifier guided-diffusion's ``create_classifier`` builds from these flags."""
    return EncoderUNetModel(**_classifier_kwargs(ClassifierFlags.coerce(flags)))


def create_feature_extractor(flags: ClassifierFlags | Mapping[str, Any]) -> EncoderUNetModel:
    """The classifier of these flags without its output head: forward returns middle-block
    features (its state dict is the classifier's minus the ``out.*`` keys)."""
    kwargs = _classifier_kwargs(ClassifierFlags.coerce(flags))
    return EncoderUNetModel(**{**kwargs, "pool": None})

"""ADM (guided-diffusion) networks whose state dicts load the released checkpoints.

``UNetModel`` / ``SuperResModel`` (denoisers), ``EncoderUNetModel`` (noisy classifier and feature
extractor), the LSUN ``MinorityCascadeClassifier``, guided-diffusion's flags as dataclasses with
their factories, and checkpoint loading with a diagnosis of mismatched flags.
"""

from minority.models.adm.cascade import (
    EXTRACTOR_WEIGHTS,
    HEAD_WEIGHTS,
    MinorityCascadeClassifier,
    create_minority_cascade,
    lsun_extractor_flags,
    lsun_head_flags,
)
from minority.models.adm.checkpoint import load_adm_checkpoint, read_state_dict
from minority.models.adm.flags import (
    ADMFlags,
    ClassifierFlags,
    SRFlags,
    create_classifier,
    create_feature_extractor,
    create_model,
    create_sr_model,
)
from minority.models.adm.unet import EncoderUNetModel, SuperResModel, UNetModel

__all__ = [
    "ADMFlags",
    "ClassifierFlags",
    "EXTRACTOR_WEIGHTS",
    "EncoderUNetModel",
    "HEAD_WEIGHTS",
    "MinorityCascadeClassifier",
    "SRFlags",
    "SuperResModel",
    "UNetModel",
    "create_classifier",
    "create_feature_extractor",
    "create_minority_cascade",
    "create_model",
    "create_sr_model",
    "load_adm_checkpoint",
    "lsun_extractor_flags",
    "lsun_head_flags",
    "read_state_dict",
]

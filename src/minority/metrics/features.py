"""Feature extractors for the metrics, with weights found offline, and a per-set feature cache.

Extractors (``get_feature_extractor(name)``):

- ``inception``: clean-fid's Inception pool3 (2048-d), the cFID features. clean-fid's "clean"
  mode: each channel resized to 299 × 299 with PIL bicubic on float values, clipped to
  [0, 255], then NVIDIA's TorchScript Inception (``inception-2015-12-05.pt``) on (x − 128)/128.
- ``sfid_inception``: the same network and input, stopped at ``mixed_6/conv`` (17 × 17 × 192);
  its first 7 channels flattened in height-width-channel order (guided-diffusion's evaluator)
  give the 2023-d sFID features.
- ``adm_inception`` / ``adm_sfid_inception``: the same two read-outs fed as guided-diffusion's
  evaluator feeds its TensorFlow Inception graph (the ``adm_evaluator`` metrics preset): images
  in [0, 255] of their own size, resized inside the graph to 299 × 299 with TensorFlow's legacy
  bilinear rule (:func:`tf_legacy_resize_bilinear`), then (x − 128)/128. FID / sFID and the
  pool3 precision / recall on these are comparable with the numbers the papers publish.
- ``vgg16_fc2``: torchvision VGG16's second fully connected layer after ReLU (4096-d), images
  resized to 224 (bilinear, antialiased) with ImageNet normalisation: the Rarity Score and
  improved precision / recall features.
- ``resnet50_pool``: torchvision ResNet-50's global average pool (2048-d), same input.
- ``inception_v3_pool``: torchvision Inception-v3's pool (2048-d) at 299.
- ``torchvision:<arch>``: any torchvision classifier with its last linear layer removed, at 224;
  its weight file defaults to the name torchvision gives its default weights.
- ``pixels``: the samples themselves, flattened (embedded data: 2-D points, 8 × 8 digits).

Images are (N, C, H, W) floats in [−1, 1] or uint8 (N, H, W, C) arrays (guided-diffusion's
sample format); one channel is repeated to three. Weights are found (or, when allowed, fetched
and hash-checked) by :func:`minority.weights.find_weights`; a missing file raises
:class:`~minority.errors.MissingWeightsError` naming it and where to put it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from minority.errors import UserError
from minority.provenance import file_fingerprint
from minority.weights import find_weights

CLEANFID_INCEPTION = "inception-2015-12-05.pt"
INCEPTION_SIZE = 299
IMAGENET_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SFID_CHANNELS = 7
# Sub-modules of the TorchScript Inception's ``layers`` that precede ``mixed_6``.
INCEPTION_TRUNK_TO_MIXED_6 = (
    *("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1"),
    *("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5"),
)
TORCHVISION_PREFIX = "torchvision:"
# Version of the feature functions and their preprocessing, part of every feature-cache key:
# raise it with any change that alters the features of a given weight file.
FEATURES_VERSION = 1

Images = Tensor | np.ndarray


def cleanfid_cache_dir() -> Path:
    """The folder where clean-fid keeps ``inception-2015-12-05.pt`` (its hard-coded choice)."""
    return Path("./" if platform.system() == "Windows" else "/tmp")


def to_float255(images: Images) -> Tensor:
    """Images -> float32 (N, 3, H, W) in [0, 255].

    Args:
        images: float (N, C, H, W) in [−1, 1] (mapped as (x + 1) · 127.5) or uint8
            (N, H, W, C); C is 1 or 3.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise UserError(f"Images must be a 4-D batch, got shape {tuple(x.shape)}.")
    x = x.permute(0, 3, 1, 2).float() if x.dtype == torch.uint8 else (x.float() + 1) * 127.5
    if x.shape[1] not in (1, 3):
        raise UserError(f"Images must have 1 or 3 channels, got shape {tuple(x.shape)}.")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def clean_resize(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """clean-fid's "clean" resize: per-channel PIL bicubic on float32, clipped to [0, 255].

    Args:
        x: float (N, 3, H, W) in [0, 255].

    Returns:
        float32 (N, 3, size, size) in [0, 255].
    """
    arr = x.detach().cpu().numpy().astype(np.float32)
    out = np.empty((*arr.shape[:2], size, size), dtype=np.float32)
    for n in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            resized = Image.fromarray(arr[n, c], mode="F").resize((size, size), Image.BICUBIC)
            out[n, c] = np.asarray(resized)
    return torch.from_numpy(out.clip(0, 255))


def tf_legacy_resize_bilinear(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """TensorFlow's legacy ``resize_bilinear`` (align_corners=False, half_pixel_centers=False).

    Output pixel (i, j) samples the input at (i · H / size, j · W / size): rows y0 = ⌊y⌋ and
    y1 = min(y0 + 1, H − 1) are mixed with weight y − y0 (likewise columns), in float32. This
    is the resize inside the Inception graph of guided-diffusion's evaluator.

    Args:
        x: float (N, C, H, W).
        size: output side.

    Returns:
        float32 (N, C, size, size).
    """
    x = x.float()
    for axis in (3, 2):  # along rows first, then between rows, as TensorFlow's kernel
        n_in = x.shape[axis]
        src = torch.arange(size, dtype=torch.float32) * (n_in / size)
        low = src.floor().long().clamp_max(n_in - 1)
        high = (low + 1).clamp_max(n_in - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = size
        weight = (src - low.float()).reshape(shape)
        a, b = x.index_select(axis, low), x.index_select(axis, high)
        x = a + (b - a) * weight
    return x


def imagenet_input(x: Tensor, size: int) -> Tensor:
    """float (N, 3, H, W) in [0, 255] -> ImageNet-normalised (N, 3, size, size)."""
    x = x / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pixels(images: Images) -> Tensor:
    """Samples as flat vectors: float (N, ...) as given, uint8 (N, H, W, C) via u / 127.5 − 1.

    Returns:
        float32 (N, D); uint8 images are flattened in (C, H, W) order like float ones.
    """
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.reshape(x.shape[0], -1).float()


@dataclass
class FeatureExtractor:
    """A callable images -> features (N, dim) float32 on the CPU, run in batches.

    Attributes:
        name: registry name, used as the cache key.
        dim: feature size (None for ``pixels``: the sample size).
        preprocess: images -> network input (on the CPU).
        network: input batch -> (B, dim) features; None for ``pixels``.
        device: where the network runs.
        batch_size: images per forward pass.
        weights: content fingerprint of the weight file (None: no weights).
    """

    name: str
    dim: int | None
    preprocess: Callable[[Images], Tensor]
    network: Callable[[Tensor], Tensor] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    weights: str | None = None

    def identity(self) -> dict[str, Any]:
        """What determines the features of given images, part of every feature-cache key:
        the extractor's name, the weight file's content, the preprocessing function and
        :data:`FEATURES_VERSION`."""
        preprocess = getattr(self.preprocess, "__qualname__", type(self.preprocess).__name__)
        return {
            "extractor": self.name,
            "weights": self.weights,
            "preprocess": f"{getattr(self.preprocess, '__module__', '')}.{preprocess}",
            "features_version": FEATURES_VERSION,
        }

    @torch.no_grad()
    def __call__(self, images: Images) -> Tensor:
        if self.network is None:
            return self.preprocess(images)
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = self.preprocess(images[start : start + self.batch_size]).to(self.device)
            parts.append(self.network(batch).float().reshape(len(batch), -1).cpu())
        if not parts:
            return torch.empty(0, self.dim or 0)
        return torch.cat(parts)


def cleanfid_inception_path(weights_path: str | os.PathLike | None) -> Path:
    """The weight file of NVIDIA's TorchScript Inception (clean-fid's), found offline."""
    return find_weights(
        CLEANFID_INCEPTION,
        path=weights_path,
        extra_dirs=[cleanfid_cache_dir()],
        purpose="clean-fid Inception for cFID / sFID",
    )


def load_cleanfid_inception(
    weights_path: str | os.PathLike | None, device: torch.device
) -> torch.jit.ScriptModule:
    """NVIDIA's TorchScript Inception as clean-fid uses it, found offline."""
    path = cleanfid_inception_path(weights_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; the file is one
        return torch.jit.load(str(path), map_location=device).eval()


def inception_pool3(inception: torch.jit.ScriptModule) -> Callable[[Tensor], Tensor]:
    """(N, 3, 299, 299) in [0, 255] -> (N, 2048) pool3 features (clean-fid's forward)."""

    def forward(x: Tensor) -> Tensor:
        return inception.layers((x - 128) / 128).reshape(len(x), -1)

    return forward


def inception_mixed_6_conv(inception: torch.jit.ScriptModule) -> Callable[[Tensor], Tensor]:
    """(N, 3, 299, 299) in [0, 255] -> (N, 2023): ``mixed_6/conv`` channels 0-6, (H, W, C) order."""
    layers = inception.layers
    trunk = [getattr(layers, name) for name in INCEPTION_TRUNK_TO_MIXED_6]
    trunk.append(layers.mixed_6.conv)

    def forward(x: Tensor) -> Tensor:
        x = (x - 128) / 128
        for module in trunk:
            x = module(x)
        return x[:, :SFID_CHANNELS].permute(0, 2, 3, 1).reshape(len(x), -1)

    return forward


def inception_input(images: Images) -> Tensor:
    """Images -> clean-fid's Inception input, float32 (N, 3, 299, 299) in [0, 255]."""
    return clean_resize(to_float255(images))


def adm_evaluator_input(images: Images) -> Tensor:
    """Images -> the input guided-diffusion's evaluator gives Inception: float32 (N, 3, 299, 299)
    in [0, 255], resized by :func:`tf_legacy_resize_bilinear`."""
    return tf_legacy_resize_bilinear(to_float255(images))


INCEPTION_HEADS = {
    "inception": (inception_pool3, 2048, inception_input),
    "sfid_inception": (inception_mixed_6_conv, SFID_CHANNELS * 17 * 17, inception_input),
    "adm_inception": (inception_pool3, 2048, adm_evaluator_input),
    "adm_sfid_inception": (inception_mixed_6_conv, SFID_CHANNELS * 17 * 17, adm_evaluator_input),
}


@dataclass(frozen=True)
class TorchvisionSpec:
    """A torchvision classifier used as a feature extractor (last linear layer removed)."""

    arch: str
    filename: str
    size: int = IMAGENET_SIZE
    kwargs: tuple[tuple[str, object], ...] = ()


TORCHVISION_EXTRACTORS = {
    "vgg16_fc2": TorchvisionSpec("vgg16", "vgg16-397923af.pth"),
    "resnet50_pool": TorchvisionSpec("resnet50", "resnet50-0676ba61.pth"),
    "inception_v3_pool": TorchvisionSpec(
        "inception_v3",
        "inception_v3_google-0cc3c7bd.pth",
        INCEPTION_SIZE,
        (("aux_logits", True), ("transform_input", True), ("init_weights", False)),
    ),
}


def torchvision_spec(arch: str) -> TorchvisionSpec:
    """Spec for ``torchvision:<arch>``: the file name of torchvision's default weights, at 224."""
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except ValueError as error:
        raise UserError(f"torchvision has no classifier named '{arch}'.") from error
    return TorchvisionSpec(arch, weights.url.rsplit("/", 1)[-1])


def drop_last_linear(model: nn.Module) -> nn.Module:
    """Replace the last ``nn.Linear`` (the classification head) by an identity, in place."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
    return model


def torchvision_weights_path(spec: TorchvisionSpec, weights_path: str | os.PathLike | None) -> Path:
    """The weight file of the classifier of ``spec``, found offline."""
    return find_weights(spec.filename, path=weights_path, purpose=f"torchvision {spec.arch}")


def load_torchvision_trunk(
    spec: TorchvisionSpec, weights_path: str | os.PathLike | None, device: torch.device
) -> nn.Module:
    """The classifier of ``spec`` with weights found offline and its head removed."""
    path = torchvision_weights_path(spec, weights_path)
    model = torchvision.models.get_model(spec.arch, weights=None, **dict(spec.kwargs))
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as error:
        message = f"The weight file {path} does not fit torchvision's {spec.arch}."
        raise UserError(message) from error
    return drop_last_linear(model).eval().to(device)


def _torchvision_extractor(
    name: str, spec: TorchvisionSpec, weights_path, device: torch.device, batch_size: int
) -> FeatureExtractor:
    path = torchvision_weights_path(spec, weights_path)
    model = load_torchvision_trunk(spec, path, device)
    probe = torch.zeros(1, 3, spec.size, spec.size, device=device)
    with torch.no_grad():
        dim = model(probe).reshape(1, -1).shape[1]
    return FeatureExtractor(
        name,
        dim,
        lambda images: imagenet_input(to_float255(images), spec.size),
        model,
        device,
        batch_size,
        file_fingerprint(path),
    )


def get_feature_extractor(
    name: str,
    weights_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> FeatureExtractor:
    """Build a feature extractor by name (see the module docstring for the names).

    Args:
        name: ``inception``, ``sfid_inception``, ``adm_inception``, ``adm_sfid_inception``,
            ``vgg16_fc2``, ``resnet50_pool``,
            ``inception_v3_pool``, ``pixels`` or ``torchvision:<arch>``.
        weights_path: the weight file (or its folder); default: the standard search of
            :func:`minority.weights.find_weights`.
        device: where the network runs.
        batch_size: images per forward pass.

    Returns:
        A :class:`FeatureExtractor`: images -> float32 (N, dim) CPU features.

    Raises:
        MissingWeightsError: the weight file is nowhere to be found.
        UserError: unknown name or unsuitable weight file.
    """
    device = torch.device(device)
    if name == "pixels":
        return FeatureExtractor(name, None, pixels)
    if name in INCEPTION_HEADS:
        head, dim, preprocess = INCEPTION_HEADS[name]
        path = cleanfid_inception_path(weights_path)
        network = head(load_cleanfid_inception(path, device))
        weights = file_fingerprint(path)
        return FeatureExtractor(name, dim, preprocess, network, device, batch_size, weights)
    if name in TORCHVISION_EXTRACTORS:
        spec = TORCHVISION_EXTRACTORS[name]
    elif name.startswith(TORCHVISION_PREFIX):
        spec = torchvision_spec(name.removeprefix(TORCHVISION_PREFIX))
    else:
        known = ", ".join([*INCEPTION_HEADS, *TORCHVISION_EXTRACTORS, "pixels"])
        raise UserError(f"Unknown feature extractor '{name}'; use {known} or torchvision:<arch>.")
    return _torchvision_extractor(name, spec, weights_path, device, batch_size)


def data_fingerprint(data: Tensor | np.ndarray) -> str:
    """A short SHA-1 of an array's shape, dtype and bytes, to key cached features."""
    arr = data.detach().cpu().numpy() if isinstance(data, Tensor) else np.asarray(data)
    digest = hashlib.sha1(f"{arr.shape}{arr.dtype}".encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def cached_features(
    extractor: Callable[[Images], Tensor],
    images: Images,
    cache_dir: str | os.PathLike,
    name: str | None = None,
    key: str | None = None,
) -> Tensor:
    """Features of a reference set, computed once and kept in ``cache_dir``.

    The file is ``<name>-<key>.pt`` where ``name`` defaults to ``extractor.name`` and ``key``
    to :func:`data_fingerprint` of ``images``, combined with the extractor's
    :meth:`FeatureExtractor.identity` when it has one.

    Returns:
        float32 (N, D) CPU features.
    """
    name = name or getattr(extractor, "name", None)
    if name is None:
        raise UserError("Cached features need a name for the extractor.")
    key = key or data_fingerprint(images)
    if isinstance(extractor, FeatureExtractor):
        key = source_key({"data": key, "extractor": extractor.identity()}, [])
    path = Path(cache_dir) / f"{name}-{key}.pt"
    return load_or_compute(path, lambda: extractor(images))


def load_or_compute(path: Path, compute: Callable[[], Tensor]) -> Tensor:
    """The tensor saved at ``path``, or ``compute()`` saved there atomically first."""
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(features, tmp)
    tmp.replace(path)
    return features


def source_key(settings: Mapping[str, Any], files: Iterable[Path]) -> str:
    """A short SHA-1 of a reference set's settings and of its files' names, sizes and
    modification times: any changed, added or removed source file gives a new key."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def dataset_features(extractor: FeatureExtractor, dataset: Dataset, num_workers: int = 0) -> Tensor:
    """Features of every item of a streamed dataset of ``(x in [−1, 1], extras)`` items, in
    order, a batch at a time (with a progress bar on a terminal).

    Returns:
        float32 (N, D) CPU features.
    """
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=extractor.batch_size, num_workers=num_workers)
    parts = [
        extractor(batch[0])
        for batch in tqdm(loader, desc=f"{extractor.name} features", unit="batch", disable=None)
    ]
    return torch.cat(parts)


def cached_dataset_features(
    extractor: FeatureExtractor,
    dataset: Dataset,
    files: Iterable[Path],
    settings: Mapping[str, Any],
    cache_dir: str | os.PathLike,
    num_workers: int = 0,
) -> Tensor:
    """Features of a streamed reference set, computed once per (source files, settings,
    extractor) and kept as ``cache_dir/<extractor>-<key>.pt`` (:func:`source_key`).

    Args:
        extractor: the feature extractor (its :meth:`~FeatureExtractor.identity` — name,
            weight file content, preprocessing, code version — is part of the key).
        dataset: the reference items, ``(x float (C, H, W) in [−1, 1], extras)``.
        files: the files the items are read from (a changed file is recomputed, not reused).
        settings: everything else that determines the items (crop, size, subset, …).
        cache_dir: the cache folder.
        num_workers: DataLoader workers decoding the items.
    """
    key = source_key({"source": dict(settings), "extractor": extractor.identity()}, files)
    path = Path(cache_dir) / f"{extractor.name}-{key}.pt"
    return load_or_compute(path, lambda: dataset_features(extractor, dataset, num_workers))

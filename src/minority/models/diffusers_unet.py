"""diffusers ``UNet2DModel`` folders behind the Denoiser contract, with their scheduler's diffusion.

A folder is what diffusers' ``save_pretrained`` writes, read from disk only (never downloaded):

* the UNet: ``config.json`` and its weights in ``unet/`` of a pipeline folder (as
  ``DDPMPipeline.save_pretrained`` writes, with ``model_index.json``), else at the top;
* the scheduler: ``scheduler/scheduler_config.json``, else ``scheduler_config.json`` at the top.

The scheduler config is the model's diffusion: ``beta_schedule`` (linear, scaled_linear,
squaredcos_cap_v2) with ``beta_start`` / ``beta_end`` and ``num_train_timesteps`` become the
project's ``noise_schedule`` / ``diffusion_steps``, ``variance_type`` its variance (learned_range
for a UNet with 2C output channels), ``clip_sample`` the sampler's clipping of x̂0 to [−1, 1], and
``prediction_type`` (epsilon, v_prediction, sample) is turned into ε by :class:`DiffusersUNet`.
Settings the project cannot honour stop with one sentence. Which timesteps a sampler visits
(``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``) is the project's ``sampler.steps``
and is not read from the folder.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from minority.errors import UserError, require

DIFFUSERS_ARCH = "diffusers_unet2d"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# diffusers' variance types -> the project's; the "_log" forms name the same variances.
VARIANCE_TYPES = {
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
    "fixed_large_log": "fixed_large",
    "learned_range": "learned_range",
}


def import_diffusers() -> ModuleType:
    """The diffusers package, or a one-sentence error saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise UserError(
            "model=diffusers_unet2d needs the diffusers package; install it with "
            "pip install 'minority[diffusers]'."
        ) from None
    return diffusers


@dataclass(frozen=True)
class DiffusersFolder:
    """The configs of a diffusers UNet2DModel folder, checked.

    Attributes:
        unet_dir: the folder holding the UNet's ``config.json`` and weights.
        unet: the UNet's config, completed with UNet2DModel's defaults.
        scheduler: the scheduler's config, completed with its class's defaults.
    """

    unet_dir: Path
    unet: dict[str, Any]
    scheduler: dict[str, Any]

    @property
    def learn_sigma(self) -> bool:
        """Whether the UNet also outputs the variance interpolant v (learned_range)."""
        return self.variance_type == "learned_range"

    @property
    def variance_type(self) -> str:
        """The project's variance type (diffusers' DDIM configs have none: fixed_small)."""
        return VARIANCE_TYPES[self.scheduler.get("variance_type", "fixed_small")]

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler["prediction_type"])

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional UNet (``num_class_embeds``), 0 if unconditional."""
        return int(self.unet["num_class_embeds"] or 0)

    @property
    def clip_denoised(self) -> bool:
        """Whether the scheduler clips x̂0 to [−1, 1] (schedulers without ``clip_sample`` do not)."""
        return bool(self.scheduler.get("clip_sample", False))

    def model_flags(self) -> dict[str, Any]:
        """What the tasks read from ``model.flags``: sample shape, classes, learned Σ."""
        return {
            "image_size": _square_size(self.unet["sample_size"], self.unet_dir),
            "in_channels": int(self.unet["in_channels"]),
            "class_cond": self.num_classes > 0,
            "num_classes": self.num_classes,
            "learn_sigma": self.learn_sigma,
        }

    def diffusion(self) -> dict[str, Any]:
        """The project's ``diffusion`` node of the scheduler: noise_schedule (see
        :func:`minority.diffusion.schedule.get_betas`), diffusion_steps, variance_type."""
        config = self.scheduler
        schedule = config["beta_schedule"]
        if schedule == "squaredcos_cap_v2":
            name = "cosine"
        else:
            name = f"{schedule}:{float(config['beta_start'])!r}:{float(config['beta_end'])!r}"
        return {
            "noise_schedule": name,
            "diffusion_steps": int(config["num_train_timesteps"]),
            "variance_type": self.variance_type,
        }


def read_diffusers_folder(path: str | Path) -> DiffusersFolder:
    """Read and check the UNet and scheduler configs of a local diffusers folder.

    Raises:
        UserError: diffusers is absent, the folder has no diffusers config, holds another model
            (a text-conditioned UNet2DConditionModel, a latent pipeline) or a scheduler setting
            the project cannot honour.
    """
    diffusers = import_diffusers()
    root = Path(path)
    unet_dir = _unet_dir(root)
    unet = _with_defaults(diffusers.UNet2DModel, _read_json(unet_dir / "config.json"))
    _check_unet(unet, unet_dir)
    _check_not_latent(root)
    scheduler_file = _scheduler_file(root)
    folder = DiffusersFolder(unet_dir, unet, _scheduler_config(diffusers, scheduler_file))
    _check_scheduler(folder.scheduler, scheduler_file)
    channels, out = int(unet["in_channels"]), int(unet["out_channels"])
    expected = 2 * channels if folder.learn_sigma else channels
    require(
        out == expected,
        f"The UNet in {unet_dir} outputs {out} channels for {channels} input channels, but its "
        f"scheduler's variance_type {folder.scheduler.get('variance_type')} needs {expected}.",
    )
    return folder


def _unet_dir(root: Path) -> Path:
    """The UNet's folder: ``unet/`` of a pipeline folder, else the folder itself."""
    found = [folder for folder in (root / "unet", root) if (folder / "config.json").is_file()]
    require(
        bool(found),
        f"{root} is not a diffusers model folder: it has no config.json or unet/config.json "
        "(write one with UNet2DModel.save_pretrained).",
    )
    return found[0]


def _scheduler_file(root: Path) -> Path:
    candidates = (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json")
    found = [file for file in candidates if file.is_file()]
    require(
        bool(found),
        f"{root} has no scheduler/scheduler_config.json, which says the model's noise schedule "
        "(write one with DDPMScheduler.save_pretrained).",
    )
    return found[0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable JSON config ({error}).") from None
    require(isinstance(content, dict), f"{path} is not a diffusers config (a JSON object).")
    return content


def _with_defaults(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed with the defaults of ``cls.__init__``, as from_pretrained does."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **config}


def _check_unet(unet: Mapping[str, Any], where: Path) -> None:
    cls = unet.get("_class_name")
    require(
        cls != "UNet2DConditionModel",
        f"{where} holds a text-conditioned UNet2DConditionModel, which is not supported yet; "
        "use a UNet2DModel folder.",
    )
    require(cls == "UNet2DModel", f"{where} holds a {cls}, not a diffusers UNet2DModel.")
    require(
        unet["time_embedding_type"] in ("positional", "learned"),
        f"The UNet in {where} embeds continuous noise levels (time_embedding_type "
        f"'{unet['time_embedding_type']}'); only discrete-timestep UNets are supported.",
    )
    require(
        unet["class_embed_type"] is None,
        f"The UNet in {where} has class_embed_type '{unet['class_embed_type']}'; only integer "
        "class labels (num_class_embeds) are supported.",
    )
    _square_size(unet["sample_size"], where)


def _check_not_latent(root: Path) -> None:
    """A pipeline with an autoencoder samples latents, not images."""
    index = root / "model_index.json"
    components = _read_json(index) if index.is_file() else {}
    latent = [name for name in ("vae", "vqvae") if name in components]
    require(
        not latent,
        f"{root} is a latent diffusion pipeline (it has a {' and '.join(latent)}); only "
        "pixel-space UNet2DModel folders are supported yet.",
    )


def _square_size(size: Any, where: Path) -> int:
    sizes = list(size) if isinstance(size, list | tuple) else [size, size]
    require(
        len(sizes) == 2 and isinstance(sizes[0], int) and sizes[0] == sizes[1],
        f"The UNet in {where} has sample_size {size}; a square image size is needed.",
    )
    return int(sizes[0])


def _scheduler_config(diffusers: ModuleType, file: Path) -> dict[str, Any]:
    raw = _read_json(file)
    cls = getattr(diffusers, str(raw.get("_class_name")), None)
    require(
        isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin),
        f"{file} names no diffusers scheduler (_class_name {raw.get('_class_name')}).",
    )
    return _with_defaults(cls, raw)


def _check_scheduler(config: Mapping[str, Any], file: Path) -> None:
    """One sentence for the first setting the project's diffusion cannot honour."""
    require(
        not config.get("thresholding", False),
        f"{file} asks for dynamic thresholding (thresholding: true), which the project's samplers "
        "do not do; set it to false.",
    )
    require(
        config.get("trained_betas") is None,
        f"{file} gives trained_betas; only the named beta schedules {BETA_SCHEDULES} are "
        "supported.",
    )
    require(
        not config.get("rescale_betas_zero_snr", False),
        f"{file} rescales the betas to zero terminal SNR (rescale_betas_zero_snr), which is not "
        "supported.",
    )
    require(
        config.get("beta_schedule") in BETA_SCHEDULES,
        f"{file} has beta_schedule {config.get('beta_schedule')!r}; supported: {BETA_SCHEDULES}.",
    )
    variance = config.get("variance_type", "fixed_small")
    require(
        variance in VARIANCE_TYPES,
        f"{file} has variance_type {variance!r}; supported: {tuple(VARIANCE_TYPES)}.",
    )
    require(
        config.get("prediction_type") in PREDICTION_TYPES,
        f"{file} has prediction_type {config.get('prediction_type')!r}; supported: "
        f"{PREDICTION_TYPES}.",
    )
    require(
        not config.get("clip_sample", False) or float(config["clip_sample_range"]) == 1.0,
        f"{file} clips x0 to ±{config.get('clip_sample_range')}; the project clips to [-1, 1] "
        "only (clip_sample_range 1.0, or clip_sample false).",
    )


class DiffusersUNet(nn.Module):
    """A UNet2DModel as the project's backbone ``net(x, t, y=None)``.

    Returns ε (B, C, H, W), stacked on dim 1 with the variance interpolant v when the UNet learns
    Σ, whatever the UNet predicts: ε = √ᾱ_t·v_pred + √(1−ᾱ_t)·x_t for "v_prediction"
    (v_pred = √ᾱ_t ε − √(1−ᾱ_t) x0), ε = (x_t − √ᾱ_t·x̂0) / √(1−ᾱ_t) for "sample".

    Args:
        unet: the diffusers UNet2DModel (timesteps and class labels as it was trained with).
        prediction_type: "epsilon", "v_prediction" or "sample".
        alphas_cumprod: ᾱ_t of the original T-step schedule, float64 (T,).
        learn_sigma: whether the UNet's output stacks [prediction, v] on dim 1.
    """

    def __init__(
        self, unet: nn.Module, prediction_type: str, alphas_cumprod: np.ndarray, learn_sigma: bool
    ):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type
        self.learn_sigma = learn_sigma
        self.register_buffer(
            "alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64), persistent=False
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W); t: int64 (B,) original timesteps; y: int64 (B,) labels or None."""
        out = self.unet(x, t, class_labels=y).sample
        prediction, var_values = out.chunk(2, dim=1) if self.learn_sigma else (out, None)
        eps = self.eps_from(prediction, x, t)
        return eps if var_values is None else torch.cat([eps, var_values], dim=1)

    def eps_from(self, prediction: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """ε of the UNet's prediction at (x_t, t)."""
        if self.prediction_type == "epsilon":
            return prediction
        alpha_bar = self.alphas_cumprod[t].reshape(-1, *([1] * (x.ndim - 1)))
        sqrt_alpha_bar = alpha_bar.sqrt().to(x.dtype)
        sqrt_one_minus = (1 - alpha_bar).sqrt().to(x.dtype)
        if self.prediction_type == "v_prediction":
            return sqrt_alpha_bar * prediction + sqrt_one_minus * x
        return (x - sqrt_alpha_bar * prediction) / sqrt_one_minus


def load_unet2d(folder: DiffusersFolder) -> nn.Module:
    """The folder's UNet2DModel (float32, eval mode), from disk only."""
    diffusers = import_diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(
            folder.unet_dir, local_files_only=True, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"The UNet in {folder.unet_dir} could not be loaded ({reason}).") from None
    return unet.eval()

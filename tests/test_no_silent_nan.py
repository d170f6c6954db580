"""No NaN reaches a shard: the loop stops at the step that produced it, naming the settings."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from minority.diffusion.gaussian import build_diffusion
from minority.errors import UserError
from minority.guidance.base import WeightSchedule
from minority.lit.sampling import SamplingModule, ShardWriter
from minority.models.denoiser import Denoiser
from minority.sampling.init import Initialisation
from minority.sampling.loop import NonFiniteSamples, sample
from minority.seeding import SeededNoise

STEPS, BREAKS_BELOW = 10, 500


class BreaksLate(nn.Module):
    """ε = x/2 on 2-D points, NaN for the first sample once the timestep is below 500."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        eps = x / 2
        eps[0] = torch.where(t[0] < BREAKS_BELOW, torch.nan, eps[0])
        return eps


def _first_broken_step() -> tuple[int, int]:
    """(respaced index, original timestep) of the first step whose ε is NaN."""
    timesteps = build_diffusion("cosine", 1000, str(STEPS)).timestep_map
    i = max(i for i, t in enumerate(timesteps) if t < BREAKS_BELOW)
    return i, timesteps[i]


def test_sampling_stops_at_the_step_that_made_nan() -> None:
    diffusion = build_diffusion("cosine", 1000, str(STEPS))
    with pytest.raises(NonFiniteSamples) as error:
        sample(Denoiser(BreaksLate()), diffusion, (4, 2), SeededNoise(0, range(4)))
    i, t = _first_broken_step()
    assert f"1 of 4 samples became non-finite (NaN or ±inf) at respaced step {i} of {STEPS} " in (
        str(error.value)
    )
    assert f"(original timestep {t})" in str(error.value)


def test_no_shard_is_written_when_a_batch_turns_non_finite(tmp_path) -> None:
    """Through the Lightning predict loop: one sentence naming the batch, the step and the
    settings; the shard folder stays empty."""
    module = SamplingModule(
        Denoiser(BreaksLate()),
        build_diffusion("cosine", 1000, str(STEPS)),
        (2,),
        seed=0,
        ranges=[(0, 4)],
        init=Initialisation(2.0, 1),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ShardWriter(tmp_path / "shards")],
        inference_mode=False,
    )
    with pytest.raises(NonFiniteSamples) as error:
        trainer.predict(module, return_predictions=False)
    message = str(error.value)
    i, _ = _first_broken_step()
    assert message.startswith("Samples 0..3: 1 of 4 samples became non-finite")
    assert f"at respaced step {i} of {STEPS}" in message and "\n" not in message
    assert "sampler.eta=0.0" in message and "init.gamma=2.0" in message
    assert not list((tmp_path / "shards").glob("*"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_shard_writer_refuses_non_finite_samples(tmp_path, bad: float) -> None:
    samples = torch.zeros(3, 1, 2, 2)
    samples[1, 0, 1, 0] = bad
    prediction = {"start": 6, "end": 9, "samples": samples, "labels": torch.full((3,), -1)}
    with pytest.raises(NonFiniteSamples, match=r"^1 of 3 samples .* 6\.\.8, so its shard"):
        ShardWriter(tmp_path).write_on_batch_end(None, None, prediction, None, None, 0)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: WeightSchedule(float("inf")), "guidance scale"),
        (lambda: WeightSchedule(float("nan")), "guidance scale"),
        (lambda: Initialisation(float("inf")), "init.gamma"),
        (lambda: Initialisation(float("nan")), "init.gamma"),
    ],
)
def test_non_finite_settings_are_refused(build, key: str) -> None:
    with pytest.raises(UserError, match=key):
        build()


@pytest.mark.parametrize("eta", [float("nan"), -0.1, 1.5])
def test_eta_outside_the_unit_interval_is_refused(eta: float) -> None:
    with pytest.raises(UserError, match=r"sampler\.eta must lie in \[0, 1\]"):
        SamplingModule(
            Denoiser(BreaksLate()), build_diffusion("cosine", 1000, "5"), (2,), 0, [], eta=eta
        )

"""Minority guidance: golden DDPM / DDIM trajectories, a finite-difference gradient, targets."""

from __future__ import annotations

import pytest
import torch

from minority.diffusion.gaussian import build_diffusion
from minority.errors import UserError
from minority.guidance.base import GuidanceContext, Guide, WeightSchedule
from minority.guidance.classifier import (
    MinorityGuidance,
    check_classifier_fits,
    sample_target_classes,
)
from minority.models.adm import EncoderUNetModel, create_model, load_adm_checkpoint
from minority.models.classifiers import MLPClassifier
from minority.models.denoiser import Denoiser
from minority.sampling.loop import sample, step
from minority.seeding import ReplayNoise, SeededNoise

TRAJECTORIES = ["traj_minority_guidance", "traj_minority_guidance_ddim"]


@pytest.fixture(scope="module")
def networks(load_golden) -> tuple[Denoiser, EncoderUNetModel]:
    unet = load_golden("adm_unet")
    net = create_model(unet["flags"])
    load_adm_checkpoint(net, unet["state_dict"])
    fixture = load_golden("adm_classifier")
    classifier = EncoderUNetModel(**fixture["ctor_kwargs"])
    load_adm_checkpoint(classifier, fixture["state_dict"])
    return Denoiser(net.eval(), learn_sigma=True), classifier.eval()


def _guide(fixture: dict, classifier: EncoderUNetModel) -> Guide:
    term = MinorityGuidance(classifier, fixture["target_class"])
    return Guide(term, WeightSchedule(fixture["classifier_scale"], "var"))


def _x_before(fixture: dict, s: int) -> torch.Tensor:
    return fixture["x_T"] if s == 0 else fixture["xs"][s - 1]


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_guidance_gradient_matches_cond_fn(name: str, networks, load_golden) -> None:
    fixture = load_golden(name)
    term = _guide(fixture, networks[1]).term
    for s, t in enumerate(fixture["step_t_original"]):
        timesteps = torch.full((2,), t, dtype=torch.int64)
        assert torch.equal(timesteps, fixture["classifier_t_seen"][s])
        log_prob, grad = term.log_prob_and_grad(_x_before(fixture, s), timesteps)
        cond_grad = grad * fixture["classifier_scale"]
        torch.testing.assert_close(cond_grad, fixture["cond_grad"][s], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            log_prob, fixture["classifier_logp_target"][s], atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_teacher_forced_guided_steps_match(name: str, networks, load_golden) -> None:
    fixture = load_golden(name)
    denoiser, classifier = networks
    diffusion = build_diffusion("cosine", 1000, "10", "learned_range")
    guide = _guide(fixture, classifier)
    for s, k in enumerate(fixture["step_t_respaced"]):
        noise = ReplayNoise([fixture["draws"][s + 1]], [fixture["draw_roles"][s + 1]])
        out = step(
            denoiser,
            diffusion,
            _x_before(fixture, s),
            k,
            noise,
            fixture["sampler"],
            fixture.get("eta", 0.0),
            guide,
        )
        expected = fixture["xs"][s]
        ill_conditioned = fixture["sampler"] == "ddim" and s == 0
        atol = 5e-3 if ill_conditioned else 1e-5 + 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(out.x_prev, expected, atol=atol, rtol=0)


@pytest.mark.parametrize(("name", "atol"), [(TRAJECTORIES[0], 5e-5), (TRAJECTORIES[1], 1e-2)])
def test_free_running_guided_sampling_matches(name: str, atol: float, networks, load_golden):
    fixture = load_golden(name)
    denoiser, classifier = networks
    diffusion = build_diffusion("cosine", 1000, "10", "learned_range")
    noise = ReplayNoise(list(fixture["draws"]), fixture["draw_roles"])
    final = sample(
        denoiser,
        diffusion,
        fixture["shape"],
        noise,
        fixture["sampler"],
        fixture.get("eta", 0.0),
        _guide(fixture, classifier),
    )
    assert noise.position == len(fixture["draws"])
    torch.testing.assert_close(final, fixture["final"], atol=atol, rtol=0)


def _tiny_classifier(num_classes: int = 4) -> MLPClassifier:
    return MLPClassifier(num_classes, (2,), hidden=16, depth=2).double().eval()


def test_direction_is_the_gradient_of_the_target_log_probability() -> None:
    classifier = _tiny_classifier()
    target = torch.tensor([0, 3, 1])
    term = MinorityGuidance(classifier, target)
    x, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor([5, 300, 900])

    def total_log_prob(x: torch.Tensor) -> float:
        log_probs = torch.log_softmax(classifier(x, t), dim=-1)
        return log_probs[torch.arange(3), target].sum().item()

    h, numeric = 1e-6, torch.zeros_like(x)
    for index in range(x.numel()):
        dx = torch.zeros(x.numel(), dtype=x.dtype)
        dx[index] = h
        dx = dx.reshape(x.shape)
        numeric.view(-1)[index] = (total_log_prob(x + dx) - total_log_prob(x - dx)) / (2 * h)
    ctx = GuidanceContext(x, torch.zeros(3), t, x, x, None, None, None)  # type: ignore[arg-type]
    with torch.no_grad():
        direction = term.direction(ctx)
    torch.testing.assert_close(direction, numeric, atol=1e-7, rtol=1e-6)
    assert not direction.requires_grad


def test_direction_works_under_inference_mode() -> None:
    term = MinorityGuidance(_tiny_classifier(), 2)
    x, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor([5, 300, 900])
    expected = term.log_prob_and_grad(x, t)[1]
    with torch.inference_mode():
        torch.testing.assert_close(term.log_prob_and_grad(x.clone(), t.clone())[1], expected)


def test_target_range_is_drawn_per_sample_index_of_the_noise() -> None:
    term = MinorityGuidance(_tiny_classifier(10), [6, 9], seed=1)
    whole = term.targets(64, torch.device("cpu"), indices=range(64))
    assert torch.equal(term.targets(10, torch.device("cpu"), indices=range(20, 30)), whole[20:30])
    assert set(whole.tolist()) == {6, 7, 8, 9}
    assert not torch.equal(sample_target_classes(6, 9, range(64), seed=2), whole)

    x, t = torch.randn(10, 2, dtype=torch.float64), torch.full((10,), 100)
    noise = SeededNoise(1, range(20, 30))
    ctx = GuidanceContext(x, t, t, x, x, None, None, noise)  # type: ignore[arg-type]
    per_sample = MinorityGuidance(term.classifier, whole[20:30])
    torch.testing.assert_close(term.direction(ctx), per_sample.log_prob_and_grad(x, t)[1])
    with pytest.raises(UserError):
        term.direction(GuidanceContext(x, t, t, x, x, None, None, ReplayNoise([])))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target", [4, -1, (2, 4), torch.tensor([0, 4]), (3, 1), (1, 2, 3)], ids=str
)
def test_target_outside_the_classes_is_a_user_error(target) -> None:
    with pytest.raises(UserError):
        MinorityGuidance(_tiny_classifier(4), target)


def test_per_sample_targets_must_match_the_batch() -> None:
    term = MinorityGuidance(_tiny_classifier(4), torch.tensor([0, 1, 2]))
    with pytest.raises(UserError):
        term.log_prob_and_grad(torch.randn(2, 2, dtype=torch.float64), torch.tensor([1, 1]))


def test_classifier_for_another_task_is_a_user_error(networks) -> None:
    classifier = networks[1]
    check_classifier_fits(classifier, 10, (3, 32, 32))
    with pytest.raises(UserError, match="L = 10"):
        check_classifier_fits(classifier, 100, (3, 32, 32))
    with pytest.raises(UserError, match="shape"):
        check_classifier_fits(classifier, 10, (3, 64, 64))
    hparams = {"num_classes": 4, "sample_shape": [2], "noise_schedule": "cosine"}
    check_classifier_fits(hparams, 4, (2,), "cosine", 1000)
    with pytest.raises(UserError, match="noise_schedule"):
        check_classifier_fits(hparams, 4, (2,), "linear")

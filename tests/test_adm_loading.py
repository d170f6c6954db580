"""ADM flags, checkpoint loading and diagnosis, the LSUN cascade, super-resolution, precision."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from minority.errors import MissingWeightsError, UserError
from minority.models.adm import (
    ADMFlags,
    ClassifierFlags,
    MinorityCascadeClassifier,
    create_classifier,
    create_feature_extractor,
    create_minority_cascade,
    create_model,
    create_sr_model,
    load_adm_checkpoint,
    lsun_head_flags,
)
from minority.models.adm.flags import attention_downsample_rates, parse_channel_mult
from minority.models.adm.layers import AttentionBlock

TINY_UNET = dict(
    image_size=16,
    num_channels=32,
    num_res_blocks=1,
    num_head_channels=16,
    attention_resolutions="8",
    channel_mult="1,2",
    learn_sigma=True,
    resblock_updown=True,
    use_scale_shift_norm=True,
)
TINY_EXTRACTOR = ClassifierFlags(
    image_size=32,
    classifier_width=32,
    classifier_depth=1,
    classifier_channel_mult="1,2,2",
    classifier_attention_resolutions="16,8",
    classifier_num_head_channels=32,
)
TINY_HEAD = dataclasses.replace(
    lsun_head_flags(num_classes=5, in_channels=64),
    classifier_width=32,
    classifier_num_head_channels=32,
)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter N(0, 0.05²) values (zero-initialised layers included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def tiny_unet(**overrides) -> torch.nn.Module:
    return create_model({**TINY_UNET, **overrides}).eval()


# ----------------------------------------------------------------------------- flags


def test_flags_ignore_diffusion_only_entries():
    flags = ADMFlags.from_dict(
        {**TINY_UNET, "noise_schedule": "cosine", "timestep_respacing": "250", "use_kl": False}
    )
    assert flags.num_channels == 32 and flags.learn_sigma


def test_unknown_flag_is_a_user_error_unless_lenient():
    with pytest.raises(UserError, match="num_channel"):
        ADMFlags.from_dict({"num_channel": 64})
    assert ADMFlags.from_dict({"batch_size": 4}, strict=False) == ADMFlags()


def test_classifier_flags_ignore_learn_sigma():
    flags = ClassifierFlags.from_dict({"image_size": 64, "learn_sigma": True})
    assert flags.image_size == 64


def test_channel_mult_defaults_follow_the_image_size():
    assert parse_channel_mult("", 256, {256: (1, 1, 2, 2, 4, 4)}) == (1, 1, 2, 2, 4, 4)
    assert parse_channel_mult("1,1,2", 256, {}) == (1, 1, 2)
    assert parse_channel_mult([0.5, 1], 512, {}) == (0.5, 1)
    with pytest.raises(UserError, match="channel_mult"):
        create_model({"image_size": 48})


def test_attention_resolutions_become_downsample_rates():
    assert attention_downsample_rates("32,16,8", 256) == (8, 16, 32)
    assert attention_downsample_rates("32,16,8", 8) == (0, 0, 1)


def test_omegaconf_node_with_list_values_builds_the_same_model():
    node = OmegaConf.create({**TINY_UNET, "channel_mult": [1, 2], "attention_resolutions": [8]})
    from_node = create_model(node)
    assert from_node.state_dict().keys() == tiny_unet().state_dict().keys()


def test_num_head_channels_sets_the_head_count():
    blocks = [m for m in tiny_unet().modules() if isinstance(m, AttentionBlock)]
    assert len(blocks) == 4  # one per level-1 block: encoder, middle, decoder ×2
    assert {block.num_heads for block in blocks} == {64 // 16}


# ----------------------------------------------------------------------------- forward


def test_scalar_timestep_is_broadcast():
    model = randomize(tiny_unet())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x, 500), model(x, torch.tensor([500, 500])))


def test_labels_required_iff_class_conditional():
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([3])
    with pytest.raises(ValueError):
        tiny_unet(class_cond=True)(x, t)
    with pytest.raises(ValueError):
        tiny_unet()(x, t, torch.tensor([1]))


def test_gradient_checkpointing_keeps_the_gradient():
    plain = randomize(tiny_unet())
    checkpointed = tiny_unet(use_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for model in (plain, checkpointed):
        x_in = x.clone().requires_grad_(True)
        model(x_in, torch.tensor([10, 900])).square().sum().backward()
        grads.append(x_in.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_super_resolution_model_shapes():
    model = randomize(
        create_sr_model(
            {**TINY_UNET, "large_size": 16, "small_size": 4, "class_cond": True, "num_classes": 7}
        )
    ).eval()
    assert model.input_blocks[0][0].in_channels == 6
    x, low_res = torch.randn(2, 3, 16, 16), torch.rand(2, 3, 4, 4) * 2 - 1
    with torch.no_grad():
        out = model(x, torch.tensor([1, 2]), low_res, y=torch.tensor([0, 6]))
        other = model(x, torch.tensor([1, 2]), -low_res, y=torch.tensor([0, 6]))
    assert out.shape == (2, 6, 16, 16)
    assert not torch.allclose(out, other), "the low-resolution image must condition the output"


@pytest.mark.parametrize("pool", ["adaptive", "attention", "spatial", "spatial_v2"])
def test_classifier_pools(pool):
    classifier = randomize(
        create_classifier(dataclasses.replace(TINY_EXTRACTOR, classifier_pool=pool))
    ).eval()
    widths = []
    for block in [*classifier.input_blocks, classifier.middle_block]:
        block.register_forward_hook(lambda module, args, out: widths.append(out.shape[1]))
    with torch.no_grad():
        logits = classifier(torch.randn(2, 3, 32, 32), torch.tensor([0, 999]))
    assert logits.shape == (2, 1000)
    if pool.startswith("spatial"):
        assert classifier.out[0].in_features == sum(widths)


# ----------------------------------------------------------------------------- precision


def test_bf16_autocast_runs_on_cpu_and_keeps_fp32_weights():
    reference = randomize(tiny_unet())
    bf16 = tiny_unet(dtype="bfloat16")
    bf16.load_state_dict(reference.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        expected, out = reference(x, t), bf16(x, t)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not torch.equal(out, expected), "bf16 autocast was not applied"
    torch.testing.assert_close(out, expected, atol=0.05 * expected.abs().max().item(), rtol=0)


def test_fp16_flag_runs_in_fp32_on_cpu():
    reference = randomize(tiny_unet())
    fp16 = tiny_unet(use_fp16=True)
    fp16.load_state_dict(reference.state_dict())
    assert fp16.compute_dtype == torch.float16
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([42])
    with torch.no_grad():
        assert torch.equal(fp16(x, t), reference(x, t))


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    ("checkpoint_flags", "flag"),
    [
        (dict(class_cond=True), "class_cond"),
        (dict(learn_sigma=False), "learn_sigma"),
        (dict(num_channels=64), "num_channels"),
        (dict(use_scale_shift_norm=False), "use_scale_shift_norm"),
        (dict(attention_resolutions="16"), "attention_resolutions"),
        (dict(num_res_blocks=2), "num_res_blocks"),
        (dict(resblock_updown=False), "resblock_updown"),
        (dict(channel_mult="1,3"), "channel_mult"),
    ],
)
def test_checkpoint_of_another_config_names_the_flag(tmp_path, checkpoint_flags, flag):
    path = tmp_path / "other.pt"
    torch.save(tiny_unet(**checkpoint_flags).state_dict(), path)
    with pytest.raises(UserError) as error:
        load_adm_checkpoint(tiny_unet(), path)
    message = str(error.value)
    assert flag in message and str(path) in message and "\n" not in message
    mentioned = {
        "class_cond",
        "learn_sigma",
        "num_channels",
        "use_scale_shift_norm",
        "attention_resolutions",
        "resblock_updown",
    } - {flag}
    assert not any(f"flag: {other}" in message for other in mentioned)


def test_conditional_model_rejects_unconditional_checkpoint():
    with pytest.raises(UserError, match="class_cond .the checkpoint is unconditional"):
        load_adm_checkpoint(tiny_unet(class_cond=True), tiny_unet().state_dict())


@pytest.mark.parametrize(
    ("checkpoint_flags", "flag"),
    [
        (dict(classifier_pool="adaptive"), "classifier_pool"),
        (dict(out_channels=10), "out_channels"),
        (dict(classifier_width=64), "classifier_width"),
        (dict(classifier_use_scale_shift_norm=False), "classifier_use_scale_shift_norm"),
    ],
)
def test_classifier_checkpoint_mismatch_names_the_flag(checkpoint_flags, flag):
    other = create_classifier(dataclasses.replace(TINY_EXTRACTOR, **checkpoint_flags))
    with pytest.raises(UserError, match=f"flag: {flag}"):
        load_adm_checkpoint(create_classifier(TINY_EXTRACTOR), other.state_dict())


def test_matching_checkpoint_loads_every_tensor(tmp_path):
    source = randomize(tiny_unet())
    torch.save(source.state_dict(), tmp_path / "model.pt")
    target = tiny_unet()
    load_adm_checkpoint(target, tmp_path / "model.pt")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "absent" / "lsun_bedroom.pt"
    with pytest.raises(MissingWeightsError, match=str(path)):
        load_adm_checkpoint(tiny_unet(), path)


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="broken.pt"):
        load_adm_checkpoint(tiny_unet(), path)


# ----------------------------------------------------------------------------- cascade


@pytest.fixture()
def cascade_files(tmp_path):
    """A full random classifier (with its out.* head) and a random head, saved to disk."""
    full = randomize(create_classifier(TINY_EXTRACTOR), seed=1).eval()
    head = randomize(create_classifier(TINY_HEAD), seed=2)
    torch.save(full.state_dict(), tmp_path / "classifier.pt")
    torch.save(head.state_dict(), tmp_path / "head.pt")
    return full, head, tmp_path / "classifier.pt", tmp_path / "head.pt"


def test_official_head_layout_is_the_released_one():
    with torch.device("meta"):
        cascade = create_minority_cascade()
    head_keys = cascade.head.state_dict().keys()
    assert len(head_keys) == 71
    assert sum(p.numel() for p in cascade.parameters() if p.requires_grad) == 2_896_612
    x, t = torch.empty(1, 3, 256, 256, device="meta"), torch.zeros(1, dtype=torch.long)
    assert cascade.extractor.features(x, t.to("meta")).shape == (1, 512, 8, 8)
    assert head_keys == create_classifier(TINY_HEAD).state_dict().keys()


def test_cascade_loads_both_layouts_and_equals_head_of_features(cascade_files):
    full, head, classifier_path, head_path = cascade_files
    cascade = create_minority_cascade(TINY_EXTRACTOR, TINY_HEAD)
    cascade.load_extractor(classifier_path)
    cascade.load_head(head_path)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 800])
    with torch.no_grad():
        expected = head.eval()(full.features(x, t), t)
        assert torch.equal(cascade.eval()(x, t), expected)


def test_cascade_gradient_reaches_x_through_frozen_extractor(cascade_files):
    _, _, classifier_path, head_path = cascade_files
    cascade = create_minority_cascade(TINY_EXTRACTOR, TINY_HEAD)
    cascade.load_extractor(classifier_path)
    cascade.load_head(head_path)
    cascade.train()
    assert not cascade.extractor.training and cascade.head.training
    assert not any(p.requires_grad for p in cascade.extractor.parameters())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    log_p = torch.log_softmax(cascade(x, torch.tensor([100, 700])), dim=-1)[:, 4].sum()
    log_p.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and x.grad.isfinite().all()
    assert all(p.grad is None for p in cascade.extractor.parameters())
    assert all(p.grad is not None for p in cascade.head.parameters())


def test_cascade_rejects_a_head_of_the_wrong_width():
    wrong = dataclasses.replace(TINY_HEAD, in_channels=32)
    with pytest.raises(UserError, match="in_channels"):
        MinorityCascadeClassifier(
            create_feature_extractor(TINY_EXTRACTOR), create_classifier(wrong)
        )


def test_cascade_head_rejects_the_extractor_checkpoint(cascade_files):
    _, _, classifier_path, _ = cascade_files
    cascade = create_minority_cascade(TINY_EXTRACTOR, TINY_HEAD)
    with pytest.raises(UserError, match="does not fit"):
        cascade.load_head(classifier_path)


def test_cascade_weights_are_looked_up_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MINORITY_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cascade = create_minority_cascade(TINY_EXTRACTOR, TINY_HEAD)
    with pytest.raises(MissingWeightsError, match="256x256_classifier.pt"):
        cascade.load_extractor()
    torch.save(randomize(create_classifier(TINY_HEAD)).state_dict(), tmp_path / "mc_lsun.pt")
    cascade.load_head()

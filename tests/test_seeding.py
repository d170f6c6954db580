"""Every random stream comes from (seed, index, role) through :func:`stream_seed`."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from minority.data.image_ops import item_generator
from minority.diffusion.gaussian import build_diffusion
from minority.guidance.classifier import sample_target_classes
from minority.lit.data import EpochShuffle
from minority.lit.sampling import SamplingModule
from minority.models.denoiser import Denoiser
from minority.scores.labels import stratified_split
from minority.seeding import NOISE, SeededNoise, stream_generator, stream_seed

ROLES = (NOISE, "class_label", "target_class", "shuffle", "validation", "augment", "split")


def test_noise_stream_is_the_root_seed_sequence_of_seed_and_index() -> None:
    """The sampling noise keeps the seeds it had before roles existed (bitwise-equal samples)."""
    for seed, index in [(0, 0), (3, 17), (2**40, 5)]:
        state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)
        assert stream_seed(seed, index) == int(state[0] >> np.uint64(1))
    draws = SeededNoise(7, [4]).randn("x_T", (1, 3))
    expected = torch.randn(3, generator=torch.Generator().manual_seed(stream_seed(7, 4, NOISE)))
    assert torch.equal(draws[0], expected)


def test_a_role_is_a_spawn_key_of_its_utf8_bytes() -> None:
    """Fixed by the role's bytes, so the same in every process (no salted ``hash``)."""
    key = int.from_bytes(b"class_label", "big")
    sequence = np.random.SeedSequence([5, 9], spawn_key=(key,))
    expected = int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    assert stream_seed(5, 9, "class_label") == expected


def test_streams_of_seeds_indices_and_roles_are_all_distinct() -> None:
    """No stream reuses another's seed — in particular not the next run's noise (seed + 1)."""
    grid = list(itertools.product(range(4), range(16), ROLES))
    seeds = {stream_seed(seed, index, role) for seed, index, role in grid}
    assert len(seeds) == len(grid)
    assert all(0 <= s < 2**63 for s in seeds)


def test_class_labels_come_from_their_own_stream_not_the_next_runs_noise() -> None:
    diffusion = build_diffusion("cosine", 1000, "5")
    module = SamplingModule(Denoiser(torch.nn.Identity()), diffusion, (2,), 3, [], num_classes=1000)
    labels = module.class_labels(range(32))
    expected = [
        int(torch.randint(1000, (1,), generator=stream_generator(3, i, "class_label")))
        for i in range(32)
    ]
    assert labels.tolist() == expected
    assert torch.equal(module.class_labels(range(8, 16)), labels[8:16])
    next_run = SeededNoise(4, range(32)).generators
    assert labels.tolist() != [int(torch.randint(1000, (1,), generator=g)) for g in next_run]


def test_target_classes_shuffles_augmentation_and_splits_use_their_streams() -> None:
    targets = sample_target_classes(0, 99, range(16), seed=2)
    expected = [
        int(torch.randint(0, 100, (1,), generator=stream_generator(2, i, "target_class")))
        for i in range(16)
    ]
    assert targets.tolist() == expected

    shuffle = EpochShuffle(list(range(50)), seed=6)
    shuffle.set_epoch(3)
    order = torch.randperm(50, generator=stream_generator(6, 3, "shuffle"))
    assert list(shuffle) == order.tolist()

    rng = np.random.default_rng(stream_seed(1, (8, 2), "augment"))
    assert item_generator(1, 8, 2).random() == rng.random()

    labels = torch.arange(40) % 2
    split_seed = stream_seed(1, 0, "split") % 2**32
    _, val = train_test_split(range(40), test_size=0.25, random_state=split_seed, stratify=labels)
    assert stratified_split(labels, 0.25, seed=1)[1].tolist() == sorted(val)

"""The released LSUN minority head (mc_lsun.pt layout) loads into the official cascade."""

from __future__ import annotations

import pytest
import torch

from minority.guidance.classifier import load_minority_classifier
from minority.models.adm import create_classifier, create_minority_cascade, lsun_extractor_flags

pytestmark = pytest.mark.slow


def test_bare_head_and_full_classifier_files_make_the_cascade(tmp_path) -> None:
    torch.manual_seed(0)
    reference = create_minority_cascade()
    head_file, extractor_file = tmp_path / "mc_lsun.pt", tmp_path / "256x256_classifier.pt"
    torch.save(reference.head.state_dict(), head_file)
    full = create_classifier({**vars(lsun_extractor_flags())})
    full.load_state_dict({**full.state_dict(), **reference.extractor.state_dict()})
    torch.save(full.state_dict(), extractor_file)
    assert len(torch.load(head_file, weights_only=True)) == 71
    loaded = load_minority_classifier(head_file, extractor_weights=str(extractor_file))
    x, t = torch.randn(1, 3, 256, 256), torch.tensor([500])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), reference(x, t))
    assert not any(p.requires_grad for p in loaded.parameters())

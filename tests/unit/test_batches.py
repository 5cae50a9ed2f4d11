"""prepare_batch (the one place images become model inputs) and batch_bounds, against hand values."""

from __future__ import annotations

import pytest
import torch

from kdedge.inputs import InputStats
from kdedge.train.batches import AugmentSpec, prepare_batch
from kdedge.train.loop import batch_bounds


def test_normalisation_by_hand():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 2, 1, 3)
    mean, std = InputStats((0.2, 0.0), (0.5, 1.0)).tensors(torch.device("cpu"))
    out = prepare_batch(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == (2, 2, 1, 3)
    assert out[0, 0, 0].tolist() == pytest.approx([-0.4, 0.0, 1.6])  # (v/255 - 0.2) / 0.5
    assert out[1, 1, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_augmentation_pads_with_black_before_normalising():
    x = torch.full((64, 1, 4, 4), 255, dtype=torch.uint8)
    mean, std = InputStats((0.5,), (0.25,)).tensors(torch.device("cpu"))
    out = prepare_batch(x, mean, std, augmentation=AugmentSpec(padding=2, hflip=True),
                        generator=torch.Generator().manual_seed(0))
    # only white (1-.5)/.25 = 2 and black padding (0-.5)/.25 = -2 occur
    assert sorted(out.unique().tolist()) == pytest.approx([-2.0, 2.0])
    assert (out == 2.0).flatten(1).all(1).sum() < 64  # some samples really were shifted


def test_channels_last_layout():
    x = torch.randint(0, 255, (2, 3, 5, 5), dtype=torch.uint8)
    mean, std = InputStats((0.0,) * 3, (1.0,) * 3).tensors(torch.device("cpu"))
    out = prepare_batch(x, mean, std, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, x.float() / 255)


@pytest.mark.parametrize("n,b,expected", [
    (10, 4, [(0, 4), (4, 8), (8, 10)]),
    (9, 4, [(0, 4), (4, 9)]),   # a trailing batch of one joins the previous one (BatchNorm needs 2)
    (8, 4, [(0, 4), (4, 8)]),
    (1, 4, [(0, 1)]),
])
def test_batch_bounds(n, b, expected):
    assert batch_bounds(n, b) == expected

"""RandomResizedCrop + flip, batched (kdedge/data/transforms.py), against slicing + F.interpolate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdedge.data.split import stratified_split
from kdedge.data.transforms import random_resized_crop, resized_crop
from kdedge.inputs import normalise_batch
from kdedge.train.batches import AugmentSpec, prepare_batch


def test_whole_image_box_is_the_identity_and_flip_mirrors():
    x = torch.rand(3, 2, 7, 9)
    boxes = torch.tensor([[0.0, 0.0, 9.0, 7.0]] * 3)
    sq = torch.rand(3, 2, 8, 8)
    whole = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 3)
    assert torch.allclose(resized_crop(sq, whole, 8), sq, atol=1e-6)
    flipped = resized_crop(sq, whole, 8, torch.tensor([True, False, True]))
    assert torch.allclose(flipped[0], sq[0].flip(-1), atol=1e-6) and torch.allclose(flipped[1], sq[1], atol=1e-6)
    assert resized_crop(x, boxes, 5).shape == (3, 2, 5, 5)


@pytest.mark.parametrize("box", [(2, 1, 12, 10), (0, 0, 16, 16), (5, 3, 8, 9), (3, 6, 10, 8)])
def test_a_known_box_equals_slicing_then_interpolate(box):
    left, top, w, h = box
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    size = 6  # at or below the box sides: interpolate's align_corners=False mapping never reaches past the box
    out = resized_crop(x, torch.tensor([[float(v) for v in box]] * 2), size)
    expected = F.interpolate(x[:, :, top:top + h, left:left + w], size=(size, size), mode="bilinear",
                             align_corners=False, antialias=False)
    assert torch.allclose(out, expected, atol=1e-5)


def test_random_boxes_follow_the_documented_draws():
    x = torch.rand(16, 1, 20, 30, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    twin = torch.Generator().manual_seed(0)
    twin.set_state(g.get_state())
    out = random_resized_crop(x, min_scale=0.3, hflip=True, generator=g, size=12)
    b, h, w = 16, 20, 30
    scale = torch.empty(b).uniform_(0.3, 1.0, generator=twin)
    aspect = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=twin))
    bw = torch.sqrt(scale * h * w * aspect).clamp(max=w)
    bh = torch.sqrt(scale * h * w / aspect).clamp(max=h)
    left = torch.rand(b, generator=twin) * (w - bw)
    top = torch.rand(b, generator=twin) * (h - bh)
    flip = torch.rand(b, generator=twin) < 0.5
    assert 0 < flip.sum() < b
    assert ((bw * bh) / (h * w) >= 0.3 * 0.74).all() and (left >= 0).all() and (left + bw <= w + 1e-4).all()
    expected = resized_crop(x, torch.stack([left, top, bw, bh], 1), 12, flip)
    assert out.shape == (16, 1, 12, 12) and torch.equal(out, expected)
    again = random_resized_crop(x, min_scale=0.3, hflip=True, generator=torch.Generator().manual_seed(3), size=12)
    assert torch.equal(out, again)


def test_prepare_batch_uses_the_crop_the_spec_names():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    spec = AugmentSpec(padding=4, hflip=True, crop="random_resized_crop", min_crop_scale=0.5)
    out = prepare_batch(images, mean, std, augmentation=spec, generator=torch.Generator().manual_seed(1))
    by_hand = normalise_batch(images, mean, std, augment=lambda x: random_resized_crop(
        x, min_scale=0.5, hflip=True, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (4, 3, 10, 10) and torch.equal(out, by_hand)
    # scale 1 and ratio 1: the box is the whole image, so the identity
    x = images.float() / 255
    same = random_resized_crop(x, min_scale=1.0, hflip=False, generator=torch.Generator(), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-6)


def test_stratified_split_on_labels_alone_matches_the_image_split():
    from kdedge.data import ImageData, split_train_val

    labels = torch.tensor([0, 1, 1, 0, 2, 2, 2, 0, 1, 1, 0, 0])
    kept, held = stratified_split(labels, 0.3, 4)
    data = ImageData(torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1), labels)
    train, val = split_train_val(data, 0.3, 4)
    assert train.images.flatten().tolist() == kept.tolist() and val.images.flatten().tolist() == held.tolist()
    assert sorted(kept.tolist() + held.tolist()) == list(range(12))
    assert torch.bincount(labels[held], minlength=3).tolist() == [2, 1, 1]  # round(5*.3), round(4*.3), round(3*.3)

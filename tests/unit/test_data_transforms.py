"""split_train_val and augment."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdedge.data import ImageData, augment, split_train_val


def toy(n_per_class=(50, 30, 20)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(labels), dtype=torch.int64).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return ImageData(images.to(torch.uint8).contiguous(), labels)  # image value = original index


def ids(d):
    return d.images[:, 0, 0, 0].tolist()


def test_split_is_stratified_disjoint_complete():
    data = toy()
    train, val = split_train_val(data, 0.2, seed=3)
    assert torch.bincount(val.labels).tolist() == [10, 6, 4]
    assert torch.bincount(train.labels).tolist() == [40, 24, 16]
    assert set(ids(train)).isdisjoint(ids(val)) and sorted(ids(train) + ids(val)) == list(range(100))
    for part in (train, val):  # labels still travel with their images
        assert all(int(data.labels[i]) == int(l) for i, l in zip(ids(part), part.labels))


def test_split_deterministic_and_seed_dependent():
    data = toy()
    a, b, c = (split_train_val(data, 0.25, seed=s)[1] for s in (7, 7, 8))
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_split_keeps_each_class_on_both_sides_and_rejects_bad_fraction():
    train, val = split_train_val(toy((3, 2)), 0.01, seed=0)
    assert set(val.labels.tolist()) == {0, 1} and set(train.labels.tolist()) == {0, 1}
    with pytest.raises(ValueError):
        split_train_val(toy(), 1.0, seed=0)


def test_augment_identity():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(augment(x, padding=0, hflip=False, generator=torch.Generator().manual_seed(0)), x)


def test_augment_matches_hand_crop_from_cloned_generator():
    x = torch.randn(16, 2, 6, 7)
    p = 2
    g = torch.Generator().manual_seed(11)
    twin = torch.Generator().manual_seed(0)
    twin.set_state(g.get_state())
    out = augment(x, padding=p, hflip=True, generator=g)
    dy = torch.randint(0, 2 * p + 1, (16,), generator=twin)
    dx = torch.randint(0, 2 * p + 1, (16,), generator=twin)
    flip = torch.rand(16, generator=twin) < 0.5
    padded = F.pad(x, (p, p, p, p))
    for i in range(16):
        want = padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 7]
        if flip[i]:
            want = want.flip(-1)
        assert torch.equal(out[i], want)
    assert 0 < int(flip.sum()) < 16  # both branches exercised


def test_augment_structure_each_output_is_a_shift_or_flip():
    x = torch.rand(32, 1, 4, 4) + 1  # nonzero so padding zeros are distinguishable
    p = 1
    out = augment(x, padding=p, hflip=True, generator=torch.Generator().manual_seed(5))
    padded = F.pad(x, (p, p, p, p))
    seen_shifts, seen_flip = set(), set()
    for i in range(32):
        matches = [(dy, dx, f) for dy in range(3) for dx in range(3) for f in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 4, dx:dx + 4]))]  # fmt: skip
        assert matches
        seen_shifts.add(matches[0][:2])
        seen_flip.add(matches[0][2])
    assert len(seen_shifts) > 3 and seen_flip == {False, True}


def test_augment_deterministic_and_no_flip_when_disabled():
    x = torch.randn(8, 1, 5, 5)
    a = augment(x, padding=3, hflip=True, generator=torch.Generator().manual_seed(2))
    b = augment(x, padding=3, hflip=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    # hflip only, no padding: every output is the input or its mirror
    f = augment(x, padding=0, hflip=True, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for i in range(8))

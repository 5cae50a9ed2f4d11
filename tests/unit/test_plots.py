"""Reliability diagram: a real PNG, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from kdedge.metrics import calibration_bins
from kdedge.plots import reliability_diagram

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def curve(seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(400, 10, generator=g) * scale
    noise = torch.randint(0, 10, (400,), generator=g)
    labels = torch.where(torch.rand(400, generator=g) < 0.7, logits.argmax(1), noise)
    return calibration_bins(torch.softmax(logits, 1), labels)


def test_reliability_diagram_writes_png_atomically(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "reliability.png"
    curves = {"teacher": curve(0, 6.0), "student": curve(1, 2.0), "saturated": curve(2, 40.0)}
    reliability_diagram(curves, out, title="teacher vs student")
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # something was drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["reliability.png"]  # no temp files left

    reliability_diagram({"one": curves["student"]}, out, title="overwrite")  # replaces in place
    assert imread(out).shape[0] > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["reliability.png"]


def test_reliability_diagram_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        reliability_diagram({}, tmp_path / "x.png", title="t")
    b10 = curve(0, 3.0)
    g = torch.Generator().manual_seed(3)
    b5 = calibration_bins(torch.softmax(torch.randn(20, 3, generator=g), 1), torch.zeros(20, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="edges"):
        reliability_diagram({"a": b10, "b": b5}, tmp_path / "x.png", title="t")
    assert list(tmp_path.iterdir()) == []

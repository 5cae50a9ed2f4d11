"""Figures for reports. Built on a bare `Figure` with the Agg canvas: no pyplot, no global backend state."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdedge.io import atomic_path
from kdedge.metrics import CalibrationBins


def reliability_diagram(curves: Mapping[str, CalibrationBins], path: Path, *, title: str) -> None:
    """Accuracy vs mean confidence per bin for each named curve, overlaid, with the identity line,
    a per-bin sample-count panel below and each curve's ECE in the legend; written as PNG atomically."""
    if not curves:
        raise ValueError("reliability_diagram needs at least one curve")
    first = next(iter(curves.values()))
    for name, bins in curves.items():
        if not isinstance(bins, CalibrationBins):
            raise ValueError(f"curve {name!r} must be a CalibrationBins, got {type(bins).__name__}")
        if bins.edges != first.edges:
            raise ValueError(f"curve {name!r} uses different bin edges from the others; bin them alike")

    fig = Figure(figsize=(6.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; savefig then renders with Agg
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])

    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfect calibration")
    edges = first.edges
    m = len(edges) - 1
    n_curves = len(curves)
    for i, (name, bins) in enumerate(curves.items()):
        # empty bins have no accuracy to show; plotting them at 0 would look like a miscalibration
        pts = [(c, a) for k, c, a in zip(bins.counts, bins.confidence, bins.accuracy) if k > 0]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        label = f"{name} (ECE {bins.ece:.4f}, n={bins.n})"
        (line,) = ax.plot(xs, ys, marker="o", linewidth=1.5, clip_on=False, label=label)
        # grouped bars: curve i takes the i-th slice of each bin's width
        widths = [(edges[j + 1] - edges[j]) / n_curves for j in range(m)]
        lefts = [edges[j] + i * widths[j] for j in range(m)]
        ax_n.bar(lefts, bins.counts, width=widths, align="edge", color=line.get_color(), alpha=0.7, label=name)

    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ax_n.set_xlabel("confidence (max probability)")
    ax_n.set_ylabel("samples per bin")
    ax_n.set_xticks(edges if m <= 20 else edges[:: max(1, m // 10)])
    ax_n.tick_params(axis="x", labelsize="small")

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")  # tmp has a .tmp suffix, so name the format


def line_plot(series: Mapping[str, tuple[list, list[float]]], path: Path, *, title: str, xlabel: str,
              ylabel: str, hlines: Mapping[str, float] | None = None) -> None:
    """One line per named (x, y) series, optional labelled horizontal reference lines; PNG, atomic."""
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    categorical = any(not isinstance(x, (int, float)) for xs, _ in series.values() for x in xs)
    for name, (xs, ys) in series.items():
        positions = list(range(len(xs))) if categorical else xs
        ax.plot(positions, ys, marker="o", label=name)
        if categorical:
            ax.set_xticks(positions, [str(x) for x in xs], rotation=30, ha="right")
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, linestyle="--", color=f"C{len(series) + i}", label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")

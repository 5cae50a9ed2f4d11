"""Figures for reports. Built on a bare `Figure` with the Agg canvas: no pyplot, no global backend state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdedge.io import atomic_path
from kdedge.metrics import CalibrationBins


# a bin with fewer images than this (or than 1 % of the split) says little about calibration: drawn
# hollow (and small: area ∝ count), so a 3-image bin at accuracy 0 does not read like a finding
FEW_IMAGES = 10
FEW_FRACTION = 0.01


def few_sample_bins(bins: CalibrationBins) -> list[bool]:
    """Per bin: True when it holds some, but too few, of the split's images to read much into."""
    limit = max(FEW_IMAGES, FEW_FRACTION * bins.n)
    return [0 < k < limit for k in bins.counts]


def reliability_diagram(curves: Mapping[str, CalibrationBins], path: Path, *, title: str) -> Figure:
    """Accuracy vs mean confidence per bin for each named curve, overlaid, with the identity line,
    a per-bin sample-count panel below and each curve's ECE in the legend; written as PNG atomically.
    Marker area grows with the bin's count; bins with few images (few_sample_bins) are hollow."""
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
    any_few = False
    for i, (name, bins) in enumerate(curves.items()):
        # empty bins have no accuracy to show; plotting them at 0 would look like a miscalibration
        few = few_sample_bins(bins)
        pts = [(c, a, k, f) for k, c, a, f in zip(bins.counts, bins.confidence, bins.accuracy, few) if k > 0]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        label = f"{name} (ECE {bins.ece:.4f}, n={bins.n})"
        (line,) = ax.plot(xs, ys, linewidth=1.2, clip_on=False, label=label)
        color = line.get_color()
        top = max((p[2] for p in pts), default=1)
        sizes = [12 + 140 * p[2] / top for p in pts]  # area ∝ images in the bin
        ax.scatter(xs, ys, s=sizes, clip_on=False, zorder=3, linewidths=1.2, edgecolors=color,
                   facecolors=["none" if p[3] else color for p in pts])
        any_few = any_few or any(p[3] for p in pts)
        # grouped bars: curve i takes the i-th slice of each bin's width
        widths = [(edges[j + 1] - edges[j]) / n_curves for j in range(m)]
        lefts = [edges[j] + i * widths[j] for j in range(m)]
        ax_n.bar(lefts, bins.counts, width=widths, align="edge", color=line.get_color(), alpha=0.7, label=name)

    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any_few:  # a legend entry for the hollow markers
        ax.scatter([], [], s=30, facecolors="none", edgecolors="0.4",
                   label=f"hollow: bin with < {FEW_IMAGES} images or < {FEW_FRACTION:.0%} of the split")
    ax.legend(loc="lower right", fontsize="small")  # below the diagonal at high confidence: rarely any point
    ax_n.set_xlabel("confidence (max probability)")
    ax_n.set_ylabel("samples per bin")
    ax_n.set_xticks(edges if m <= 20 else edges[:: max(1, m // 10)])
    ax_n.tick_params(axis="x", labelsize="small")

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")  # tmp has a .tmp suffix, so name the format
    return fig


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


_FAMILY_MARKERS = {"torch": "o", "ort": "s", "openvino": "D", "trt": "^"}


def tradeoff_plot(points: Sequence[Mapping[str, Any]], path: Path, *, title: str, xlabel: str,
                  min_accuracy: float | None = None, budget_ms: float | None = None,
                  chosen: tuple[str, str] | None = None, runner_up: tuple[str, str] | None = None) -> Figure:
    """Accuracy against latency, one marker per model x runtime: colour = model, shape = runtime family,
    filled = fp32 and hollow = INT8, area ∝ size on disk; the limits as dashed lines, the recommended
    point ringed (runner-up: dotted ring). `points`: model, runtime, family, precision, latency_ms,
    accuracy, size_bytes, gate_failed (an INT8 kept by --allow-drop: labelled with †). PNG, atomic."""
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(9.6, 5.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(p["model"] for p in points))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    biggest = max((p["size_bytes"] or 0 for p in points), default=0) or 1
    for i, p in enumerate(points):
        color, area = colors[p["model"]], 30 + 400 * (p["size_bytes"] or 0) / biggest
        ax.scatter([p["latency_ms"]], [p["accuracy"] * 100], s=area, marker=_FAMILY_MARKERS.get(p["family"], "P"),
                   facecolors=color if p["precision"] == "fp32" else "white", edgecolors=color, linewidths=1.8,
                   alpha=0.85, zorder=3)
        tag = f"{p['model']} {p['runtime']}" + (" †" if p["gate_failed"] else "")
        # alternate above / below: points of one model often sit on one accuracy row
        ax.annotate(tag, (p["latency_ms"], p["accuracy"] * 100), xytext=(7, 6 if i % 2 else -11),
                    textcoords="offset points", fontsize=7, color="0.25")
    rings: list[Line2D] = []
    for ring, style, label in ((chosen, "-", "recommended"), (runner_up, ":", "runner-up")):
        hit = [p for p in points if ring and (p["model"], p["runtime"]) == ring]
        if hit:
            ax.scatter([hit[0]["latency_ms"]], [hit[0]["accuracy"] * 100], s=900, facecolors="none",
                       edgecolors="black", linewidths=2, linestyles=style, zorder=4)
            rings.append(Line2D([], [], linestyle=style, color="black", marker="o", markersize=11,
                                markerfacecolor="none", label=label))
    if min_accuracy is not None:
        ax.axhline(min_accuracy * 100, linestyle="--", color="0.4", linewidth=1, label="accuracy limit (--max-drop)")
    if budget_ms is not None:
        ax.axvline(budget_ms, linestyle="--", color="C3", linewidth=1, label="latency budget (--budget-ms)")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.08)  # room for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", color=colors[m], label=m) for m in models]
    handles += [Line2D([], [], linestyle="", marker=_FAMILY_MARKERS.get(f, "P"), color="0.3", label=f)
                for f in dict.fromkeys(p["family"] for p in points)]
    handles += [Line2D([], [], linestyle="", marker="o", markerfacecolor="white", color="0.3", label="INT8 (hollow)")]
    handles += rings + ax.get_legend_handles_labels()[0]
    if any(p["gate_failed"] for p in points):
        handles.append(Line2D([], [], linestyle="", label="† INT8 that failed the export gate (--allow-drop)"))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="area ∝ size on disk", title_fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return fig

"""Curves as PNG or SVG, drawn with matplotlib's object API (never pyplot: no global figure).

One panel per metric; the phases keep seed 000's colours (train blue, train_eval sky blue,
val orange) and test is a black marker. A comparison overlays jobs: one colour per job, one
line style per phase.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from trainrun.figures import PHASE_ORDER, CurveArrays

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}

PHASE_COLOURS = {"train": "blue", "train_eval": "skyblue", "val": "orange", "test": "black"}
PHASE_LINES = {"train": ":", "train_eval": "--", "val": "-"}
PHASE_LABELS = {"train": "train (train mode)", "train_eval": "train (eval mode)", "val": "val"}
METRIC_TITLES = {
    "loss": "loss (data term)",
    "accuracy": "accuracy (tie-aware)",
    "tie_rate": "tie rate",
    "penalty": "penalty (regulariser)",
    "mse": "MSE",
    "mae": "MAE",
    "r2": "R²",
}
UNIT_INTERVAL = {"accuracy", "tie_rate"}
# Text layout and font caches inside matplotlib are shared module state; the object API keeps
# figures apart, but one render at a time keeps those caches safe under concurrent requests.
_RENDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Run:
    """One job's curves, labelled for a legend."""

    label: str
    curves: CurveArrays


def _grid(n_panels: int) -> tuple[int, int]:
    cols = 1 if n_panels == 1 else 2
    return -(-n_panels // cols), cols


def _draw(ax: Axes, epochs: np.ndarray, values: np.ndarray, phase: str, **style: Any) -> None:
    if phase == "test":
        kept = ~np.isnan(values)
        ax.scatter(epochs[kept], values[kept], marker="*", s=80, zorder=3, **style)
    else:
        ax.plot(epochs, values, linewidth=1.2, **style)


def _render(fig: Figure, fmt: ImageFormat) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        FigureCanvasAgg(fig).print_png(buf)
    else:
        FigureCanvasSVG(fig).print_svg(buf)
    return buf.getvalue()


def _figure(metrics: Sequence[str]) -> tuple[Figure, list[Axes]]:
    rows, cols = _grid(max(1, len(metrics)))
    fig = Figure(figsize=(6.0 * cols, 3.4 * rows), layout="constrained", dpi=100)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(1, len(metrics)))]
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if metric in UNIT_INTERVAL:
            ax.set_ylim(-0.02, 1.02)
    return fig, axes


def render_curves(
    curves: CurveArrays,
    metrics: Sequence[str],
    title: str,
    fmt: ImageFormat,
    phases: Sequence[str] = PHASE_ORDER,
) -> bytes:
    """One job: a panel per metric, its phases on shared axes."""
    with _RENDER_LOCK:
        fig, axes = _figure(metrics)
        fig.suptitle(title, fontsize=11)
        for ax, metric in zip(axes, metrics, strict=False):
            for phase in phases:
                values = curves.series.get(phase, {}).get(metric)
                if values is None or np.isnan(values).all():
                    continue
                label = PHASE_LABELS.get(phase, phase)
                _draw(ax, curves.epochs, values, phase, color=PHASE_COLOURS[phase], label=label)
            if ax.has_data():
                ax.legend(fontsize=8)
            else:
                ax.text(
                    0.5, 0.5, "no figures yet", ha="center", va="center", transform=ax.transAxes
                )
        return _render(fig, fmt)


def render_comparison(
    runs: Sequence[Run], metrics: Sequence[str], phases: Sequence[str], fmt: ImageFormat
) -> bytes:
    """Several jobs: a panel per metric, a colour per job, a line style per phase."""
    with _RENDER_LOCK:
        fig, axes = _figure(metrics)
        fig.suptitle("comparison: " + ", ".join(r.label for r in runs), fontsize=11)
        colours = [f"C{i}" for i in range(10)]
        for ax, metric in zip(axes, metrics, strict=False):
            for i, run in enumerate(runs):
                for phase in phases:
                    values = run.curves.series.get(phase, {}).get(metric)
                    if values is None or np.isnan(values).all():
                        continue
                    style: dict[str, Any] = {"color": colours[i % len(colours)]}
                    if phase != "test":
                        style["linestyle"] = PHASE_LINES.get(phase, "-")
                    _draw(
                        ax, run.curves.epochs, values, phase, label=f"{run.label} {phase}", **style
                    )
            if ax.has_data():
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no figures", ha="center", va="center", transform=ax.transAxes)
        return _render(fig, fmt)

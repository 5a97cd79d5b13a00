"""Per-layer charts for the leaderboard page, drawn with matplotlib at build time.

Each task stores its per-layer curves somewhere in the results' `details`, under names of
its own, from the run's `Results.curves` (the one contract for per-layer numbers: a metric
key, the layers, a value at each). A value that is not a finite number is skipped; nothing
here knows a task by name, so a plugin that returns curves gets a chart too.

A curve is stored in the leaderboard row as [[relative depth, value], ...], relative depth
being layer / (n_layers - 1), so models of different depths share one x axis.

The chart of a task draws, for every model, the finding's effect as a solid line and its
control dashed (a control metric's own curve, or a horizontal line at a control number).
Without a declared finding (or with an effect that has no per-layer curve), it draws the
first headline metric that has a curve, without a control. Only the object API
(`matplotlib.figure.Figure`) is used: no pyplot state, no backend switch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Optional

from harness.results import Results
from harness.results.validate import is_number

MAX_CURVES = 64  # series kept per row
MAX_POINTS = 1024  # layers per series
MAX_LAYERS = 100_000
MAX_MODELS_DRAWN = 20
MAX_LABEL = 48


def finite(x: Any) -> bool:
    return is_number(x)


def extract_curves(results: Results) -> dict[str, list[list[float]]]:
    """A run's per-layer curves (`Results.curves`), keyed by metric key, as [[relative depth, value], ...].

    The first curve of a metric key counts; the depth is the model's (`Results.model.n_layers`),
    so a file that does not record it, or a curve of no finite value, gives no curve.
    """
    curves: dict[str, list[list[float]]] = {}
    for curve in results.curves:
        if len(curves) >= MAX_CURVES:
            break
        points = to_points(curve.values, curve.layers, results.model.n_layers)
        if points and curve.metric not in curves:
            curves[curve.metric] = points
    return curves


def to_points(values: list, layers: Any, n_layers: Any) -> list[list[float]]:
    """[[layer / (n_layers - 1), value], ...] for the finite values at valid layers; [] when the depth is unknown."""
    if layers is None:
        layers = list(range(len(values)))
    if not (isinstance(n_layers, int) and not isinstance(n_layers, bool) and 0 < n_layers <= MAX_LAYERS):
        return []
    if not isinstance(layers, list) or len(layers) != len(values) or len(values) > min(n_layers, MAX_POINTS):
        return []
    span = max(n_layers - 1, 1)
    return [
        [round(L / span, 6), float(v)]
        for L, v in zip(layers, values)
        if isinstance(L, int) and not isinstance(L, bool) and 0 <= L < n_layers and finite(v)
    ]


def clean_curves(curves: Any) -> dict[str, list[list[float]]]:
    """Curves read back from a leaderboard file: only well-formed, finite, bounded ones are kept."""
    if not isinstance(curves, dict):
        return {}
    kept: dict[str, list[list[float]]] = {}
    for key, points in list(curves.items())[:MAX_CURVES]:
        if (
            isinstance(key, str)
            and isinstance(points, list)
            and len(points) <= MAX_POINTS
            and all(isinstance(p, list) and len(p) == 2 and finite(p[0]) and 0 <= p[0] <= 1 and finite(p[1]) for p in points)
        ):
            kept[key] = [[float(x), float(y)] for x, y in points]
    return kept


@dataclass(frozen=True)
class ChartLine:
    """One model's curves on a task's chart."""

    model: str
    curves: dict[str, list[list[float]]]


def choose_keys(lines: list[ChartLine], effect: Optional[str], control: Any, headline: list[str]) -> tuple[Optional[str], Any]:
    """The metric drawn solid and the control drawn dashed (a key, a number or None); see the module docstring."""
    has = lambda key: any(key in line.curves for line in lines)  # noqa: E731
    if effect and has(effect):
        if isinstance(control, str):
            return effect, control if has(control) else None
        return effect, control if finite(control) else None
    return next((k for k in headline if has(k)), None), None


def label(text: str, limit: int = MAX_LABEL) -> str:
    """Untrusted text (a model name, a metric key) as chart text: short, "$" escaped so it is never read as mathtext."""
    text = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return text.replace("\\", "\\\\").replace("$", r"\$")


def layer_chart(task: str, lines: list[ChartLine], solid: str, dashed: Any) -> bytes:
    """A PNG of every model's per-layer curve of `solid`, and of `dashed` (a metric key or a number) dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [line for line in lines if solid in line.curves][:MAX_MODELS_DRAWN]
    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(drawn))]
    for line, color in zip(drawn, colors):
        xs, ys = zip(*line.curves[solid])
        ax.plot(xs, ys, color=color, marker="o", ms=2.5, lw=1.5, label=label(line.model))
        if isinstance(dashed, str) and dashed in line.curves:
            xs, ys = zip(*line.curves[dashed])
            ax.plot(xs, ys, color=color, ls="--", lw=1.2)
    if finite(dashed):
        ax.axhline(float(dashed), color="0.4", ls="--", lw=1.0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("relative depth (layer / (n_layers - 1))")
    ax.set_ylabel(label(solid))
    control_text = "" if dashed is None else f", dashed: {dashed if isinstance(dashed, str) else f'{float(dashed):g}'}"
    ax.set_title(label(f"{task}: solid: {solid}{control_text}", 110), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()

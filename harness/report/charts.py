"""Per-layer charts for the leaderboard page, drawn with matplotlib at build time.

Each task stores its per-layer curves somewhere in the results' `details`, under names of
its own. `CURVE_SOURCES` is the one table that says where: a path of keys to a mapping of
{series name: [value per layer]}, how a series name becomes the metric key it is the
per-layer version of, and where the probed layers are listed (absent: every layer from 0).
A source that is missing, or a value that is not a finite number, is skipped; nothing here
knows a task by name, so a plugin whose details follow one of these shapes gets a chart too.

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

from harness.results.validate import is_number

MAX_CURVES = 64  # series kept per row
MAX_POINTS = 1024  # layers per series
MAX_LAYERS = 100_000
MAX_MODELS_DRAWN = 20
MAX_LABEL = 48


@dataclass(frozen=True)
class CurveSource:
    """Where one shape of per-layer curves lives in `details`.

    series: path of keys to {name: [value per layer]}; a name must end with `suffix`
        (then removed), others are ignored;
    key: how the remaining name becomes a metric key ("{}" is the name);
    layers: path of keys to the list of layer indices the values belong to (None: 0, 1, ...).
    """

    series: tuple[str, ...]
    key: str = "{}"
    suffix: str = ""
    layers: Optional[tuple[str, ...]] = None


CURVE_SOURCES: tuple[CurveSource, ...] = (
    CurveSource(series=("per_layer",)),  # circles: probe_r2, probe_r2_scrambled_order, ...
    CurveSource(series=("per_layer_r2_heldout",), key="{}_r2_heldout"),  # number_helix: helix, linear, ...
    CurveSource(series=("probe",), suffix="_acc_by_layer", key="probe_{}_acc", layers=("probe", "layers")),  # multiplication
    CurveSource(series=("probe", "per_layer"), layers=("probe", "layers")),  # scrambled_text: restoration_probe_acc_*
)


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def finite(x: Any) -> bool:
    return is_number(x)


def extract_curves(details: Any) -> dict[str, list[list[float]]]:
    """The per-layer curves in a run's `details`, keyed by metric key, as [[relative depth, value], ...]."""
    n_layers = dig(details, ("n_layers",))
    curves: dict[str, list[list[float]]] = {}
    for source in CURVE_SOURCES:
        series = dig(details, source.series)
        if not isinstance(series, dict):
            continue
        layers = dig(details, source.layers) if source.layers else None
        for name, values in series.items():
            if len(curves) >= MAX_CURVES:
                return curves
            if not (isinstance(name, str) and name.endswith(source.suffix) and isinstance(values, list)):
                continue
            key = source.key.format(name[: len(name) - len(source.suffix)] if source.suffix else name)
            points = to_points(values, layers, n_layers)
            if points and key not in curves:
                curves[key] = points
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

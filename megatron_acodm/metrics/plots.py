"""The mixture figure of a run, drawn from its metrics JSONL.

Top: the domain weights over iterations as a stacked area, with the realised shares stacked the same
way as thin lines. Bottom: each domain's validation loss and their uniform mean (or, for a run with
no validation records yet, the training losses). matplotlib is imported only here, and only when a
figure is drawn: it is the optional extra `plot`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence, Union

from megatron_acodm.errors import UserError
from megatron_acodm.metrics.reader import read_metrics

_INSTALL_HINT = "pip install matplotlib (or pip install 'megatron-acodm[plot]')"


class PlotDependencyError(RuntimeError):
    """matplotlib is missing: the message says how to install it."""


def default_output_path(metrics_path: Union[str, os.PathLike]) -> str:
    """`<stem>.png` next to the metrics file."""
    stem, _ = os.path.splitext(os.fspath(metrics_path))
    return stem + ".png"


def plot_mixture(metrics_path: Union[str, os.PathLike], output_path: Optional[Union[str, os.PathLike]] = None) -> str:
    """Draw the mixture figure of `metrics_path` into a PNG (default: `<stem>.png` beside it); returns its path."""
    metrics_path = os.fspath(metrics_path)
    headers, train, valid = read_metrics(metrics_path)
    if not train:
        raise UserError(f"{metrics_path}: no training records (kind \"train\") to plot")
    output = os.fspath(output_path) if output_path is not None else default_output_path(metrics_path)
    figure = _draw(headers, train, valid)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, dpi=120)
    return output


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotDependencyError(f"plotting needs matplotlib: {_INSTALL_HINT}") from None
    return matplotlib


def _domain_names(headers: Sequence[dict], train: Sequence[dict]) -> list[str]:
    """The latest header's domains, then any others the records name, in order of appearance."""
    names = list(headers[-1].get("domains") or []) if headers else []
    for record in train:
        names.extend(name for name in record.get("domains", {}) if name not in names)
    return names


def _per_domain(records: Sequence[dict], name: str, field: str) -> list[float]:
    values = [record.get("domains", {}).get(name, {}).get(field) for record in records]
    return [math.nan if value is None else float(value) for value in values]


def _overall(records: Sequence[dict], field: str) -> list[float]:
    return [math.nan if record.get(field) is None else float(record[field]) for record in records]


def _colors(matplotlib: Any, count: int) -> list[Any]:
    """Qualitative palettes while they have enough distinct colours, then an even spread of a ramp."""
    for palette, size in (("tab10", 10), ("tab20", 20)):
        if count <= size:
            colormap = matplotlib.colormaps[palette]
            return [colormap(index) for index in range(count)]
    colormap = matplotlib.colormaps["turbo"]
    return [colormap(index / (count - 1)) for index in range(count)]


def _cumulative(rows: list[list[float]]) -> list[list[float]]:
    """Running sums over domains (missing entries count as 0), the boundaries of a stacked chart."""
    totals = [0.0] * len(rows[0])
    boundaries = []
    for row in rows:
        totals = [total + (0.0 if math.isnan(value) else value) for total, value in zip(totals, row)]
        boundaries.append(totals)
    return boundaries


def _draw_weights(axes: Any, train: Sequence[dict], names: Sequence[str], colors: Sequence[Any]) -> list[Any]:
    """The stacked weights and, where logged, the stacked realised shares; returns extra legend handles."""
    from matplotlib.lines import Line2D

    iterations = [record["iteration"] for record in train]
    weights = [[0.0 if math.isnan(w) else w for w in _per_domain(train, name, "weight")] for name in names]
    axes.stackplot(iterations, weights, colors=colors, alpha=0.85, linewidth=0)
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("domain weight")
    axes.set_title("Mixture weights (stacked)", loc="left", fontsize="medium")
    shares = [_per_domain(train, name, "share") for name in names]
    if all(math.isnan(value) for row in shares for value in row):
        return []
    for boundary in _cumulative(shares)[:-1]:  # the last boundary is the whole batch, always 1
        axes.plot(iterations, boundary, color="black", linewidth=0.8, alpha=0.7)
    return [Line2D([], [], color="black", linewidth=0.8, label="realised share (stacked)")]


_TARGET_DASHES = [(6, 2), (2, 2), (6, 2, 2, 2), (10, 3), (1, 1), (4, 1, 1, 1, 1, 1)]


def _draw_losses(
    axes: Any, train: Sequence[dict], valid: Sequence[dict], names: Sequence[str], colors: Sequence[Any]
) -> list[Any]:
    """Per-domain validation loss and its uniform mean (training loss before any evaluation), and
    each target set's held-out loss."""
    from matplotlib.lines import Line2D

    if valid:
        records, mean_field, mean_label, title = valid, "lm_loss_uniform", "uniform mean", "Validation loss per domain"
    else:
        records, mean_field, mean_label = train, "lm_loss", "lm loss (token-weighted)"
        title = "Training loss per domain (no validation records)"
    iterations = [record["iteration"] for record in records]
    marker = "o" if len(records) <= 40 else None  # few evaluations read better as points
    # The mean goes underneath, translucent, so a domain whose loss sits on it stays visible.
    axes.plot(iterations, _overall(records, mean_field), color="black", alpha=0.45, linewidth=4.0, marker=marker)
    for name, color in zip(names, colors):
        axes.plot(iterations, _per_domain(records, name, "loss"), color=color, linewidth=1.4, marker=marker, markersize=3)
    handles = [Line2D([], [], color="black", alpha=0.45, linewidth=4.0, label=mean_label)]
    # Target sets (--target-data-path): their held-out loss, dashed, one dash pattern each.
    for target, dashes in zip(records[-1].get("targets", {}) if valid else [], _TARGET_DASHES):
        losses = [record.get("targets", {}).get(target, {}).get("loss") for record in records]
        style = dict(color="black", linewidth=1.6, dashes=dashes)
        axes.plot(iterations, [math.nan if loss is None else loss for loss in losses], marker=marker, markersize=3, **style)
        handles.append(Line2D([], [], label=f"target {target} (held-out)", **style))
    axes.set_ylabel("loss")
    axes.set_xlabel("iteration")
    axes.set_title(title, loc="left", fontsize="medium")
    axes.grid(alpha=0.3)
    return handles


def _draw(headers: Sequence[dict], train: Sequence[dict], valid: Sequence[dict]) -> Any:
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # files only: no display, no global backend
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = _domain_names(headers, train)
    colors = _colors(matplotlib, len(names))
    figure = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(figure)
    weights_axes, loss_axes = figure.subplots(2, 1, sharex=True)
    legend_handles = [Patch(color=color, label=name) for name, color in zip(names, colors)]
    legend_handles += _draw_weights(weights_axes, train, names, colors)
    legend_handles += _draw_losses(loss_axes, train, valid, names, colors)

    config = (headers[-1].get("config") or {}) if headers else {}
    mixer = config.get("mixer") if isinstance(config, dict) else None
    figure.suptitle(f"Data mixture, mixer: {mixer}" if mixer else "Data mixture")
    figure.legend(
        handles=legend_handles, loc="outside right center", fontsize="small", ncols=math.ceil(len(legend_handles) / 28)
    )
    return figure

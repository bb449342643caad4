"""Figure-level wrappers: facet the axes-level plots of a study and save them as PNG and PDF.

Figures are built on :class:`matplotlib.figure.Figure` directly (not pyplot), so a report never
opens a window nor keeps figures alive. :func:`study_figures` decides which figures a study
gets: feed-forward studies the layer-wise pictures, recurrent ones the time-wise pictures, and
every study with a frontier axis the frontier and unit-fraction plots.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vgbench.report import figures as fg
from vgbench.report.build import safe_name
from vgbench.report.frames import with_runs
from vgbench.report.leaderboard import headline_value
from vgbench.report.style import SEQUENTIAL, EntryStyles, entry_styles, style

PANEL = (1.6, 1.3)      # inches per facet
MAX_COLUMNS = 4
MARGINS = {"left": 0.6, "right": 0.12, "bottom": 0.45, "top": 0.3, "wspace": 0.15,
           "hspace": 0.5}  # inches; fixed margins draw much faster than a layout engine
LEGEND_FONT = 7.0
COLORBAR = 0.75         # inches for a colour bar and its label
MAX_ENTRY_PANELS = 12
PER_ENTRY = ("grad_over_steps", "weight_trajectories")

CAPTIONS = {
    "grad_vs_layer": "‖∂L/∂h_l‖ against layer at initialisation, one line per entry, one panel per {axis}",
    "grad_heatmap": "log10 ‖∂L/∂h_l‖ over depth × layer at initialisation, one panel per entry",
    "loss_curves": "training loss with seed range; × marks a detected plateau, dashed: trivial predictor",
    "grad_over_steps": "per-layer gradient norm ‖∂L/∂W_l‖ over training{where}",
    "weight_trajectories": "sample weights minus their initial value over training{where}",
    "time_grad": "‖∂L/∂h_t‖ against time step t at initialisation (top) and end (bottom), per {axis}",
    "loss_vs_baseline": "final test loss over the trivial predictor's loss against {axis}",
    "frontier": "share of seeds reaching the target against {axis} (dotted: 2/3, the frontier)",
    "dead_saturation": "dead and saturated unit fractions at the end of training against {axis}",
}


def facets(n: int, *, ncols: int = MAX_COLUMNS, panel=PANEL, sharey=True, legend: float = 0.0,
           colorbar: bool = False):
    """A figure with ``n`` panels in rows of at most ``ncols``, and room on the right for a
    legend ``legend`` inches wide and/or a colour bar. Returns ``(fig, axes)``."""
    ncols = max(1, min(n, ncols))
    nrows = max(1, math.ceil(n / ncols))
    m = dict(MARGINS, wspace=MARGINS["wspace"] if sharey else 0.75)
    extra = legend + (COLORBAR if colorbar else 0.0)
    width = m["left"] + ncols * panel[0] + (ncols - 1) * m["wspace"] + m["right"] + extra
    height = m["bottom"] + nrows * panel[1] + (nrows - 1) * m["hspace"] + m["top"]
    fig = Figure(figsize=(width, height))
    grid = {"left": m["left"] / width, "right": (width - m["right"] - extra) / width,
            "bottom": m["bottom"] / height, "top": 1 - m["top"] / height,
            "wspace": m["wspace"] / panel[0], "hspace": m["hspace"] / panel[1]}
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, gridspec_kw=grid).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def legend_width(labels) -> float:
    """Inches a legend of ``labels`` needs at the legend font size (a generous estimate)."""
    longest = max([len(str(x)) for x in labels] + [1])
    return 0.6 + longest * LEGEND_FONT * 0.55 / 72


def figure_legend(fig: Figure, axes, styles: EntryStyles, title: str | None = None):
    """One legend in the right margin: the entries' styles, then whatever else the panels
    labelled (a baseline line, plateau markers, ...), each once."""
    pairs = list(styles.legend)
    seen = {label for _, label in pairs} | {str(e) for e in styles.colors}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_") and label not in seen:
                pairs.append((handle, label))
                seen.add(label)
    if pairs:
        right = max(ax.get_position().x1 for ax in axes)
        fig.legend([h for h, _ in pairs], [t for _, t in pairs], loc="upper left",
                   bbox_to_anchor=(right + 0.01, 0.98), title=None if styles.dashes else title,
                   fontsize=LEGEND_FONT, title_fontsize=LEGEND_FONT, borderaxespad=0.2,
                   handlelength=2.6)


def colorbar_axes(fig: Figure, axes):
    """An axes for a colour bar in the right margin, as tall as the panels."""
    right = max(ax.get_position().x1 for ax in axes)
    bottom = min(ax.get_position().y0 for ax in axes)
    top = max(ax.get_position().y1 for ax in axes)
    width = fig.get_figwidth()
    return fig.add_axes((right + 0.12 / width, bottom, 0.1 / width, top - bottom))


def save(fig: Figure, stem: Path, formats=("png", "pdf")) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        # tight: a legend taller than the panels (many entries) is kept whole, not cut off
        fig.savefig(path, format=fmt, metadata=_metadata(fmt), bbox_inches="tight",
                    pad_inches=0.05)
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict:
    # no creation date: rebuilding a report from the same records gives the same files
    return {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})


# ---------------------------------------------------------------------------- figures

def _panels(df: pd.DataFrame):
    """(title, rows) per frontier value, or one untitled panel without a frontier axis."""
    axis = df["frontier_axis"].iloc[0]
    if not isinstance(axis, str):
        return [("", df)]
    return [(f"{axis} = {fg._number_text(v)}", g) for v, g in df.groupby("frontier_value")]


def _legend_room(styles: EntryStyles, df: pd.DataFrame, extra=()) -> float:
    return legend_width([t for _, t in styles.legend] + list(extra) + [df["entry_axes"].iloc[0]])


def faceted_figure(df: pd.DataFrame, styles: EntryStyles, plot, extra_labels=(), **kwargs):
    """One panel per frontier value of ``plot(rows, ax=, colors=, dashes=, **kwargs)``."""
    panels = _panels(df)
    fig, axes = facets(len(panels), legend=_legend_room(styles, df, extra_labels))
    for ax, (title, rows) in zip(axes, panels):
        plot(rows, ax=ax, colors=styles.colors, dashes=styles.dashes, **kwargs)
        ax.set_title(title)
    outer_labels(axes)
    figure_legend(fig, axes, styles, df["entry_axes"].iloc[0])
    return fig


def time_grad_figure(time: pd.DataFrame, styles: EntryStyles) -> Figure:
    """‖∂L/∂h_t‖ against t: a column per sequence length, a row for initialisation and one
    for the end of training."""
    panels = _panels(time)
    fig, axes = facets(2 * len(panels), ncols=len(panels), panel=(1.45, 1.2),
                       legend=_legend_room(styles, time))
    for column, (title, rows) in enumerate(panels):
        for row, (point, name) in enumerate((("first", "init"), ("last", "end"))):
            ax = axes[row * len(panels) + column]
            fg.plot_time_grad(rows, ax=ax, colors=styles.colors, dashes=styles.dashes,
                              log_point=point)
            ax.set_title(f"{title}, {name}")
    outer_labels(axes)
    figure_legend(fig, axes, styles, time["entry_axes"].iloc[0])
    return fig


def grad_heatmap_figure(grad: pd.DataFrame) -> Figure:
    data = fg._at_log_point(grad, 0)
    medians = data.groupby(["entry", "frontier_value", "layer"], observed=True)["delta_norm"].median()
    with np.errstate(divide="ignore"):
        logs = np.log10(medians)
    finite = logs[np.isfinite(logs)]
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (-1, 0)
    entries = data.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    fig, axes = facets(len(entries), ncols=4, panel=(1.6, 1.2), sharey=False, colorbar=True)
    for ax, entry in zip(axes, entries):
        fg.plot_grad_heatmap(data[data["entry"] == entry], ax=ax, vmin=vmin, vmax=vmax, cbar=False)
        ax.set_title(entry)
    outer_labels(axes)
    mappable = mpl.cm.ScalarMappable(norm=Normalize(vmin, vmax), cmap=SEQUENTIAL)
    fig.colorbar(mappable, cax=colorbar_axes(fig, axes), label="log10 " + fg.GRAD_LABEL)
    return fig


def shown_entries(df: pd.DataFrame, most: int = MAX_ENTRY_PANELS) -> list:
    """The entries a one-panel-per-entry figure shows: all, or ``most`` evenly spaced in
    entry order (a figure of dozens of panels is neither readable nor quick to draw)."""
    entries = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    if len(entries) <= most:
        return entries
    return [entries[i] for i in np.unique(np.linspace(0, len(entries) - 1, most).round().astype(int))]


def per_entry_figure(grad: pd.DataFrame, plot, label: str) -> Figure:
    """One panel per entry of ``plot(rows, ax=..., colorbar=False)`` and one layer colour bar."""
    entries = shown_entries(grad)
    fig, axes = facets(len(entries), ncols=4, panel=(1.6, 1.2), colorbar=True)
    for ax, entry in zip(axes, entries):
        plot(grad[grad["entry"] == entry], ax=ax, colorbar=False)
        ax.set_title(entry)
    outer_labels(axes)
    n_layer = int(grad["layer"].max()) + 1 if len(grad) else 1
    mappable = mpl.cm.ScalarMappable(norm=Normalize(1, max(n_layer, 2)), cmap=SEQUENTIAL)
    fig.colorbar(mappable, cax=colorbar_axes(fig, axes), label=label)
    return fig


def single_figure(plot, df: pd.DataFrame, styles: EntryStyles, extra_labels=()) -> Figure:
    fig, axes = facets(1, panel=(2.2, 1.8), legend=_legend_room(styles, df, extra_labels))
    plot(df, ax=axes[0], colors=styles.colors, dashes=styles.dashes)
    figure_legend(fig, axes, styles, df["entry_axes"].iloc[0])
    return fig


def dead_saturation_figure(runs: pd.DataFrame, styles: EntryStyles) -> Figure:
    fig, axes = facets(2, panel=(1.9, 1.6), sharey=False, legend=_legend_room(styles, runs))
    for ax, value in zip(axes, ("dead_fraction_final", "saturation_final")):
        fg.plot_dead_saturation(runs, ax=ax, value=value, colors=styles.colors,
                                dashes=styles.dashes)
    figure_legend(fig, axes, styles, runs["entry_axes"].iloc[0])
    return fig


def outer_labels(axes):
    """Axis labels only on the outer panels of a facet grid."""
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is not None and not spec.is_first_col():
            ax.set_ylabel("")
        if spec is not None and not spec.is_last_row():
            ax.set_xlabel("")


# ---------------------------------------------------------------------------- one study

def study_figures(runs: pd.DataFrame, grad: pd.DataFrame, time: pd.DataFrame,
                  curves: pd.DataFrame, outdir: Path, formats=("png", "pdf")):
    """Every figure that applies to one study. Returns ``[(name, caption, [paths])]``.

    A study that runs several tasks gets each figure once per task (``time_grad_adding``,
    ``time_grad_copy``): losses and gradients of different tasks are not on one scale, and a
    seed band pooled over tasks would span both.
    """
    tasks = runs["task"].dropna().unique() if "task" in runs else []
    if len(tasks) <= 1:
        written = _figures(runs, grad, time, curves, outdir, formats)
    else:
        written = []
        for task in sorted(tasks):
            task_runs = runs[runs["task"] == task]
            ids = set(task_runs["run_id"])
            parts = [f[f["run_id"].isin(ids)] for f in (grad, time, curves)]
            suffix = f"_{safe_name(str(task))}"
            for name, caption, paths in _figures(task_runs, *parts, outdir, formats, suffix):
                written.append((name + suffix, f"{caption} ({task} task)", paths))
    remove_stale(outdir, [p for _, _, paths in written for p in paths])
    return written


def remove_stale(outdir: Path, written: list[Path]) -> list[Path]:
    """Delete the figure files of an earlier report that this one did not write again (a figure
    that no longer applies, or one now drawn per task). Only files named like a vgbench figure
    (``<figure>.<png|pdf|svg>``, ``<figure>_<task>.<...>``) are touched; returns them."""
    keep = {p.name for p in written}
    stale = [p for p in sorted(outdir.glob("*")) if p.is_file() and p.name not in keep
             and p.suffix in (".png", ".pdf", ".svg")
             and any(p.stem == n or p.stem.startswith(n + "_") for n in CAPTIONS)]
    for path in stale:
        path.unlink()
    return stale


def _figures(runs: pd.DataFrame, grad: pd.DataFrame, time: pd.DataFrame, curves: pd.DataFrame,
             outdir: Path, formats, suffix: str = ""):
    axis = runs["frontier_axis"].iloc[0]
    axis = axis if isinstance(axis, str) else None
    at = headline_value(runs)
    if math.isnan(at):  # entries ran different depths: the largest any ran
        at = runs["frontier_value"].max()
    styles = entry_styles(runs)
    grad = with_runs(grad, runs)
    curves = with_runs(curves, runs, ("entry", "entry_order", "entry_axes", "frontier_axis",
                                      "frontier_value", "plateau_step", "task_baseline"))
    time = with_runs(time, runs)
    at_rows = (lambda d: d[d["frontier_value"] == at]) if axis else (lambda d: d)
    recurrent = len(time) > 0
    plans = []
    if len(grad) and not recurrent:
        plans.append(("grad_vs_layer", lambda: faceted_figure(grad, styles, fg.plot_grad_vs_layer)))
        if axis == "depth" and grad["frontier_value"].nunique() > 1:
            plans.append(("grad_heatmap", lambda: grad_heatmap_figure(grad)))
    if len(curves):
        plans.append(("loss_curves", lambda: faceted_figure(
            curves, styles, fg.plot_loss_curves, ("trivial predictor", "plateau"))))
    if len(grad):
        plans.append(("grad_over_steps", lambda: per_entry_figure(
            at_rows(grad), fg.plot_grad_over_steps, "layer l")))
        if grad["weight_sample_0"].notna().any():
            plans.append(("weight_trajectories", lambda: per_entry_figure(
                at_rows(grad), fg.plot_weight_trajectories, "layer l")))
    if recurrent:
        plans.append(("time_grad", lambda: time_grad_figure(time, styles)))
        if axis:
            plans.append(("loss_vs_baseline", lambda: single_figure(
                fg.plot_loss_vs_baseline, runs, styles, ("trivial predictor",))))
    if axis and runs["target_value"].notna().any():
        plans.append(("frontier", lambda: single_figure(fg.plot_frontier, runs, styles,
                                                         ("2/3 of seeds",))))
    if axis:
        plans.append(("dead_saturation", lambda: dead_saturation_figure(runs, styles)))
    n_entries = runs["entry"].nunique()
    written = []
    with style():
        for name, build in plans:
            paths = save(build(), outdir / f"{name}{suffix}", formats)
            where = f", at {axis} {fg._number_text(at)}" if axis and not math.isnan(at) else ""
            if name in PER_ENTRY and n_entries > MAX_ENTRY_PANELS:
                where += f" ({MAX_ENTRY_PANELS} of {n_entries} entries, evenly spaced)"
            caption = CAPTIONS[name].format(axis=axis or "run", where=where)
            written.append((name, caption, paths))
    return written

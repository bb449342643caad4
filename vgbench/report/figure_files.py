"""Figure-level wrappers: facet the axes-level plots of a study and save them as PNG and PDF.

Figures are built on :class:`matplotlib.figure.Figure` directly (not pyplot), so a report never
opens a window nor keeps figures alive. :func:`study_figures` decides which figures a study
gets: each figure kind of :data:`vgbench.report.figure_kinds.KINDS` whose study shape the
study has. The theory study's figures are laid out in :mod:`vgbench.report.theory_figures`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vgbench.report import figures as fg
from vgbench.report.captions import CAPTIONS
from vgbench.report.figure_kinds import (  # noqa: F401  (figure kinds: re-exported)
    KINDS,
    MIN_HEATMAP_ROWS,
    Kind,
    Shape,
    skip_reason,
    study_shape,
    unit_fractions,
)
from vgbench.report.frames import with_runs
from vgbench.report.index import safe_name
from vgbench.report.leaderboard import headline_value
from vgbench.report.style import SEQUENTIAL, EntryStyles, entry_styles, split_styles, style

PANEL = (1.6, 1.3)      # inches per facet
MAX_COLUMNS = 4
MARGINS = {"left": 0.6, "right": 0.12, "bottom": 0.45, "top": 0.3, "wspace": 0.15,
           "hspace": 0.5}  # inches; fixed margins draw much faster than a layout engine
LEGEND_FONT = 7.0
TITLE_LINE = 0.15       # inches per extra line of a wrapped panel title
COLORBAR = 0.75         # inches for a colour bar and its label
MAX_ENTRY_PANELS = 16
PER_ENTRY = ("grad_over_steps", "weight_trajectories")
MIN_DPI, MIN_PIXELS, MAX_DPI = 200, 1200, 600   # PNG resolution (:func:`png_dpi`)
MAX_LINES = 8          # lines per panel; more entries are split into rows of panels
OWN_SCALE_DECADES = 3  # a panel whose data would fill less than the shared y range by this much
                       # (in decades) gets its own scale


def facets(n: int, *, ncols: int = MAX_COLUMNS, panel=PANEL, sharey=True, legend: float = 0.0,
           colorbar: bool = False, title_lines: int = 1):
    """A figure with ``n`` panels in rows of at most ``ncols``, and room on the right for a
    legend ``legend`` inches wide and/or a colour bar, and above each panel for a title of
    ``title_lines`` lines. Returns ``(fig, axes)``."""
    ncols = max(1, min(n, ncols))
    nrows = max(1, math.ceil(n / ncols))
    extra_title = TITLE_LINE * (max(title_lines, 1) - 1)
    m = dict(MARGINS, wspace=MARGINS["wspace"] if sharey else 0.75,
             top=MARGINS["top"] + extra_title, hspace=MARGINS["hspace"] + extra_title)
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


def wrap_label(text: str, width_in: float, fontsize: float | None = None) -> str:
    """``text`` broken into lines that fit ``width_in`` inches, at its `` / `` separators
    (an entry label) or else at spaces; a part longer than a line stays whole."""
    size = fontsize or fg.title_points()
    room = max(8, int(width_in * 72 / (size * 0.6)))
    sep = " / " if " / " in text else " "
    lines, line = [], ""
    for part in text.split(sep):
        joined = f"{line}{sep}{part}" if line else part
        if line and len(joined) > room:
            lines.append(line + sep.rstrip())
            line = part
        else:
            line = joined
    return "\n".join(lines + [line])


def legend_width(labels) -> float:
    """Inches a legend of ``labels`` needs at the legend font size (a generous estimate)."""
    longest = max([len(str(x)) for x in labels] + [1])
    return 0.6 + longest * LEGEND_FONT * 0.55 / 72


MARKS = {   # bottom- and top-edge marks of the panels, explained once in a figure's legend
    "_underflow": ("v", "0.3", "0.3", "underflow: below float32, a vanished signal"),
    "_exact zero": ("o", "none", "0.3", "exactly 0: no gradient path (a zero gain, dead units)"),
    "_off scale": ("^", "0.3", "0.3", "leaves the axis (a run that blew up)"),
}


def drawn_labels(axes) -> set:
    """The labels of the lines the panels drew: two finite points, or one with a marker."""
    drawn = set()
    for ax in axes:
        for line in ax.get_lines():
            xy = np.column_stack(line.get_data()).astype(float) if len(line.get_xdata()) else []
            finite = int(np.isfinite(xy).all(axis=1).sum()) if len(xy) else 0
            if finite >= 2 or (finite == 1 and line.get_marker() not in (None, "", "None", " ")):
                drawn.add(line.get_label())
    return drawn


def figure_legend(fig: Figure, axes, styles: EntryStyles, title: str | None = None,
                  notes=()):
    """One legend in the right margin: the styles of the entries some panel drew (an entry
    no panel drew is left out, or named in ``notes`` with the reason), then whatever else
    the panels labelled (a baseline line, plateau markers, ...) and the edge marks they use
    (:data:`MARKS`), each once."""
    drawn = drawn_labels(axes)
    pairs = styles.shown(drawn & set(map(str, styles.colors)))
    seen = {label for _, label in styles.legend} | {str(e) for e in styles.colors}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_") and label not in seen:
                pairs.append((handle, label))
                seen.add(label)
    used = {c.get_label() for ax in axes for c in ax.collections}
    for key, (marker, face, edge, text) in MARKS.items():
        if key in used:
            pairs.append((Line2D([], [], marker=marker, markerfacecolor=face,
                                 markeredgecolor=edge, linestyle="none", markersize=4), text))
    blank = Line2D([], [], linestyle="none")
    pairs += [(blank, note) for note in notes]
    if pairs:
        right = max(ax.get_position().x1 for ax in axes)
        heading = styles.title or (None if styles.dashes else title)
        fig.legend([h for h, _ in pairs], [t for _, t in pairs], loc="upper left",
                   bbox_to_anchor=(right + 0.01, 0.98), title=heading,
                   fontsize=LEGEND_FONT, title_fontsize=LEGEND_FONT, borderaxespad=0.2,
                   handlelength=2.6)
        fit_legends(fig)


def fit_legends(fig: Figure, pad: float = 0.05):
    """Size ``fig`` to its legends: its right edge ``pad`` inches beyond the widest, and its
    bottom ``pad`` below the lowest where a legend is taller than the panels (many entries).

    The panels keep their size and their distance from the top left corner, in inches.
    Measuring the legends' text once is much quicker than saving with a tight bounding box,
    which draws the whole figure one more time per file. Figures with a layout engine, which
    places legends itself, are left alone.
    """
    if not fig.legends or fig.get_layout_engine() is not None:
        return
    renderer = FigureCanvasAgg(fig).get_renderer()
    inches = fig.dpi_scale_trans.inverted()
    boxes = [legend.get_window_extent(renderer).transformed(inches) for legend in fig.legends]
    width, height = fig.get_size_inches()
    panels = max(ax.get_position().x1 for ax in fig.axes) * width if fig.axes else 0.0
    new_width = max(max(box.x1 for box in boxes) + pad, panels + MARGINS["right"])
    new_height = height + max(0.0, pad - min(box.y0 for box in boxes))
    anchors = [legend.get_bbox_to_anchor().transformed(inches) for legend in fig.legends]
    placed = [(ax, ax.get_position(original=True)) for ax in fig.axes]
    fig.set_size_inches(new_width, new_height)

    def moved(x, y):   # figure fractions of a point kept in inches from the top left
        return x * width / new_width, 1 - (1 - y) * height / new_height

    for ax, box in placed:
        x0, y1 = moved(box.x0, box.y1)
        w, h = box.width * width / new_width, box.height * height / new_height
        ax.set_position((x0, y1 - h, w, h))
    for legend, anchor in zip(fig.legends, anchors):
        legend.set_bbox_to_anchor(moved(anchor.x0 / width, anchor.y0 / height))


def colorbar_axes(fig: Figure, axes):
    """An axes for a colour bar in the right margin, as tall as the panels."""
    right = max(ax.get_position().x1 for ax in axes)
    bottom = min(ax.get_position().y0 for ax in axes)
    top = max(ax.get_position().y1 for ax in axes)
    width = fig.get_figwidth()
    return fig.add_axes((right + 0.12 / width, bottom, 0.1 / width, top - bottom))


def save(fig: Figure, stem: Path, formats=("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format, as laid out: the fixed margins hold
    the panels' labels and :func:`fit_legends` sized the figure to its legend (no tight
    bounding box, which would draw every figure once more)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.label.get_text():
                # no label to place beside the tick labels: matplotlib would still lay out
                # and measure them again, at every draw, to find where it goes
                axis.set_label_coords(0, 0)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, metadata=_metadata(fmt), dpi=png_dpi(fig))
        paths.append(path)
    return paths


def png_dpi(fig: Figure) -> float:
    """The resolution of a figure's PNG: at least :data:`MIN_DPI`, and enough that the image
    is :data:`MIN_PIXELS` wide (a figure meant for a full page width, or a slide)."""
    return float(min(MAX_DPI, max(MIN_DPI, math.ceil(MIN_PIXELS / fig.get_figwidth()))))


def _metadata(fmt: str) -> dict:
    # no creation date: rebuilding a report from the same records gives the same files
    return {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})


# ---------------------------------------------------------------------------- figures

def _panels(df: pd.DataFrame):
    """(title, rows) per frontier value, or one panel titled "all runs" without a frontier
    axis."""
    axis = df["frontier_axis"].iloc[0]
    if not isinstance(axis, str):
        return [("all runs", df)]
    return [(f"{axis} = {fg._number_text(v)}", g) for v, g in df.groupby("frontier_value")]


def _legend_room(styles: EntryStyles, df: pd.DataFrame, extra=()) -> float:
    return legend_width([t for _, t in styles.legend] + list(extra) + [df["entry_axes"].iloc[0]]
                        + [text for *_, text in MARKS.values()])


def entry_parts(df: pd.DataFrame, runs: pd.DataFrame | None = None) -> tuple[list, dict]:
    """``(axes, entry -> its value of each axis)``: from the axis columns of ``runs`` where it
    has them (a value may itself hold " / ", as ``activation_init`` does), else from the
    entry labels."""
    axes = [a for a in str(df["entry_axes"].iloc[0]).split(" / ") if a]
    entries = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    source = runs if runs is not None and all(a in runs for a in axes) else None
    if source is not None:
        first = source.drop_duplicates("entry").set_index("entry")
        parts = {e: [str(first.at[e, a]) for a in axes] for e in entries if e in first.index}
        if len(parts) == len(entries):
            return axes, parts
    return axes, {e: str(e).split(" / ") for e in entries}


def row_split(df: pd.DataFrame, runs: pd.DataFrame | None = None, most: int = MAX_LINES):
    """Where a panel would draw more than ``most`` entries: ``(row axes, colour axes)``, the
    indices of the entry axes whose values make rows of panels (the fewest rows that leave
    at most ``most`` lines a panel) and the fewest of the others that still tell apart the
    lines of every panel (an axis a panel already fixes, such as an architecture that sets
    the depth, or an init that follows from the activation, adds no colour). None where every
    panel has few enough lines or the entries cannot be split."""
    axes, parts = entry_parts(df, runs)
    if len(axes) < 2 or any(len(p) != len(axes) for p in parts.values()):
        return None
    columns = [g["entry"].unique() for _, g in df.groupby("frontier_value")] \
        if df["frontier_value"].notna().any() else [np.asarray(list(parts))]
    if max(len(c) for c in columns) <= most:
        return None

    def key(entry, index):
        return tuple(parts[entry][i] for i in index)

    fits = []
    for size in range(1, len(axes)):
        for index in itertools.combinations(range(len(axes)), size):
            keys = [[key(e, index) for e in c] for c in columns]
            lines = max(max(pd.Series(k).value_counts()) for k in keys)
            if lines <= most:
                fits.append((len({k for ks in keys for k in ks}), size, index))
    if not fits:
        return None
    rows = min(fits)[2]
    rest = [i for i in range(len(axes)) if i not in rows]
    panels = [[e for e in c if key(e, rows) == r] for c in columns
              for r in {key(e, rows) for e in c}]
    best = None
    for size in range(1, len(rest) + 1):
        for colour in itertools.combinations(rest, size):
            if all(len({key(e, colour) for e in p}) == len(p) for p in panels):
                n = len({key(e, colour) for e in parts})
                best = min(best or (n, colour), (n, colour))
        if best is not None:
            break
    return rows, best[1] if best else tuple(rest)


def own_scales(panels, value: str) -> bool:
    """Whether panels need their own y scales: some panel's positive ``value`` spans at least
    :data:`OWN_SCALE_DECADES` fewer decades than all the panels together (on one shared axis
    it would be a flat line)."""
    spans = []
    for _, rows in panels:
        values = rows[value].to_numpy(float) if value in rows else np.array([])
        values = values[np.isfinite(values) & (values > 0)]
        if len(values):
            spans.append((np.log10(values.min()), np.log10(values.max())))
    if len(spans) < 2:
        return False
    low, high = min(s[0] for s in spans), max(s[1] for s in spans)
    return any((high - low) - (b - a) >= OWN_SCALE_DECADES for a, b in spans)


def faceted_figure(df: pd.DataFrame, styles: EntryStyles, plot, extra_labels=(), *,
                   runs: pd.DataFrame | None = None, value: str | None = None, **kwargs):
    """One panel per frontier value of ``plot(rows, ax=, colors=, dashes=, **kwargs)``; where
    a panel would hold more than :data:`MAX_LINES` entries, one row of panels per value of
    some entry axes (:func:`row_split`), coloured by the others. Panels get their own y
    scale where magnitudes differ by orders (:func:`own_scales`, on ``value``)."""
    panels = _panels(df)
    ncols = min(len(panels), MAX_COLUMNS)
    split = row_split(df, runs)
    if split is not None:
        rows_index, colour_index = split
        entries = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
        axes_names, by_entry = entry_parts(df, runs)
        parts = [by_entry[e] for e in entries]
        styles = split_styles(entries, parts, colour_index, axes_names)
        key = {e: " / ".join(p[i] for i in rows_index) for e, p in zip(entries, parts)}
        row_keys = list(dict.fromkeys(key[e] for e in entries))
        panels = [(f"{row}, {title}", rows[rows["entry"].map(key) == row])
                  for row in row_keys for title, rows in panels]
        ncols = len(_panels(df))
    sharey = not (value and own_scales(panels, value))
    titles = [_two_part_title(t) for t, _ in panels]
    fig, axes = facets(len(panels), ncols=ncols, sharey=sharey,
                       legend=_legend_room(styles, df, extra_labels),
                       title_lines=max(t.count("\n") + 1 for t in titles))
    for ax, (_, rows), title in zip(axes, panels, titles):
        plot(rows, ax=ax, colors=styles.colors, dashes=styles.dashes, **kwargs)
        ax.set_title(title)
        if not fg.has_data(ax):
            fg.note_empty(ax, "no seed logged here",
                          keep_y=sharey and ax.get_subplotspec().is_first_col())
    outer_labels(axes)
    figure_legend(fig, axes, styles, df["entry_axes"].iloc[0],
                  notes=not_drawn(axes, styles, runs))
    return fig


def _two_part_title(title: str) -> str:
    """A row's and a column's title on one line where they fit a panel, else on two."""
    room = int(PANEL[0] * 1.15 * 72 / (fg.title_points() * 0.6))
    if len(title) <= room or ", " not in title:
        return title
    row, column = title.rsplit(", ", 1)
    return f"{row}\n{column}"


def not_drawn(axes, styles: EntryStyles, runs: pd.DataFrame | None) -> list[str]:
    """A line for each entry of ``styles`` that no panel drew, saying why (from ``runs``)."""
    drawn = drawn_labels(axes)
    missing = [e for e in styles.colors if str(e) not in drawn]
    if not missing:
        return []
    return [f"{e}: not drawn, " + why_empty(runs if runs is not None else pd.DataFrame(
        columns=["entry", "status"]), e).replace(",\nnothing logged after", "").replace(
        ";\n", "; ") for e in missing]


def time_grad_figure(time: pd.DataFrame, styles: EntryStyles) -> Figure:
    """‖∂L/∂h_t‖ against t: a column per sequence length, a row for initialisation and one
    for the end of training."""
    panels = _panels(time)
    sharey = not own_scales(panels, "time_delta_norm")
    fig, axes = facets(2 * len(panels), ncols=len(panels), panel=(1.45, 1.2), sharey=sharey,
                       legend=_legend_room(styles, time))
    for column, (title, rows) in enumerate(panels):
        for row, (point, name) in enumerate((("first", "at initialisation"),
                                             ("last", "end of training"))):
            ax = axes[row * len(panels) + column]
            fg.plot_time_grad(rows, ax=ax, colors=styles.colors, dashes=styles.dashes,
                              log_point=point)
            ax.set_title(name if title == "all runs" else f"{title}, {name}")
            if not fg.has_data(ax):
                fg.note_empty(ax, "no seed logged here",
                              keep_y=sharey and ax.get_subplotspec().is_first_col())
    outer_labels(axes)
    figure_legend(fig, axes, styles, time["entry_axes"].iloc[0])
    return fig


def grad_heatmap_figure(grad: pd.DataFrame) -> Figure:
    """log10 ‖∂L/∂h_l‖ over depth × layer, a panel per entry, on one colour scale whose limits
    one outlying entry cannot set (:func:`~vgbench.report.figures.robust_limits`); values
    beyond them are drawn in the colour map's under and over colours."""
    data = fg._at_log_point(grad, 0)
    logs = fg.log10_centre(data, ["entry", "frontier_value", "layer"], "delta_norm")
    vmin, vmax = fg.robust_limits([g.to_numpy() for _, g in logs.groupby(level="entry",
                                                                          observed=True)])
    entries = data.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    width = 1.6
    titles = [wrap_label(str(e), width) for e in entries]
    fig, axes = facets(len(entries), ncols=4, panel=(width, 1.2), sharey=False, colorbar=True,
                       title_lines=max(t.count("\n") + 1 for t in titles))
    for ax, entry, title in zip(axes, entries, titles):
        fg.plot_grad_heatmap(data[data["entry"] == entry], ax=ax, vmin=vmin, vmax=vmax, cbar=False)
        ax.set_title(title)
    outer_labels(axes)
    mappable = mpl.cm.ScalarMappable(norm=Normalize(vmin, vmax), cmap=fg.HEATMAP_CMAP)
    fig.colorbar(mappable, cax=colorbar_axes(fig, axes), label="log10 " + fg.GRAD_LABEL,
                 extend=_extend(logs, vmin, vmax))
    return fig


def _extend(values: pd.Series, vmin: float, vmax: float) -> str:
    """The colour bar's ``extend``: which ends have clipped values beyond them."""
    below = bool((values < vmin).any())       # -inf (underflow) included
    above = bool((values > vmax).any())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither")


def shown_entries(df: pd.DataFrame, most: int = MAX_ENTRY_PANELS) -> list:
    """The entries a one-panel-per-entry figure shows: all, or ``most`` evenly spaced in
    entry order (a figure of dozens of panels is neither readable nor quick to draw)."""
    entries = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    if len(entries) <= most:
        return entries
    return [entries[i] for i in np.unique(np.linspace(0, len(entries) - 1, most).round().astype(int))]


def why_empty(runs: pd.DataFrame, entry, where: str = "") -> str:
    """Why an entry has nothing to draw, from its rows of ``runs`` (status, diverged_at_step,
    error): "all 3 seeds diverged (steps 5-9)", "2 seeds failed", "not run at depth 56"."""
    rows = runs[runs["entry"] == entry] if len(runs) else runs
    if not len(rows):
        return f"not run{where}"
    counts = rows["status"].value_counts()
    parts = []
    if counts.get("diverged", 0):
        steps = rows.loc[rows["status"] == "diverged", "diverged_at_step"].dropna()
        span = ""
        if len(steps):
            low, high = int(steps.min()), int(steps.max())
            span = f" at step {low}" if low == high else f" at steps {low}–{high}"
        n = int(counts["diverged"])
        parts.append(f"{'all ' if n == len(rows) and n > 1 else ''}{n} seed{'s' * (n > 1)} "
                     f"diverged{span}")
    if counts.get("failed", 0):
        n = int(counts["failed"])
        parts.append(f"{n} seed{'s' * (n > 1)} failed")
    return ";\n".join(parts) + ",\nnothing logged after" if parts else "nothing logged"


def per_entry_figure(grad: pd.DataFrame, plot, label: str, runs: pd.DataFrame | None = None,
                     where: str = "") -> Figure:
    """One panel per entry of ``plot(rows, ax=..., colorbar=False)`` and one layer colour bar.

    Titles are the entry labels, wrapped to the panel's width; a panel with nothing to draw
    says why (from ``runs``: diverged, failed, not run ``where``)."""
    entries = shown_entries(runs if runs is not None and len(runs) else grad)
    width = 1.6
    titles = [wrap_label(str(e), width) for e in entries]
    fig, axes = facets(len(entries), ncols=4, panel=(width, 1.2), colorbar=True,
                       title_lines=max([t.count("\n") + 1 for t in titles] + [1]))
    for ax, entry, title in zip(axes, entries, titles):
        plot(grad[grad["entry"] == entry], ax=ax, colorbar=False)
        ax.set_title(title)
        if not fg.has_data(ax):   # the first column keeps the y scale its row shares
            fg.note_empty(ax, why_empty(runs if runs is not None else grad.iloc[:0], entry, where),
                          keep_y=ax.get_subplotspec().is_first_col())
    outer_labels(axes)
    n_layer = int(grad["layer"].max()) + 1 if len(grad) else 1
    if n_layer <= fg.CATEGORICAL_LAYERS:   # a few named layers: a legend, not a colour scale
        handles = {}
        for ax in axes:
            handles.update({t: h for h, t in zip(*ax.get_legend_handles_labels())
                            if not t.startswith("_")})
        right = max(ax.get_position().x1 for ax in axes)
        fig.legend(list(handles.values()), list(handles), loc="upper left",
                   bbox_to_anchor=(right + 0.01, 0.98), fontsize=LEGEND_FONT, borderaxespad=0.2)
        fit_legends(fig)
        return fig
    mappable = mpl.cm.ScalarMappable(norm=Normalize(1, max(n_layer, 2)), cmap=SEQUENTIAL)
    fig.colorbar(mappable, cax=colorbar_axes(fig, axes), label=label)
    return fig


def single_figure(plot, df: pd.DataFrame, styles: EntryStyles, extra_labels=()) -> Figure:
    """One panel of ``plot`` over every entry, titled by its task."""
    fig, axes = facets(1, panel=(2.2, 1.8), legend=_legend_room(styles, df, extra_labels))
    plot(df, ax=axes[0], colors=styles.colors, dashes=styles.dashes)
    axes[0].set_title(f"task: {df['task'].iloc[0]}" if "task" in df else "all runs")
    figure_legend(fig, axes, styles, df["entry_axes"].iloc[0], notes=not_drawn(axes, styles, df))
    return fig


UNIT_TITLES = {"dead_fraction_final": "dead: output 0 on every example",
               "inactive_fraction_final": "inactive: rectifier off",
               "tail_saturation_final": "tail-saturated: sigmoid/tanh flat",
               "saturation_final": "flat: φ′ < 1 % of its max"}


def dead_saturation_figure(runs: pd.DataFrame, styles: EntryStyles) -> Figure:
    values = unit_fractions(runs)
    width = 1.9
    titles = [wrap_label(UNIT_TITLES[v], width, LEGEND_FONT + 0.5) for v in values]
    fig, axes = facets(len(values), panel=(width, 1.6), sharey=False,
                       legend=_legend_room(styles, runs),
                       title_lines=max(t.count("\n") + 1 for t in titles))
    for ax, value, title in zip(axes, values, titles):
        fg.plot_dead_saturation(runs, ax=ax, value=value, colors=styles.colors,
                                dashes=styles.dashes)
        ax.set_title(title)
        ax.set_ylabel("fraction of units" if ax is axes[0] else "")
        if not fg.has_data(ax):
            fg.note_empty(ax, "not in these records" if value not in runs else "no seed finished")
    figure_legend(fig, axes, styles, runs["entry_axes"].iloc[0])
    return fig


def outer_labels(axes, shared: bool = True):
    """Axis labels only on the outer panels of a facet grid (y labels on every panel where
    the panels have their own y scales, ``shared`` False)."""
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is not None and not spec.is_first_col() and shared:
            ax.set_ylabel("")
        if spec is not None and not spec.is_last_row():
            ax.set_xlabel("")


# ---------------------------------------------------------------------------- one study

def study_figures(runs: pd.DataFrame, grad: pd.DataFrame, time: pd.DataFrame,
                  curves: pd.DataFrame, outdir: Path, formats=("png", "pdf"),
                  skipped: list | None = None):
    """Every figure that applies to one study. Returns ``[(name, caption, [paths])]``; the
    kinds that do not apply (:data:`KINDS`, :func:`skip_reason`) are appended to ``skipped``
    as ``(name, reason)`` where a list is given.

    A study that runs several tasks gets each figure once per task (``time_grad_adding``,
    ``time_grad_copy``): losses and gradients of different tasks are not on one scale, and a
    seed band pooled over tasks would span both.
    """
    tasks = runs["task"].dropna().unique() if "task" in runs else []
    skipped = skipped if skipped is not None else []
    if len(tasks) <= 1:
        written = _figures(runs, grad, time, curves, outdir, formats, skipped=skipped)
    else:
        written = []
        for task in sorted(tasks):
            task_runs = runs[runs["task"] == task]
            ids = set(task_runs["run_id"])
            parts = [f[f["run_id"].isin(ids)] for f in (grad, time, curves)]
            suffix = f"_{safe_name(str(task))}"
            found = []
            for name, caption, paths in _figures(task_runs, *parts, outdir, formats, suffix,
                                                 skipped=found):
                written.append((name + suffix, f"{caption} ({task} task)", paths))
            skipped += [(name + suffix, f"{reason} ({task} task)") for name, reason in found]
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
             outdir: Path, formats, suffix: str = "", skipped: list | None = None):
    shape = study_shape(runs, grad, time, curves)
    axis = shape.axis
    at = headline_value(runs)
    if math.isnan(at):  # entries ran different depths: the largest any ran
        at = runs["frontier_value"].max()
    styles = entry_styles(runs)
    grad = with_runs(grad, runs)
    curves = with_runs(curves, runs, ("entry", "entry_order", "entry_axes", "frontier_axis",
                                      "frontier_value", "plateau_step", "task_baseline", "ok"))
    time = with_runs(time, runs)
    at_rows = (lambda d: d[d["frontier_value"] == at]) if axis and shape.per_entry > 1 else \
        (lambda d: d)
    where = f" at {axis} {fg._number_text(at)}" if axis and shape.per_entry > 1 \
        and not math.isnan(at) else ""
    builders = {
        "grad_vs_layer": lambda: faceted_figure(grad, styles, fg.plot_grad_vs_layer, runs=runs,
                                                value="delta_norm"),
        "grad_heatmap": lambda: grad_heatmap_figure(grad),
        "loss_curves": lambda: faceted_figure(curves, styles, fg.plot_loss_curves,
                                              ("trivial predictor", "plateau"), runs=runs,
                                              value="loss"),
        "grad_over_steps": lambda: per_entry_figure(at_rows(grad), fg.plot_grad_over_steps,
                                                    "layer l", at_rows(runs), where),
        "weight_trajectories": lambda: per_entry_figure(
            at_rows(grad), fg.plot_weight_trajectories, "layer l", at_rows(runs), where),
        "time_grad": lambda: time_grad_figure(time, styles),
        "loss_vs_baseline": lambda: single_figure(fg.plot_loss_vs_baseline, runs, styles,
                                                  ("trivial predictor",)),
        "frontier": lambda: single_figure(fg.plot_frontier, runs, styles, ("2/3 of seeds",)),
        "dead_saturation": lambda: dead_saturation_figure(runs, styles),
        "outcomes": lambda: outcomes_figure(runs),
    }
    plans = []
    for name in KINDS:
        reason = skip_reason(name, shape)
        if reason is None:
            plans.append((name, builders[name]))
        elif skipped is not None:
            skipped.append((name, reason))
    n_entries = runs["entry"].nunique()
    written = []
    with style():
        for name, build in plans:
            paths = save(build(), outdir / f"{name}{suffix}", formats)
            shown = "," + where if where else ""
            if name in PER_ENTRY and n_entries > MAX_ENTRY_PANELS:
                shown += f" ({MAX_ENTRY_PANELS} of {n_entries} entries, evenly spaced)"
            caption = CAPTIONS[name].format(axis=axis or "run", where=shown)
            if name in PER_ENTRY or name == "grad_heatmap":   # the panel titles' order
                caption += f"; panels: {runs['entry_axes'].iloc[0]}"
            caption += f"; {fg.CENTRE_TEXT}"
            written.append((name, caption, paths))
    return written


def outcomes_figure(runs: pd.DataFrame) -> Figure:
    """The outcome of each entry as a dot with the seeds' range, an entry per row, in the
    leaderboard's order of frontier value and entry: the final test metric and the unit
    fractions of the hidden layers (:func:`~vgbench.report.figures.plot_outcomes`). The figure
    for studies whose entries each ran one setting, where a line against the swept axis would
    be one point."""
    runs = runs.sort_values(["frontier_value", "entry_order"])
    metric = "final_" + str(runs["target_metric"].iloc[0])
    values = [metric] + [v for v in unit_fractions(runs) if v in runs and runs[v].notna().any()]
    entries = runs.drop_duplicates("entry")
    width = 1.5
    labels_in = 0.06 * max(len(str(e)) for e in entries["entry"])
    lost = 0.45   # inches right of the last panel for "k/n lost"
    fig = Figure(figsize=(labels_in + 0.3 + len(values) * (width + 0.15) + lost,
                          0.75 + 0.16 * len(entries)))
    left = (labels_in + 0.15) / fig.get_figwidth()
    grid = {"left": left, "right": 1 - lost / fig.get_figwidth(), "bottom": 0.45 / fig.get_figheight(),
            "top": 1 - 0.3 / fig.get_figheight(), "wspace": 0.12}
    axes = fig.subplots(1, len(values), sharey=True, gridspec_kw=grid).ravel()
    for ax, value in zip(axes, values):
        fg.plot_outcomes(runs, ax=ax, value=value, lost_counts=ax is axes[-1],
                         group_labels=ax is axes[0])
        ax.set_title(UNIT_TITLES.get(value, value.removeprefix("final_").replace("_", " ")),
                     fontsize=fg.title_points())
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    return fig



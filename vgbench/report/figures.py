"""Axes-level figure functions over tidy frames, in seaborn's shape: ``plot_x(df, *, ax=None)``.

Each draws on ``ax`` (the current axes if None) and returns it. Lines are the mean over seeds
(:data:`CENTRE_TEXT`: the statistic the tables report, so a figure and a table read the same
number) and bands the range over seeds (min to max: with three to five seeds a range hides less
than an interval would claim). Colours come from seaborn's colour-blind palette in entry order, so
an entry looks the same in every figure of a study; a study with more than ten entries is
drawn with colour for one axis and dashes for the others
(:func:`vgbench.report.style.entry_styles`). Inputs are
the frames of :mod:`vgbench.report.frames`, joined with the run columns they need
(:func:`~vgbench.report.frames.with_runs` adds ``entry``, ``frontier_value``, ...); those of
the mean-field theory section are the frames of :mod:`vgbench.report.theory`.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import Normalize

from vgbench import diagnostics, theory
from vgbench.diagnostics import GRAD_LABEL, TIME_GRAD_LABEL
from vgbench.report.style import SEQUENTIAL, palette

WEIGHT_CHANGE_LABEL = "‖w − w₀‖ / ‖w₀‖"
# what every line of these figures is, said once in each caption (vgbench.report.captions)
CENTRE_TEXT = ("lines: mean over seeds (metrics, losses and fractions: over the seeds that "
               "finished, as in the tables; gradient norms: geometric mean, as the tables "
               "average log10 a); bands: the seeds' range")
FRONTIER_SHARE = 2 / 3
# the heatmap's colour map: grey below its scale (vanished further), red above (exploding)
HEATMAP_CMAP = mpl.colormaps[SEQUENTIAL].with_extremes(under="#b0b0b0", over="#d7301f")


def plot_grad_vs_layer(df: pd.DataFrame, *, ax=None, value: str = "delta_norm", hue: str = "entry",
                       log_point: int | str = 0, colors: dict | None = None,
                       dashes: dict | None = None):
    """‖∂L/∂h_l‖ against layer l (log scale), one line per ``hue``: the vanishing-gradient picture.

    ``df``: rows of ``grad_stats`` (with ``hue``), typically of one depth. ``log_point``: an
    index, ``"first"`` or ``"last"``. Lines: the geometric mean over seeds; band: their range.
    A layer where a seed's signal underflowed to zero is marked with a triangle (▼) on the
    bottom edge, one whose signal is exactly zero with no small neighbour (a zero-initialised
    gain: no gradient reaches it) with a circle (○): :func:`zero_kinds`.
    """
    ax = ax if ax is not None else plt.gca()
    data = _at_log_point(df, log_point)
    _centre_lines(ax, data, x="layer", value=value, hue=hue, colors=colors or palette(df, hue),
                  dashes=dashes, offset=1, log_y=True, geometric=True, underflow="delta_underflow",
                  marker="o" if data["layer"].nunique() <= 12 else None)
    _log_y(ax)
    ax.xaxis.set_major_locator(InView(nbins=4, integer=True))
    ax.set(xlabel="layer l (input → output)",
           ylabel=diagnostics.label(value))
    return ax


def plot_time_grad(df: pd.DataFrame, *, ax=None, value: str = "time_delta_norm", hue: str = "entry",
                   log_point: int | str = 0, colors: dict | None = None,
                   dashes: dict | None = None, linestyle: str = "-"):
    """‖∂L/∂h_t‖ against time step t (log scale), one line per ``hue`` (e.g. per cell).

    ``df``: rows of ``time_stats``, typically of one sequence length.
    """
    ax = ax if ax is not None else plt.gca()
    data = _at_log_point(df, log_point)
    _centre_lines(ax, data, x="t", value=value, hue=hue, colors=colors or palette(df, hue),
                  dashes=dashes, offset=1, linestyle=linestyle, log_y=True, geometric=True,
                  underflow="time_delta_underflow")
    _log_y(ax)
    ax.xaxis.set_major_locator(InView(nbins=4, integer=True))
    ax.set(xlabel="time step t", ylabel=TIME_GRAD_LABEL)
    return ax


def plot_grad_heatmap(df: pd.DataFrame, *, ax=None, value: str = "delta_norm",
                      log_point: int | str = 0, vmin=None, vmax=None, cbar: bool = True):
    """log10 ‖∂L/∂h_l‖ over depth (rows) x layer (columns), mean of log10 over seeds; one entry,
    drawn as an image with a pixel per cell.

    Cells beyond a network's depth are blank. Cells below ``vmin`` (a signal that underflowed
    to zero among them) are drawn in the colour map's ``under`` colour, cells above ``vmax``
    in its ``over`` colour (:data:`HEATMAP_CMAP`: grey and red), so a clipped value is never
    mistaken for one at the end of the scale.
    """
    ax = ax if ax is not None else plt.gca()
    data = _at_log_point(df, log_point)
    per_cell = log10_centre(data, ["frontier_value", "layer"], value)
    matrix = per_cell.unstack("layer")
    if len(matrix.columns):   # every layer a column: an image's cells are evenly spaced
        matrix = matrix.reindex(columns=range(int(matrix.columns.max()) + 1))
    values = matrix.to_numpy(float)
    finite = values[np.isfinite(values)]
    low = vmin if vmin is not None else (finite.min() if finite.size else -1.0)
    values = np.where(np.isneginf(values), low - 1.0, values)   # underflow: below the scale
    image = None
    if values.size:
        # one pixel per cell, row 0 (the shallowest network) at the top; a PDF embeds it as
        # it is, where a rasterized mesh cost a figure-sized raster per panel
        image = ax.imshow(np.ma.masked_invalid(values), cmap=HEATMAP_CMAP, vmin=low, vmax=vmax,
                          aspect="auto", interpolation="nearest", origin="upper",
                          extent=(0.5, values.shape[1] + 0.5, len(matrix), 0))
    ax.set_yticks(np.arange(len(matrix)) + 0.5, [_number_text(v) for v in matrix.index])
    ax.xaxis.set_major_locator(InView(nbins=5, integer=True))
    ax.set(xlabel="layer l", ylabel=str(df["frontier_axis"].iloc[0]) if "frontier_axis" in df
           and len(df) else "depth")
    if cbar and image is not None:
        ax.figure.colorbar(image, ax=ax, label="log10 " + GRAD_LABEL, extend="both")
    return ax


def log10_centre(df: pd.DataFrame, by: list, value: str) -> pd.Series:
    """Mean of log10 ``value`` over seeds per group of ``by``: -inf where a seed's signal
    underflowed to 0, NaN where it is an exact zero (no gradient path; :func:`zero_kinds`)."""
    underflow, exact = zero_kinds(df, value, "delta_underflow" if "delta_underflow" in df else None)
    values = df[value].astype(float)
    with np.errstate(divide="ignore"):
        logs = np.log10(values.where(values > 0, 0.0))
    logs = logs.where(~exact)
    groups = [df[b] for b in by]
    centre = logs.where(np.isfinite(logs)).groupby(groups, observed=True).mean()
    lost = pd.Series(underflow.to_numpy(), index=df.index).groupby(groups, observed=True).any()
    return centre.where(~lost.reindex(centre.index, fill_value=False), -np.inf)


def robust_limits(groups, *, slack: float = 1.0, min_span: float = 1.0) -> tuple[float, float]:
    """Colour limits that one outlying group cannot set: Tukey's fences (quartile ∓ 1.5
    interquartile ranges, and at least ``slack`` beyond the quartile: a decade, for log10
    values) over the groups' minima and maxima, kept inside the data's range.

    ``groups``: arrays of values (one per entry). With a dozen entries whose values lie in
    [-1, 1] and one at +12, the limits stay near [-1, 2] and the +12 is drawn as clipped; an
    entry half a decade above the others is not.
    """
    extremes = [(np.min(g), np.max(g)) for g in (np.asarray(g, float) for g in groups)
                for g in [g[np.isfinite(g)]] if g.size]
    if not extremes:
        return -1.0, 0.0
    lows, highs = np.array(extremes).T
    q1, q3 = np.percentile(lows, [25, 75])
    low = max(lows.min(), q1 - max(1.5 * (q3 - q1), slack))
    q1, q3 = np.percentile(highs, [25, 75])
    high = min(highs.max(), q3 + max(1.5 * (q3 - q1), slack))
    if high - low < min_span:
        middle = (high + low) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    return float(low), float(high)


def plot_loss_curves(df: pd.DataFrame, *, ax=None, value: str = "loss", hue: str = "entry",
                     colors: dict | None = None, dashes: dict | None = None):
    """Loss against step, mean and range over the seeds that finished (as the tables count
    them; an entry none of whose seeds finished: over all its seeds) per ``hue``; an ``x``
    marks each seed's detected plateau (column ``plateau_step``) and a dashed line the task's
    trivial predictor (column ``task_baseline``), where the frame has those columns.

    With a column ``ok``, the y axis spans what the finished seeds logged: a run that blew up
    before it was stopped cannot stretch it over ten decades; a line that leaves the axis is
    marked with a ▲ on the top edge where it does."""
    ax = ax if ax is not None else plt.gca()
    colors = colors or palette(df, hue)
    if "ok" in df:   # per entry the finished seeds, or all seeds where none finished
        finished = df["ok"].fillna(False).astype(bool)
        any_finished = finished.groupby(df[hue], observed=True).transform("any")
        df = df[finished | ~any_finished]
        finished = finished[df.index]
    else:
        finished = pd.Series(True, index=df.index)
    positive = bool((df[value].dropna() > 0).all())
    stats = _centre_lines(ax, df, x="step", value=value, hue=hue, colors=colors, dashes=dashes,
                          log_y=positive)
    centres = stats["mean"].dropna() if stats is not None else pd.Series(dtype=float)
    if "plateau_step" in df:
        seeds = df.drop_duplicates(["run_id", "seed"]).dropna(subset=["plateau_step"])
        where, heights, marker_colors = [], [], []
        for label, steps in seeds.groupby(hue, observed=True)["plateau_step"]:
            if label in colors and label in centres.index.get_level_values(0):
                centre = centres.xs(label, level=0)
                where += list(steps)
                heights += list(np.interp(steps, centre.index.to_numpy(float), centre.to_numpy()))
                marker_colors += [colors[label]] * len(steps)
        if where:  # one marker per seed, on its entry's mean curve
            ax.scatter(where, heights, marker="x", s=18, c=marker_colors, zorder=3,
                       label="plateau")
    if "task_baseline" in df and df["task_baseline"].notna().any():
        ax.axhline(df["task_baseline"].median(), color="0.4", linestyle="--", linewidth=0.8,
                   label="trivial predictor")
    _against_steps(ax, value, log=positive)
    kept = df.loc[finished, value].astype(float)
    kept = kept[np.isfinite(kept) & ((kept > 0) if positive else True)]
    if len(kept) and not finished.all():
        low, high = float(kept.min()), float(kept.max())
        if "task_baseline" in df and df["task_baseline"].notna().any():
            base = float(df["task_baseline"].median())
            low, high = min(low, base), max(high, base)
        if positive:
            pad = (high / low) ** 0.05 if high > low else 2.0
            low, high = low / pad, high * pad
        else:
            pad = 0.05 * (high - low) or 1.0
            low, high = low - pad, high + pad
        ax.set_ylim(low, high)
        off, off_colors = [], []
        for label in colors:
            if label in centres.index.get_level_values(0):
                centre = centres.xs(label, level=0)
                above = centre[centre > high]
                if len(above):
                    off.append(float(above.index[0]))
                    off_colors.append(colors[label])
        if off:
            ax.scatter(off, np.full(len(off), 0.98), transform=ax.get_xaxis_transform(),
                       marker="^", s=16, c=off_colors, clip_on=False, zorder=4,
                       label="_off scale")
    return ax


def plot_grad_over_steps(df: pd.DataFrame, *, ax=None, value: str = "grad_norm",
                         colorbar: bool = True):
    """Per-layer gradient norm against training step for one run, geometric mean over seeds;
    layers coloured from input (dark) to output (light), or, for a few layers (a recurrent
    cell and its output), one categorical colour each, named in a legend
    (:func:`layer_names`). Drawn as one line collection."""
    ax = ax if ax is not None else plt.gca()
    table = centre_stats(df, by=["layer", "step"], value=value, geometric=True)["mean"]
    table = table.unstack("step")
    steps = table.columns.to_numpy(float)
    segments = [np.column_stack([steps, row]) for row in table.to_numpy(float)]
    _layer_lines(ax, segments, table.index.to_numpy(), _n_layer(df), colorbar, layer_names(df))
    return _against_steps(ax, value, log=True)


def _against_steps(ax, value: str, *, log: bool):
    """The axes of a diagnostic against the training step: its label, a log scale if asked."""
    if log:
        _log_y(ax)
    _few_ticks(ax)
    ax.set(xlabel="step", ylabel=diagnostics.label(value))
    return ax


def plot_weight_trajectories(df: pd.DataFrame, *, ax=None, relative: bool = True,
                             max_layers: int = 16, seed=None, colorbar: bool = True):
    """Are the weights changing? Step against the fixed sample weights of each layer.

    ``relative`` (default): per layer, the relative change ‖w_t − w₀‖ / ‖w₀‖ of its sample
    weights (the four fixed entries of the record), mean over seeds, on a log scale: the
    layers of every entry on one comparable scale, and a layer that does not learn is a line
    near the bottom (10⁻⁴ of its size or less). The initial step, where it is 0, is left out.
    A layer whose sample weights start at 0 in some seed (the identity init of an IRNN's
    recurrent matrix off the diagonal) has no relative change: its absolute change is drawn,
    dashed, with a note.
    Otherwise ``w_t − w₀`` of each sample weight of one seed (the one that logged longest,
    unless ``seed`` is given). For deep networks ``max_layers`` layers evenly spaced from
    input to output; a line collection coloured by layer.
    """
    ax = ax if ax is not None else plt.gca()
    columns = [c for c in df.columns if c.startswith("weight_sample_")]
    if not relative:
        if seed is None:
            logged = df.dropna(subset=["weight_sample_0"]).groupby("seed")["step"].max()
            seed = logged.idxmax() if len(logged) else df["seed"].iloc[0]
        df = df[df["seed"] == seed]
    layers = np.unique(df["layer"])
    if len(layers) > max_layers:
        layers = layers[np.unique(np.linspace(0, len(layers) - 1, max_layers).round().astype(int))]
    data = df[df["layer"].isin(layers)].sort_values(["layer", "step"])
    segments, owners = [], []
    styles = []
    if relative and len(data):
        table = data.set_index(["seed", "layer", "step"])[columns]
        first = table.groupby(level=["seed", "layer"]).transform("first")
        change = np.sqrt(((table - first) ** 2).mean(axis=1))
        size = np.sqrt((first ** 2).mean(axis=1))
        # a layer whose sample weights start at 0 (an identity or zero init) has no relative
        # change: its absolute change is drawn instead, dashed, and the panel says so
        zero_start = (size == 0).groupby(level="layer").any()
        absolute = zero_start.index[zero_start.to_numpy()]
        in_absolute = change.index.get_level_values("layer").isin(absolute)
        ratio = (change / size.where(size > 0)).where(~in_absolute, change)
        later = ratio.index.get_level_values("step") > first_step(ratio)
        later_ratio = ratio[later].reset_index(name="change")
        # the arithmetic mean: a weight that did not move is a change of 0, which a geometric
        # mean would turn into no line at all
        centre = centre_stats(later_ratio, by=["layer", "step"], value="change",
                              geometric=False)["mean"].unstack("step")
        steps = centre.columns.to_numpy(float)
        frozen = 0
        for layer, row in zip(centre.index, centre.to_numpy(float)):
            segments.append(np.column_stack([steps, np.where(row > 0, row, np.nan)]))
            owners.append(layer)
            styles.append("dashed" if layer in absolute else "solid")
            logged = row[np.isfinite(row)]
            frozen += bool(logged.size and np.all(logged == 0))
        notes = []
        if frozen:  # not one sample weight moved, in float32: no line on a log scale, so say it
            notes.append(f"{frozen} of {len(centre)} layers: no change at all")
        if len(absolute):   # said in the legend where the layers have one, else in the panel
            ax.plot([], [], color="0.4", linestyle="--", label="absolute change ‖w − w₀‖ (w₀ = 0)")
            if _n_layer(df) > CATEGORICAL_LAYERS:
                names = layer_names(df)
                which = ", ".join(layer_label(layer, names) for layer in absolute)
                notes.append(f"dashed: {which}, w₀ = 0:\nabsolute change ‖w − w₀‖")
        if notes:
            ax.text(0.03, 0.03, "\n".join(notes), transform=ax.transAxes, ha="left",
                    va="bottom", fontsize=5.5, color="0.2",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
    else:
        for layer in layers:
            rows = data[data["layer"] == layer]
            steps = rows["step"].to_numpy(float)
            for column in columns:
                weights = rows[column].to_numpy(float)
                segments.append(np.column_stack([steps, weights - weights[0]]))
                owners.append(layer)
    _layer_lines(ax, segments, np.asarray(owners), _n_layer(df), colorbar, layer_names(df),
                 styles or None)
    _few_ticks(ax, y=not relative)
    if relative:
        _log_y(ax)
    ax.set(xlabel="step", ylabel=WEIGHT_CHANGE_LABEL if relative else "w − w₀")
    return ax


def first_step(series: pd.Series):
    """Per row of a (seed, layer, step) series, the first step its seed and layer logged."""
    steps = pd.Series(series.index.get_level_values("step"), index=series.index)
    return steps.groupby(level=["seed", "layer"]).transform("min").to_numpy()


def plot_frontier(df: pd.DataFrame, *, ax=None, hue: str = "entry", colors: dict | None = None,
                  dashes: dict | None = None):
    """Share of seeds that reach the target against the frontier axis (depth or T), per entry;
    the dotted line is the 2/3 that defines the trainability frontier.

    ``df``: rows of ``runs`` (one per run x seed, columns ``frontier_value`` and ``reached``).
    """
    ax = ax if ax is not None else plt.gca()
    colors = colors or palette(df, hue)
    for label, group in _ordered(df, hue, colors):
        rate = group.groupby("frontier_value")["reached"].mean()
        ax.plot(rate.index, rate.to_numpy(), marker="o", markersize=3, color=colors[label],
                linestyle=(dashes or {}).get(label, "-"), label=str(label))
    ax.axhline(FRONTIER_SHARE, color="0.4", linestyle=":", linewidth=0.8, label="2/3 of seeds")
    ax.set(ylim=(-0.04, 1.04), ylabel="seeds reaching the target", xlabel=_axis_name(df),
           yticks=[0, 0.5, 1])
    _frontier_scale(ax, df["frontier_value"])
    return ax


UNIT_FRACTIONS = {   # summary field: what it counts, in a few words
    f"{name}_final": diagnostics.label(name) for name in diagnostics.UNIT_FRACTIONS}


def plot_dead_saturation(df: pd.DataFrame, *, ax=None, value: str = "dead_fraction_final",
                         hue: str = "entry", colors: dict | None = None,
                         dashes: dict | None = None):
    """A unit fraction of the hidden layers at the end of training against the frontier
    axis, median and range over the seeds that finished: ``dead_fraction_final`` (units that
    output 0 on every example), ``inactive_fraction_final`` (unit x example pairs on a
    rectifier's off side), ``tail_saturation_final`` (pairs in a bounded activation's flat
    tail) or ``saturation_final`` (flat for either reason; the only one older records have).
    A record without the field draws nothing."""
    ax = ax if ax is not None else plt.gca()
    data = df[df["ok"]] if "ok" in df else df
    if value in data:
        _centre_lines(ax, data.dropna(subset=[value]), x="frontier_value", value=value, hue=hue,
                      dashes=dashes, colors=colors or palette(df, hue), marker="o")
        # a fraction is read from 0: the axis starts there and ends a little above the data
        top = min(1.02, max(0.05, 1.08 * float(data[value].max()) if data[value].notna().any()
                            else 0.05))
        ax.set_ylim(-0.02 * top, top)
    ax.set(ylabel=f"fraction of {UNIT_FRACTIONS.get(value, value)}", xlabel=_axis_name(df))
    _frontier_scale(ax, df["frontier_value"])
    return ax


def plot_outcomes(df: pd.DataFrame, *, ax=None, value: str = "final_test_accuracy",
                  lost_counts: bool = True, group_labels: bool = True):
    """One row per entry (in the order of ``df``'s rows: sort it first): the mean of ``value``
    over the seeds that finished (a dot, the number the tables report) and their range (a
    bar); seeds that diverged or failed are counted right of the panel ("2/5 lost",
    ``lost_counts``). Rows of different frontier values are separated by a line and labelled
    on it (``group_labels``).

    ``df``: rows of ``runs`` (one per run x seed) with ``entry``, ``ok`` and ``value``."""
    ax = ax if ax is not None else plt.gca()
    entries = list(dict.fromkeys(df["entry"]))
    y = {e: i for i, e in enumerate(entries)}
    for entry, rows in df.groupby("entry", sort=False):
        done = rows.loc[rows["ok"].astype(bool), value].astype(float).dropna() \
            if value in rows else pd.Series(dtype=float)
        i = y[entry]
        if len(done):
            ax.plot([done.min(), done.max()], [i, i], color="0.55", linewidth=1.6,
                    solid_capstyle="butt", label="_seed range")
            ax.plot([done.mean()], [i], "o", color="C0", markersize=3.5, label=str(entry))
        lost = int((~rows["ok"].astype(bool)).sum())
        if lost and lost_counts:   # beside the panel, right of it: no dot is ever there
            ax.text(1.02, i, f"{lost}/{len(rows)} lost", transform=ax.get_yaxis_transform(),
                    va="center", ha="left", fontsize=5.5, color="C3", clip_on=False)
    axis = _axis_name(df)
    if axis and df["frontier_value"].nunique() > 1:
        order = df.drop_duplicates("entry")["frontier_value"].to_numpy(float)
        starts = [0] + list(np.flatnonzero(np.diff(order)) + 1)
        for i in starts[1:]:
            ax.axhline(i - 0.5, color="0.75", linewidth=0.6)
        if group_labels:   # on the line between groups, between two rows' dots
            for i in starts:
                ax.text(0.5, i - 0.5, f"{axis} {_number_text(order[i])}", fontsize=5.5,
                        transform=ax.get_yaxis_transform(), ha="center", va="center",
                        color="0.3", bbox={"facecolor": "white", "edgecolor": "none",
                                           "pad": 0.3}, clip_on=False)
    ax.set_yticks(range(len(entries)), [str(e) for e in entries])
    ax.set_ylim(len(entries) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    if value.endswith("fraction_final") or value.endswith("saturation_final") \
            or value.endswith("accuracy"):
        ax.set_xlim(-0.03, 1.03)
    ax.xaxis.set_major_locator(InView(nbins=4))
    ax.set_xlabel(value.removeprefix("final_").replace("_final", "").replace("_", " "))
    return ax


def plot_loss_vs_baseline(df: pd.DataFrame, *, ax=None, value: str = "final_test_loss",
                          hue: str = "entry", colors: dict | None = None,
                          dashes: dict | None = None):
    """Final loss over the task's trivial-predictor loss against the frontier axis (T for
    recurrent studies): below the dashed line at 1 a model has learned something."""
    ax = ax if ax is not None else plt.gca()
    data = df[df["ok"]].assign(ratio=lambda d: d[value] / d["task_baseline"])
    positive = bool(len(data) and (data["ratio"].dropna() > 0).all())
    _centre_lines(ax, data, x="frontier_value", value="ratio", hue=hue, dashes=dashes,
                  colors=colors or palette(df, hue), marker="o", log_y=positive)
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.8, label="trivial predictor")
    if positive:
        _log_y(ax)
    ax.set(ylabel=f"{value.replace('_', ' ')} / trivial", xlabel=_axis_name(df))
    _frontier_scale(ax, df["frontier_value"])
    return ax


# ---------------------------------------------------------------------------- mean-field theory
# the theory study's pictures (:mod:`vgbench.report.theory` builds their frames)

INIT_MARKERS = {"naive": "v", "small_normal": "s", "xavier": "D", "xavier_uniform": "D",
                "xavier_normal": "D", "lecun_normal": "D", "orthogonal": "D", "he": "^",
                "he_uniform": "^", "he_normal": "^"}
PHASE_LIMIT = 0.5     # the phase diagram's colours saturate at chi_1 = 10^(+-0.5)


def plot_delta_profiles(df: pd.DataFrame, *, ax=None, legend: bool = True):
    """Measured log10 |dL/dh_l| against layer l (median over seeds, band: range) and the
    mean-field prediction (dashed), one line per run coloured by its sigma_w^2 (dark: small).
    ``df``: :func:`vgbench.report.theory.profile_frame` rows, typically of one activation."""
    ax = ax if ax is not None else plt.gca()
    runs = df.drop_duplicates("run_id").sort_values("sigma_w2")
    shades = mpl.colormaps[SEQUENTIAL](np.linspace(0.0, 0.85, max(len(runs), 2)))
    for color, run in zip(shades, runs.itertuples()):
        group = df[df["run_id"] == run.run_id]
        stats = group.groupby("layer")["log10_delta"].agg(["median", "min", "max"])
        layers = stats.index.to_numpy(float) + 1
        ax.plot(layers, stats["median"], color=color, marker="o", markersize=2, linewidth=0,
                label=f"σw² = {run.sigma_w2:.3g}")
        ax.fill_between(layers, stats["min"], stats["max"], color=color, alpha=0.2, linewidth=0)
        predicted = group.drop_duplicates("layer").sort_values("layer")
        ax.plot(predicted["layer"] + 1, predicted["predicted"], color=color, linestyle="--",
                linewidth=0.9, label="_predicted")
    if legend:
        ax.plot([], [], color="0.3", linestyle="--", label="mean field")
        ax.legend(fontsize=5, handlelength=1.2, loc="best")
    ax.set(xlabel="layer l (input → output)", ylabel="log10 " + GRAD_LABEL)
    return ax


def plot_phase_diagram(activation, *, ax=None, points: pd.DataFrame | None = None,
                       sigma_w2_range=(0.05, 4.0), sigma_b2_range=(0.0, 0.25),
                       initializers: dict | None = None, title: str | None = None,
                       resolution=(41, 26), limit: float = PHASE_LIMIT, colorbar: bool = True):
    """chi_1 over (sigma_w^2, sigma_b^2) for one activation (Schoenholz et al. 2017, Fig. 1).

    ``activation``: anything :func:`vgbench.theory.as_activation` takes (a name, a Phi).
    Colour: log10 chi_1 (blue: gradients vanish, red: they explode), clipped to +-``limit``;
    black line: the order/chaos boundary chi_1 = 1; white markers (labelled for a legend):
    each of ``initializers`` (name -> (sigma_w^2, sigma_b^2) or None, as a record's theory
    inputs list them), the initializers at one point sharing a marker; circles: ``points`` (columns
    ``sigma_w2``, ``sigma_b2`` and, if present, ``measured`` = (1/2) log10 chi_1 measured),
    filled with the measured chi_1 on the same colour scale.
    """
    ax = ax if ax is not None else plt.gca()
    sw2 = np.linspace(*sigma_w2_range, resolution[0])
    sb2 = np.linspace(*sigma_b2_range, resolution[1])
    with np.errstate(divide="ignore"):
        log_chi = np.log10(theory.chi1_grid(activation, sw2, sb2, n_points=50)).T
    norm = mpl.colors.Normalize(-limit, limit)
    cmap = mpl.colormaps["RdBu_r"]
    mesh = ax.pcolormesh(sw2, sb2, np.clip(log_chi, -limit, limit), cmap=cmap, norm=norm,
                         shading="nearest", rasterized=True)
    if np.nanmin(log_chi) < 0 < np.nanmax(log_chi):
        ax.contour(sw2, sb2, log_chi, levels=[0.0], colors="k", linewidths=1.0)
    for (x, y), names in _initializer_points(initializers or {}).items():
        if sigma_w2_range[0] <= x <= sigma_w2_range[1] and sigma_b2_range[0] <= y <= sigma_b2_range[1]:
            ax.scatter([x], [y], marker=INIT_MARKERS.get(names[0], "P"), s=22, color="white",
                       edgecolor="k", linewidth=0.6, zorder=4, clip_on=False,
                       label=", ".join(names))
    if points is not None and len(points):
        measured = points["measured"] if "measured" in points else pd.Series(np.nan, points.index)
        fill = [cmap(norm(np.clip(2 * m, -limit, limit))) if np.isfinite(m) else "none"
                for m in measured]
        ax.scatter(points["sigma_w2"], points["sigma_b2"], s=22, c=fill, edgecolor="k",
                   linewidth=0.7, zorder=5, clip_on=False, label="study point (measured χ1)")
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label="log10 χ1", pad=0.02)
    ax.set(xlim=sigma_w2_range, ylim=sigma_b2_range, xlabel="σw²", ylabel="σb²",
           title=title if title is not None else activation if isinstance(activation, str) else "")
    return ax


def label_colors(df: pd.DataFrame) -> dict:
    """Colour of each ``label``, in order of first appearance (colour-blind palette)."""
    labels = list(dict.fromkeys(df["label"]))
    return dict(zip(labels, sns.color_palette("colorblind" if len(labels) <= 10 else "husl",
                                              len(labels))))


def _initializer_points(initializers: dict) -> dict:
    """(sigma_w^2, sigma_b^2) -> names of the initializers there ('gaussian' aside: it is any
    point), from a record's theory inputs (name -> pair or None)."""
    found: dict[tuple, list] = {}
    for name, pair in initializers.items():
        if name == "gaussian":
            continue
        if pair is not None and None not in pair:
            found.setdefault((round(pair[0], 6), round(pair[1], 6)), []).append(name)
    for names in found.values():   # xavier_uniform and xavier_normal -> xavier
        for stem in {n.rsplit("_", 1)[0] for n in names}:
            if {f"{stem}_uniform", f"{stem}_normal"} <= set(names):
                names[:] = [stem if n == f"{stem}_uniform" else n for n in names
                            if n != f"{stem}_normal"]
    return found


def plot_jacobian_spectra(df: pd.DataFrame, *, ax=None, colors: dict | None = None,
                          floor: float = 1e-6):
    """Distribution function of the Jacobian's singular values (median over seeds of each
    quantile) on a log axis, one line per run. A run's values below ``floor`` x its largest
    are not resolved in float32 (zero included) and sit at that floor, the left end of its
    line; a dotted line marks 1, where dynamical isometry puts every singular value."""
    ax = ax if ax is not None else plt.gca()
    colors = colors or label_colors(df)
    lows, highs = [], []
    for label, group in df.groupby("label", sort=False):
        curve = group.groupby("probability")["singular_value"].median()
        top = max(float(curve.max()), 1e-300)
        values = np.maximum(curve.to_numpy(float), floor * top)
        ax.plot(values, curve.index, color=colors.get(label), label=str(label))
        lows.append(values.min())
        highs.append(top)
    if lows:  # at least two decades, centred on the data
        low, high = min(lows), max(highs)
        pad = max(1.5, math.sqrt(100 * low / high))
        ax.set_xlim(low / pad, high * pad)
        if low / pad <= 1.0 <= high * pad:
            ax.axvline(1.0, color="0.4", linestyle=":", linewidth=0.8)
    ax.set(xscale="log", xlabel="singular value of ∂h_L/∂x", ylabel="fraction below",
           ylim=(0, 1))
    ax.xaxis.set_major_locator(mpl.ticker.LogLocator(numticks=5))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
    return ax


def plot_frontier_vs_xi(df: pd.DataFrame, *, ax=None):
    """Per entry (rows): the trainability frontier (filled circle; an arrow where every depth
    tried trained, a cross where none did), 6 xi_c (vertical bar; an arrow at infinity) and
    6 xi_grad (open diamond). ``df``: rows of one study of
    :func:`vgbench.report.theory.frontier_frame`."""
    ax = ax if ax is not None else plt.gca()
    df = df.sort_values("entry_order").reset_index(drop=True)
    lo = max(min(df["min_depth"].min(), np.nanmin(df["predicted_depth"].replace(np.inf, np.nan)
                                                    .to_numpy(float), initial=np.inf)) / 2, 0.5)
    hi = df["max_depth"].max() * 2
    y = np.arange(len(df))
    for i, row in df.iterrows():
        if np.isnan(row["frontier"]):
            ax.scatter([row["min_depth"]], [i], marker="x", color="C3", s=18, zorder=3)
        else:
            ax.scatter([row["frontier"]], [i], marker=">" if row["frontier_censored"] else "o",
                       color="C0", s=18, zorder=3)
        if np.isfinite(row.get("gradient_depth", np.nan)):
            ax.scatter([min(max(row["gradient_depth"], lo), hi)], [i], marker="d", s=14,
                       facecolor="none", edgecolor="0.4", linewidth=0.7, zorder=2)
        predicted = row["predicted_depth"]
        if np.isfinite(predicted):
            ax.scatter([min(max(predicted, lo), hi)], [i], marker="|", color="k", s=60, zorder=2)
        elif not np.isnan(predicted):
            ax.annotate("", (hi, i), xytext=(hi / 1.6, i),
                        arrowprops={"arrowstyle": "->", "color": "k", "linewidth": 0.8})
    ax.set_xscale("log", base=2)
    ax.set(xlim=(lo, hi), ylim=(len(df) - 0.5, -0.5), xlabel="depth")
    ax.set_yticks(y, df["entry"].tolist())
    return ax


# ---------------------------------------------------------------------------- helpers

def _at_log_point(df: pd.DataFrame, log_point) -> pd.DataFrame:
    if log_point == "first":
        log_point = 0
    if log_point == "last":
        last = df.groupby("run_id", observed=True)["log_point"].transform("max")
        return df[df["log_point"] == last]
    return df[df["log_point"] == log_point]


def _ordered(df: pd.DataFrame, hue: str, colors: dict):
    groups = dict(tuple(df.groupby(hue, sort=False, observed=True)))
    return [(label, groups[label]) for label in colors if label in groups]


UNDERFLOW_SCALE = diagnostics.UNDERFLOW_SCALE   # below it, a zero is an underflow; else exact


def zero_kinds(df: pd.DataFrame, value: str, flag: str | None) -> tuple[pd.Series, pd.Series]:
    """``(underflow, exact)``: which rows of ``df`` hold a signal of exactly 0 that underflowed
    float32 (the profile of that seed and log point falls to values below
    :data:`UNDERFLOW_SCALE` on its way there) and which hold an exact zero with no small
    neighbour (no gradient reaches the layer: a zero-initialised gain such as SkipInit's, or
    an output the loss does not use). Both are 0 in the record; only the first is vanishing."""
    if flag is None or flag not in df or df.empty:
        empty = pd.Series(False, index=df.index)
        return empty, empty
    zero = df[flag].astype(bool) | (df[value].astype(float) == 0)
    if not zero.any():
        return zero, zero
    keys = [k for k in ("run_id", "seed", "log_point") if k in df]
    positive = df[value].astype(float).where(df[value] > 0)
    smallest = positive.groupby([df[k] for k in keys], observed=True).transform("min") \
        if keys else pd.Series(positive.min(), index=df.index)
    underflow = zero & ~(smallest >= UNDERFLOW_SCALE)     # no positive value at all: underflow
    return underflow, zero & ~underflow


def centre_stats(df: pd.DataFrame, *, by: list, value: str, geometric: bool) -> pd.DataFrame:
    """Per group of ``by``: the centre over seeds (``mean``: arithmetic, or geometric — the
    mean of log10 — with ``geometric``), the seeds' range (``min``, ``max``) and ``count``.
    With ``geometric`` a group where some seed is 0 (or not positive) has no centre."""
    values = df[value].astype(float)
    groups = [df[b] for b in by]
    if geometric:
        positive = values.where(values > 0)
        with np.errstate(divide="ignore"):
            logs = np.log10(positive)
        stats = pd.DataFrame({"logs": logs, "bad": values.notna() & positive.isna(),
                              "v": positive}).groupby(groups, observed=True, sort=True).agg(
            mean=("logs", "mean"), bad=("bad", "any"), min=("v", "min"), max=("v", "max"),
            count=("v", "count"))
        stats["mean"] = np.where(stats.pop("bad"), np.nan, 10.0 ** stats["mean"])
        return stats
    return values.groupby(groups, observed=True, sort=True).agg(["mean", "min", "max", "count"])


def _centre_lines(ax, df: pd.DataFrame, *, x: str, value: str, hue: str, colors: dict,
                  dashes: dict | None = None, offset: float = 0, marker=None,
                  linestyle: str = "-", log_y: bool = False, geometric: bool = False,
                  underflow: str | None = None):
    """Centre over seeds (line) and range over seeds (band) of ``value`` against ``x``.

    The centre is the statistic the tables report for the same kind of quantity
    (:data:`CENTRE_TEXT`): the arithmetic mean for a metric, a loss or a fraction; with
    ``geometric`` (gradient and weight norms) the geometric mean, the mean of log10, as the
    tables average log10 a. On a log axis a zero leaves its point out and is marked on the
    bottom edge: ▼ where it is an underflow, ○ where it is an exact zero (:func:`zero_kinds`).
    Returns the per-(hue, x) statistics it drew (:func:`centre_stats`), None for no rows."""
    if df.empty:
        return None
    stats = centre_stats(df, by=[hue, x], value=value, geometric=geometric)
    if log_y and not geometric:   # a mean that is not positive has no place on a log axis
        stats["mean"] = stats["mean"].where(stats["mean"] > 0)
    marks = {}
    if log_y and underflow:
        vanished, exact = zero_kinds(df, value, underflow)
        for name, rows in (("_underflow", vanished), ("_exact zero", exact)):
            if rows.any():
                marks[name] = df[x][rows].groupby(df[hue][rows], observed=True).unique()
    present = set(stats.index.get_level_values(0))
    bands, band_colors = [], []
    for label in colors:
        if label not in present:
            continue
        part = stats.xs(label, level=0)
        xs = part.index.to_numpy(float) + offset
        ax.plot(xs, part["mean"].to_numpy(), color=colors[label], marker=marker,
                linestyle=(dashes or {}).get(label, linestyle), label=str(label), markersize=3)
        if part["count"].max() > 1:
            bands += _band_polygons(xs, part["min"].to_numpy(), part["max"].to_numpy())
            band_colors += [colors[label]] * (len(bands) - len(band_colors))
        for name, where in marks.items():
            if label in where.index and len(where[label]):
                at = np.asarray(where[label], float) + offset
                ax.scatter(at, np.full(len(at), 0.02), transform=ax.get_xaxis_transform(),
                           marker="v" if name == "_underflow" else "o", s=14,
                           color=colors[label] if name == "_underflow" else "none",
                           edgecolors=colors[label], linewidths=0.8, label=name, clip_on=False)
    if bands:  # one collection for all the seed bands: much quicker than a fill per entry
        ax.add_collection(PolyCollection(bands, facecolors=band_colors, alpha=0.2,
                                         linewidths=0, label="_seed range"), autolim=True)
        ax.autoscale_view()
    return stats


def _band_polygons(xs, low, high) -> list:
    """The region between ``low`` and ``high`` as polygons, split where either is NaN."""
    finite = np.isfinite(low) & np.isfinite(high)
    polygons, start = [], None
    for i in range(len(xs) + 1):
        if i < len(xs) and finite[i]:
            start = i if start is None else start
        elif start is not None:
            if i - start > 1:
                span = slice(start, i)
                polygons.append(np.concatenate([np.column_stack([xs[span], low[span]]),
                                                np.column_stack([xs[span], high[span]])[::-1]]))
            start = None
    return polygons


CATEGORICAL_LAYERS = 4   # up to this many layers: a colour and a name each, not a colour bar


def layer_names(df: pd.DataFrame) -> dict:
    """layer index -> its name in the record (``recurrent_1``, ``output``), where known."""
    if "layer_name" not in df or df.empty:
        return {}
    pairs = df[["layer", "layer_name"]].dropna().drop_duplicates("layer")
    return {int(k): str(v) for k, v in zip(pairs["layer"], pairs["layer_name"])}


def layer_label(layer: int, names: dict) -> str:
    return f"layer {int(layer) + 1}" + (f" ({names[int(layer)]})" if int(layer) in names else "")


def layer_colors(n_layer: int):
    """The colour of each layer: categorical for a few layers, else the sequential map."""
    if n_layer <= CATEGORICAL_LAYERS:
        return list(sns.color_palette("colorblind", CATEGORICAL_LAYERS))[:n_layer]
    norm = Normalize(0, max(n_layer - 1, 1))
    return list(mpl.colormaps[SEQUENTIAL](norm(np.arange(n_layer))))   # one colour map lookup


def _layer_lines(ax, segments, layers, n_layer: int, colorbar: bool, names: dict | None = None,
                 linestyles=None):
    """One line per segment, coloured by its layer (0 = input): on the sequential colour map,
    or, for at most :data:`CATEGORICAL_LAYERS` layers, a categorical colour each with the
    layer's name as its label (for a legend: two weight matrices are not a continuum)."""
    palette = layer_colors(n_layer)
    colors = [palette[min(int(layer), n_layer - 1)] for layer in layers]
    lines = LineCollection(segments, colors=colors, linewidths=0.8,
                           linestyles=linestyles if linestyles is not None else "solid")
    ax.add_collection(lines)
    ax.autoscale_view()
    if n_layer <= CATEGORICAL_LAYERS:
        for layer in sorted(set(int(x) for x in layers)):   # legend proxies
            ax.plot([], [], color=palette[layer], label=layer_label(layer, names or {}))
    elif colorbar:
        mappable = mpl.cm.ScalarMappable(norm=Normalize(1, max(n_layer, 2)), cmap=SEQUENTIAL)
        ax.figure.colorbar(mappable, ax=ax, label="layer l", pad=0.02)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(value, pos=None) -> str:
    """``1e-4`` -> ``"10⁻⁴"`` in plain text (mathtext tick labels are slow to draw)."""
    if value <= 0:
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return f"{value:g}"
    exponent = int(round(exponent))
    return "1" if exponent == 0 else "10" + str(exponent).translate(_SUPERSCRIPT)


def _in_view(ticks, low: float, high: float, log: bool = False) -> list:
    """The ticks between ``low`` and ``high`` (up to rounding). Locators return ticks beyond
    the view too; matplotlib never draws those, but makes, formats and lays out a tick for
    each at every draw."""
    if log:
        slack = 1 + 1e-9
        return [t for t in ticks if low / slack <= t <= high * slack]
    slack = 1e-9 * (high - low)
    return [t for t in ticks if low - slack <= t <= high + slack]


class InView(mpl.ticker.MaxNLocator):
    """:class:`~matplotlib.ticker.MaxNLocator` that returns the ticks inside the view only."""

    def __call__(self):
        low, high = sorted(self.axis.get_view_interval())
        return _in_view(super().__call__(), low, high)


class _LogTicks(mpl.ticker.LogLocator):
    """A few decades; 1-2-5 steps where fewer than two decades are in view; where even those
    give fewer than two ticks (a range such as 0.6 to 1.6), evenly spaced round numbers."""

    def __init__(self):
        super().__init__(numticks=5)

    def __call__(self):
        """The ticks inside the view only (:func:`_in_view`); none where nothing positive is
        in view (an empty panel that keeps its row's log axis)."""
        low, high = sorted(self.axis.get_view_interval())
        return _in_view(self.tick_values(low, high), low, high, log=True) if low > 0 else []

    def tick_values(self, vmin, vmax):
        low, high = sorted((vmin, vmax))

        def shown(ticks):
            return sum(low <= t <= high for t in ticks)

        ticks = super().tick_values(vmin, vmax)
        if shown(ticks) >= 2:
            return ticks
        ticks = mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0), numticks=12).tick_values(vmin, vmax)
        if shown(ticks) >= 2:
            return ticks
        ticks = mpl.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        return np.asarray([t for t in ticks if t > 0])


def _log_y(ax):
    """Log y axis with a few labelled ticks and no minor ticks."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(_LogTicks())
    ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(_decade))
    ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())  # minor ticks cost half the drawing


def has_data(ax) -> bool:
    """Whether ``ax`` shows any data: a line, a line collection, a mesh or an image with a
    finite value (reference lines such as the trivial predictor's do not count)."""
    for line in ax.get_lines():
        if line.get_transform() == ax.transData and np.isfinite(
                np.column_stack(line.get_data()).astype(float)).all(axis=1).any():
            return True
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            if any(np.isfinite(np.reshape(s, (-1, 2))).all(axis=1).sum() >= 2
                   for s in collection.get_segments()):
                return True
        elif isinstance(collection, mpl.collections.QuadMesh):
            if np.ma.masked_invalid(collection.get_array()).count():
                return True
    return any(np.ma.masked_invalid(image.get_array()).count() for image in ax.images)


def title_points() -> float:
    """The panel-title font size in points ("large" and the like resolved)."""
    return mpl.font_manager.FontProperties(size=mpl.rcParams["axes.titlesize"]).get_size_in_points()


def note_empty(ax, reason: str, keep_y: bool = False):
    """Say in the panel why it has no data (``reason``: "all 3 seeds diverged", "not run"),
    and drop its empty axes: an axis over nothing has meaningless numbers. ``keep_y`` keeps
    the y axis of a panel that carries the scale its row shares."""
    size = title_points()
    room = max(10, int(ax.get_position().width * ax.figure.get_figwidth() * 72 / (size * 0.6)))
    text = "\n".join(textwrap.fill(line, room) for line in reason.split("\n"))
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=size,
            color="0.35")
    ax.tick_params(bottom=False, labelbottom=False)
    ax.spines["bottom"].set_visible(False)
    ax.set(xlabel="")
    if not keep_y:
        ax.tick_params(left=False, labelleft=False)
        ax.spines["left"].set_visible(False)
        ax.set(ylabel="")


def _few_ticks(ax, y: bool = False):
    ax.xaxis.set_major_locator(InView(nbins=4))
    if y:
        ax.yaxis.set_major_locator(InView(nbins=4))


def _n_layer(df: pd.DataFrame) -> int:
    return int(df["layer"].max()) + 1 if len(df) else 1


def _axis_name(df: pd.DataFrame) -> str:
    return str(df["frontier_axis"].iloc[0]) if "frontier_axis" in df and len(df) else ""


def _frontier_scale(ax, values):
    values = np.asarray(pd.Series(values).dropna().unique(), float)
    if len(values) and values.min() > 0 and values.max() / values.min() >= 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(values), [_number_text(v) for v in sorted(values)])
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())


def _number_text(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"

"""The theory study's figures, laid out from the frames of :mod:`vgbench.report.theory` (which
saves them): measured against predicted gradient profiles, the phase diagram, the Jacobian's
spectra and the trainability frontier against the depth scales."""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vgbench.activations import LEAKY_SLOPE
from vgbench.report import figures as fg
from vgbench.report.figure_files import (
    COLORBAR,
    colorbar_axes,
    facets,
    fit_legends,
    legend_width,
    outer_labels,
)
from vgbench.report.frames import ACTIVATION_ORDER

JACOBIAN_FLOOR = 1e-6  # singular values below this x the largest are not resolved (float32)


def _by_activation(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return sorted(df.groupby("activation", sort=False),
                  key=lambda kv: (ACTIVATION_ORDER.get(kv[0], len(ACTIVATION_ORDER)), kv[0]))


def _panel_handles(axes) -> dict:
    """label -> handle of what the panels labelled, each label once, for one figure legend."""
    handles = {}
    for ax in axes:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels())})
    return handles


def theory_profiles_figure(profiles: pd.DataFrame) -> Figure:
    """Measured and predicted log10 |dL/dh_l| against layer, a panel per activation
    (:func:`~vgbench.report.figures.plot_delta_profiles`)."""
    panels = _by_activation(profiles)
    fig, axes = facets(len(panels), ncols=2, panel=(2.6, 2.0), sharey=False)
    for ax, (activation, rows) in zip(axes, panels):
        fg.plot_delta_profiles(rows, ax=ax)
        ax.set_title(activation)
    outer_labels(axes)
    return fig


def theory_phase_figure(table: pd.DataFrame, inputs: dict, *, activation_of) -> Figure:
    """The phase diagram of each activation in the agreement ``table`` but identity, with the
    study's Gaussian points filled with their measured chi_1
    (:func:`~vgbench.report.figures.plot_phase_diagram`).

    ``inputs``: run id -> its record's theory inputs; ``activation_of``: (theory inputs,
    leaky slope) -> the activation, :func:`vgbench.report.theory.activation_of` (given by
    the caller: the drawing never reaches back into the analysis).
    """
    gaussian = table[table["init"] == "gaussian"]
    activations = [a for a, _ in _by_activation(table) if a != "identity"]
    widest = table[table["width"] == table["width"].max()]
    legend = ["xavier, lecun_normal, orthogonal", "study point (measured χ1)"]
    fig, axes = facets(len(activations), ncols=2, panel=(2.4, 1.9), sharey=False,
                       legend=COLORBAR + legend_width(legend))
    for ax, activation in zip(axes, activations):
        points = gaussian[gaussian["activation"] == activation]
        top = max(4.0, 1.1 * float(points["sigma_w2"].max())) if len(points) else 4.0
        rows = widest[widest["activation"] == activation]
        rows = rows if len(rows) else table[table["activation"] == activation]
        run = rows.iloc[0]
        found = inputs[run["run_id"]]   # the run's own activation
        markers = {}   # the built-in initializers and every one these runs used
        for run_id in rows["run_id"]:
            markers.update(inputs.get(run_id, {}).get("initializers", {}))
        slope = float(run.get("leaky_slope", LEAKY_SLOPE))
        fg.plot_phase_diagram(activation_of(found, slope), ax=ax,
                              points=points, sigma_w2_range=(0.05, top), title=activation,
                              initializers=markers, colorbar=False)
    outer_labels(axes)
    mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-fg.PHASE_LIMIT, fg.PHASE_LIMIT),
                                     cmap="RdBu_r")
    cax = colorbar_axes(fig, axes)
    fig.colorbar(mappable, cax=cax, label="log10 χ1")
    handles = _panel_handles(axes)
    fig.legend(list(handles.values()), list(handles), loc="upper left", fontsize=6,
               bbox_to_anchor=(cax.get_position().x1 + COLORBAR / fig.get_figwidth(), 0.98))
    fit_legends(fig)
    return fig


def theory_spectra_figure(spectra: pd.DataFrame) -> Figure:
    """The Jacobian's singular value distributions, a panel per activation, a colour per run
    (:func:`~vgbench.report.figures.plot_jacobian_spectra`)."""
    panels = _by_activation(spectra)
    colors = fg.label_colors(spectra)
    fig, axes = facets(len(panels), ncols=4, panel=(1.7, 1.6), sharey=True,
                       legend=legend_width(list(colors)))
    for ax, (activation, rows) in zip(axes, panels):
        fg.plot_jacobian_spectra(rows, ax=ax, colors=colors, floor=JACOBIAN_FLOOR)
        ax.set_title(activation)
    outer_labels(axes)
    handles = _panel_handles(axes)
    right = max(ax.get_position().x1 for ax in axes)
    fig.legend(list(handles.values()), list(handles), loc="upper left", fontsize=7,
               bbox_to_anchor=(right + 0.01, 0.98))
    fit_legends(fig)
    return fig


def theory_frontier_figure(frontiers: pd.DataFrame, *, xi_multiple: int) -> Figure:
    """The trainability frontier against ``xi_multiple`` xi_c, a panel per study and task
    (:func:`~vgbench.report.figures.plot_frontier_vs_xi`); ``xi_multiple``: the one
    :func:`vgbench.report.theory.frontier_frame` multiplied xi_c and xi_grad by.
    """
    panels = list(frontiers.groupby(["study", "task"], sort=True))
    rows = [len(g) for _, g in panels]
    longest = max(len(str(e)) for e in frontiers["entry"])
    fig = Figure(figsize=(0.055 * longest + 4.6, 0.16 * sum(rows) + 0.75 * len(panels)),
                 layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=rows).ravel()
    for ax, ((study, task), group) in zip(axes, panels):
        fg.plot_frontier_vs_xi(group, ax=ax)
        ax.set_title(f"{study} ({task})")
    handles = [Line2D([], [], marker="o", color="C0", linestyle=""),
               Line2D([], [], marker=">", color="C0", linestyle=""),
               Line2D([], [], marker="x", color="C3", linestyle=""),
               Line2D([], [], marker="|", color="k", linestyle="", markersize=8),
               Line2D([], [], marker="d", markerfacecolor="none", color="0.4", linestyle="")]
    labels = ["frontier", "every depth trains", "no depth trains", f"{xi_multiple} ξc",
              f"{xi_multiple} |ξ∇|"]
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    return fig



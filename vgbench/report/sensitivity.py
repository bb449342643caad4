"""The learning-rate sensitivity figure of a tuned study: how forgiving each entry is.

Validation metric against the tuned value (log axis), one line per entry (mean over the
finished seeds, band from the lowest to the highest seed), one panel per setting of the swept
axis; a filled dot marks each entry's chosen value, and a cross each value at which seeds
diverged or failed (with their count), on the panel's edge where "worst" is for the metric:
the foot where higher is better (accuracy), the top where lower is (a loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from vgbench.report import tuning

CAPTION = ("final validation metric against {field} (log axis), one line per entry: the mean "
           "over the seeds that finished, with their range; ●: the chosen {field}; ×: seeds that "
           "diverged or failed there, on the edge where the metric is worst")


def plot_sensitivity(df: pd.DataFrame, *, field: str = "lr", ax=None, colors=None, dashes=None):
    """Validation metric against ``field`` for the rows of one panel (a ``runs`` frame with
    ``chosen`` per row); returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    colors, dashes = colors or {}, dashes or {}
    foot = blended_transform_factory(ax.transData, ax.transAxes)
    higher = bool(df["higher_is_better"].iloc[0]) if "higher_is_better" in df and len(df) else True
    worst, count_at = (0.03, 0.07) if higher else (0.97, 0.89)   # where "worst" is
    for entry, rows in df.sort_values("entry_order").groupby("entry", sort=False):
        color = colors.get(entry, "0.3")
        per_value = rows.groupby(field, sort=True)
        values = np.array(sorted(rows[field].unique()), float)
        ok_values = [g.loc[g["ok"], "val_metric"].to_numpy(float) for _, g in per_value]
        mean = np.array([v.mean() if len(v) else np.nan for v in ok_values])
        low = np.array([v.min() if len(v) else np.nan for v in ok_values])
        high = np.array([v.max() if len(v) else np.nan for v in ok_values])
        ax.plot(values, mean, color=color, linestyle=dashes.get(entry, "-"), lw=1.2, label=entry)
        ax.fill_between(values, low, high, color=color, alpha=0.15, lw=0)
        chosen = rows.loc[rows["chosen"], field].unique()
        for value in chosen:
            y = mean[np.searchsorted(values, value)]
            if np.isfinite(y):
                ax.plot([value], [y], "o", color=color, ms=3.5, zorder=5)
        lost = rows[~rows["ok"]].groupby(field).size()
        for value, count in lost.items():
            ax.plot([value], [worst], "x", color=color, ms=4, transform=foot, clip_on=False,
                    label="_lost")
            if count > 1:
                ax.text(value, count_at, str(count), color=color, fontsize=5, ha="center",
                        transform=foot)
    values = np.array(sorted(df[field].dropna().unique()), float)
    if len(values):
        ax.set_xscale("log")
        ax.set_xlim(values[0] / 1.5, values[-1] * 1.5)
    if not np.isfinite(df["val_metric"].to_numpy(float)).any():
        ax.text(0.5, 0.5, "no validation metric\nin these records", transform=ax.transAxes,
                ha="center", va="center", fontsize=6, color="0.4")
    ax.set_xlabel(field)
    return ax


def sensitivity_figures(runs: pd.DataFrame, chosen_ids, outdir: Path, formats=("png", "pdf")):
    """The sensitivity figure of one tuned study (one per task if it has several);
    returns ``[(name, caption, paths)]``. ``runs``: every run of the study, chosen or not;
    ``chosen_ids``: the run ids :func:`vgbench.report.tuning.choose` kept."""
    from vgbench.report import figure_files as ff
    from vgbench.report.style import entry_styles, style

    fields = tuning.tuned_fields(runs)
    if not fields:
        return []
    field = fields[0]
    runs = runs.assign(chosen=runs["run_id"].isin(set(chosen_ids)))
    tasks = sorted(runs["task"].dropna().unique())
    written = []
    with style():
        for task in tasks:
            rows = runs[runs["task"] == task]
            styles = entry_styles(rows)
            panels = ff._panels(rows)
            extra = ["chosen", "diverged / failed"]
            fig, axes = ff.facets(len(panels), legend=ff._legend_room(styles, rows, extra),
                                  sharey=True)
            for ax, (title, panel) in zip(axes, panels):
                plot_sensitivity(panel, field=field, ax=ax, colors=styles.colors,
                                 dashes=styles.dashes)
                ax.set_title(title)
            metric = "validation " + str(rows["target_metric"].iloc[0]).removeprefix("test_")
            axes[0].set_ylabel(metric)
            axes[0].plot([], [], "o", color="0.3", ms=3.5, label="chosen")
            if any(line.get_label() == "_lost" for ax in axes for line in ax.get_lines()):
                axes[0].add_line(Line2D([], [], marker="x", color="0.3", linestyle="none",
                                        label="diverged / failed"))
            ff.outer_labels(axes)
            ff.figure_legend(fig, axes, styles, rows["entry_axes"].iloc[0])
            suffix = f"_{ff.safe_name(str(task))}" if len(tasks) > 1 else ""
            name = f"{field}_sensitivity{suffix}"
            caption = CAPTION.format(field=field) + (f" ({task} task)" if suffix else "")
            written.append((name, caption, ff.save(fig, outdir / name, formats)))
    return written

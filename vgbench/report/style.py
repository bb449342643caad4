"""The one look of every vgbench figure: seaborn "ticks" at paper scale, colour-blind colours.

Entries keep one colour (and dash) across all the figures of a study: :func:`entry_styles`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

SEQUENTIAL = "viridis"
DASHES = ["-", (0, (5, 2)), (0, (1, 1.2)), (0, (5, 1.5, 1, 1.5)), (0, (5, 1.5, 1, 1.5, 1, 1.5)),
          (0, (2, 3))]
MAX_COLORS = 10      # seaborn's colour-blind palette


@contextmanager
def style():
    """The one style of every vgbench figure: seaborn "ticks" at paper scale, colour-blind."""
    rc = {**sns.axes_style("ticks"), **sns.plotting_context("paper", font_scale=0.9),
          "axes.prop_cycle": mpl.cycler(color=sns.color_palette("colorblind")),
          "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
          "image.cmap": SEQUENTIAL, "savefig.dpi": 150, "axes.titlesize": 8}
    with mpl.rc_context(rc):
        yield


@dataclass
class EntryStyles:
    """Colour and dash of each entry, and the legend that explains them."""

    colors: dict
    dashes: dict = field(default_factory=dict)
    legend: list = field(default_factory=list)   # [(handle, label)]


def entry_styles(runs: pd.DataFrame) -> EntryStyles:
    """Styles for the entries of one study (rows of ``runs``: ``entry``, ``entry_order``,
    ``entry_axes``). Up to ten entries: a colour each. More, with two or more axes: colour by
    one axis and dashes by the rest, where that fits in ten colours and six dashes."""
    entries = runs.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    axes = [a for a in str(runs["entry_axes"].iloc[0]).split(" / ") if a] if len(runs) else []
    if len(entries) > MAX_COLORS and len(axes) > 1:
        parts = [e.split(" / ") for e in entries]
        if all(len(p) == len(axes) for p in parts):
            for i in range(len(axes)):
                hues = list(dict.fromkeys(p[i] for p in parts))
                rests = list(dict.fromkeys(" / ".join(p[:i] + p[i + 1:]) for p in parts))
                if len(hues) <= MAX_COLORS and len(rests) <= len(DASHES):
                    return _factored(entries, parts, i, hues, rests, axes)
    palette = sns.color_palette("colorblind" if len(entries) <= MAX_COLORS else "husl",
                                len(entries))
    colors = dict(zip(entries, palette))
    return EntryStyles(colors, {}, [(Line2D([], [], color=c), e) for e, c in colors.items()])


def _factored(entries, parts, i, hues, rests, axes) -> EntryStyles:
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    dash = dict(zip(rests, DASHES))
    colors = {e: palette[p[i]] for e, p in zip(entries, parts)}
    dashes = {e: dash[" / ".join(p[:i] + p[i + 1:])] for e, p in zip(entries, parts)}
    blank = Line2D([], [], linestyle="none")
    legend = [(blank, f"{axes[i]}:")] + [(Line2D([], [], color=c), h) for h, c in palette.items()]
    legend += [(blank, " / ".join(axes[:i] + axes[i + 1:]) + ":")]
    legend += [(Line2D([], [], color="0.3", linestyle=d), r) for r, d in dash.items()]
    return EntryStyles(colors, dashes, legend)


def palette(df: pd.DataFrame, hue: str) -> dict:
    """Colour of each ``hue`` value: in entry order for entries, sorted otherwise."""
    if hue == "entry" and "entry_order" in df:
        levels = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    else:
        levels = sorted(df[hue].dropna().unique(), key=str)
    colors = sns.color_palette("colorblind" if len(levels) <= MAX_COLORS else "husl", len(levels))
    return dict(zip(levels, colors))

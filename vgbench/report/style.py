"""The one look of every vgbench figure: seaborn "ticks" at paper scale, colour-blind colours.

Entries keep one colour (and dash) across all the figures of a study: :func:`entry_styles`.
"""

from __future__ import annotations

import itertools
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
          "image.cmap": SEQUENTIAL, "savefig.dpi": 150, "axes.titlesize": 8,
          # titles just above the panel, where the fixed margins leave room for them; left
          # automatic, every draw measures the y tick labels of every titled panel again
          "axes.titley": 1.0}
    with mpl.rc_context(rc):
        yield


@dataclass
class EntryStyles:
    """Colour and dash of each entry, and the legend that explains them."""

    colors: dict
    dashes: dict = field(default_factory=dict)
    legend: list = field(default_factory=list)   # [(handle, label)]
    # legend label -> the entries it stands for (a colour of a factored legend stands for
    # several); a label not here (an axis heading) is kept while anything under it is drawn
    members: dict = field(default_factory=dict)
    title: str | None = None     # the legend's title, where it is not the entry axes

    def shown(self, drawn: set) -> list:
        """The legend's ``(handle, label)`` pairs for what is ``drawn`` (entry labels): an
        entry, a colour or a dash that no panel drew is left out, and so is a heading with
        nothing left under it."""
        kept = [(h, t) for h, t in self.legend
                if t not in self.members or self.members[t] & drawn]
        headings = [i for i, (_, t) in enumerate(kept) if t not in self.members]
        return [pair for i, pair in enumerate(kept) if i not in headings
                or (i + 1 < len(kept) and (i + 1) not in headings)]


def entry_styles(runs: pd.DataFrame) -> EntryStyles:
    """Styles for the entries of one study (rows of ``runs``: ``entry``, ``entry_order``,
    ``entry_axes``). Up to ten entries: a colour each. More, with two or more axes: colour by
    some axes and dashes by the others, where that fits in ten colours and six dashes (of the
    splits that fit, the one with the most colours)."""
    entries = runs.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    axes = [a for a in str(runs["entry_axes"].iloc[0]).split(" / ") if a] if len(runs) else []
    if len(entries) > MAX_COLORS and len(axes) > 1:
        parts = [e.split(" / ") for e in entries]
        if all(len(p) == len(axes) for p in parts):
            split = _best_split(parts, len(axes))
            if split is not None:
                return _factored(entries, parts, split, axes)
    palette = sns.color_palette("colorblind" if len(entries) <= MAX_COLORS else "husl",
                                len(entries))
    colors = dict(zip(entries, palette))
    return EntryStyles(colors, {}, [(Line2D([], [], color=c), e) for e, c in colors.items()],
                       {e: {e} for e in entries})


def _pick(part, index) -> str:
    return " / ".join(part[i] for i in index)


def _best_split(parts, n_axes: int):
    """The axes (indices) to colour by: their value combinations fit the colours and the
    other axes' combinations fit the dashes; the most colours wins, then the fewest axes."""
    fits = []
    for size in range(1, n_axes):
        for index in itertools.combinations(range(n_axes), size):
            rest = tuple(i for i in range(n_axes) if i not in index)
            hues = len({_pick(p, index) for p in parts})
            if hues <= MAX_COLORS and len({_pick(p, rest) for p in parts}) <= len(DASHES):
                fits.append((-hues, size, index))
    return min(fits)[2] if fits else None


def _factored(entries, parts, index, axes) -> EntryStyles:
    rest = tuple(i for i in range(len(axes)) if i not in index)
    hues = list(dict.fromkeys(_pick(p, index) for p in parts))
    rests = list(dict.fromkeys(_pick(p, rest) for p in parts))
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    dash = dict(zip(rests, DASHES))
    colors = {e: palette[_pick(p, index)] for e, p in zip(entries, parts)}
    dashes = {e: dash[_pick(p, rest)] for e, p in zip(entries, parts)}
    blank = Line2D([], [], linestyle="none")
    legend = [(blank, _pick(axes, index) + ":")]
    legend += [(Line2D([], [], color=c), h) for h, c in palette.items()]
    legend += [(blank, _pick(axes, rest) + ":")]
    legend += [(Line2D([], [], color="0.3", linestyle=d), r) for r, d in dash.items()]
    members = {h: {e for e, p in zip(entries, parts) if _pick(p, index) == h} for h in hues}
    members.update({r: {e for e, p in zip(entries, parts) if _pick(p, rest) == r} for r in rests})
    return EntryStyles(colors, dashes, legend, members)


def split_styles(entries: list, parts: list, colour_index: tuple, axes: list) -> EntryStyles:
    """A colour per value combination of the ``colour_index`` axes of each entry (``parts``:
    its axis values), for figures whose panels already separate the other axes."""
    keys = [_pick(p, colour_index) for p in parts]
    hues = list(dict.fromkeys(keys))
    palette = dict(zip(hues, sns.color_palette("colorblind" if len(hues) <= MAX_COLORS
                                               else "husl", len(hues))))
    colors = {e: palette[k] for e, k in zip(entries, keys)}
    members = {h: {e for e, k in zip(entries, keys) if k == h} for h in hues}
    return EntryStyles(colors, {}, [(Line2D([], [], color=c), h) for h, c in palette.items()],
                       members, _pick(axes, colour_index))


def palette(df: pd.DataFrame, hue: str) -> dict:
    """Colour of each ``hue`` value: in entry order for entries, sorted otherwise."""
    if hue == "entry" and "entry_order" in df:
        levels = df.drop_duplicates("entry").sort_values("entry_order")["entry"].tolist()
    else:
        levels = sorted(df[hue].dropna().unique(), key=str)
    colors = sns.color_palette("colorblind" if len(levels) <= MAX_COLORS else "husl", len(levels))
    return dict(zip(levels, colors))

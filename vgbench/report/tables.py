"""Paper tables of a study: LaTeX (booktabs) and Markdown, each with a provenance footer.

One table per task. Rows are the leaderboard's entries in rank order; columns are the final
metric (mean ± std over the seeds that finished, best per column in bold) at each value of the
frontier axis, then, at the headline setting, the success count, the trainability frontier,
|log10 attenuation| at initialisation and the paired comparison with the baseline entry.
The LaTeX needs only ``\\usepackage{booktabs}``; it is meant to be ``\\input`` into a paper.
The footer says which code, grid, seeds and machine produced the numbers (read from the
records, not from the machine that builds the report, so a rebuild gives the same text).
The theory study's agreement table is written here too (:func:`theory_table_text`); its numbers
come from :mod:`vgbench.report.theory`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from vgbench.report.table_layout import (
    Placed,
    float_text,
    split_to_fit,
    tabular_width,
    with_columns,
)

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text) -> str:
    """``text`` with LaTeX's special characters escaped (and only ASCII left)."""
    text = "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
    return text.encode("ascii", "replace").decode("ascii")


@dataclass(frozen=True)
class Dialect:
    """How one output format writes the few things the tables need."""

    escape: Callable[[str], str]
    bold: Callable[[str], str]
    code: Callable[[str], str]
    pm: str
    infinity: str
    missing: str
    dagger: str
    ddagger: str
    geq: str
    seed_range: str
    sci: Callable[[str, int], str]
    small: Callable[[str], str]
    arrow: str
    delta: str
    log_a: str
    percent: str
    ref: Callable[[str, str], str]   # (label, words for a format without references)


LATEX = Dialect(escape=latex_escape, bold=lambda s: rf"{{\bfseries\boldmath {s}}}",
                code=lambda s: rf"\texttt{{{latex_escape(s)}}}", pm=r"$\pm$",
                infinity=r"$\infty$", missing="--", dagger=r"$^\dagger$", ddagger=r"$^\ddagger$",
                geq=r"$\geq$", seed_range="--", sci=lambda m, e: rf"${m}\times10^{{{e}}}$",
                small=lambda s: rf"{{\scriptsize {s}}}", arrow=r"$\to$", delta=r"$\Delta$",
                log_a=r"$\log_{10} a$", percent=r"\%",
                ref=lambda label, _: rf"Table~\ref{{tab:{label}}}")
MARKDOWN = Dialect(escape=lambda s: str(s).replace("|", r"\|"), bold=lambda s: f"**{s}**",
                   code=lambda s: f"`{s}`", pm="±", infinity="∞", missing="–", dagger="†",
                   ddagger="‡", geq="≥", seed_range="–", sci=lambda m, e: f"{m}e{e}", small=lambda s: s,
                   arrow="→", delta="Δ", log_a="log10 a", percent="%",
                   ref=lambda _, words: words)


@dataclass(frozen=True)
class NumberFormat:
    """How every number of one column is written: fixed point with ``decimals`` digits, or
    scientific (``decimals`` None) with two decimals in the mantissa."""

    decimals: int | None = 3

    @classmethod
    def of(cls, values, *, most_decimals: int = 4, decades: float = 3.0) -> "NumberFormat":
        """The one format of a column holding ``values``: fixed point with the decimals that
        give its smallest nonzero magnitude 2 significant digits (and its largest 3), where
        that needs at most ``most_decimals`` and the column spans under ``decades`` decades;
        scientific otherwise."""
        sizes = [abs(float(v)) for v in values if v is not None and np.isfinite(float(v))]
        sizes = [v for v in sizes if v > 0]
        if not sizes:
            return cls(3)
        small, large = min(sizes), max(sizes)
        decimals = max(1 - math.floor(math.log10(small)), 2 - math.floor(math.log10(large)), 0)
        if decimals > most_decimals or large >= 1e5 or large / small >= 10 ** decades:
            return cls(None)
        return cls(decimals)


def number(x, dialect: Dialect, decimals: int | NumberFormat | None = None,
           sign: bool = False) -> str:
    """A number for a table in its column's format (:class:`NumberFormat`, or fixed
    ``decimals``); a lone number (``decimals`` None) gets the format of a column of one."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return dialect.missing
    x = float(x)
    if math.isinf(x):
        return ("$-$" if dialect is LATEX else "−") * (x < 0) + "+" * (sign and x > 0) \
            + dialect.infinity
    form = decimals if isinstance(decimals, NumberFormat) else \
        NumberFormat.of([x]) if decimals is None else NumberFormat(decimals)
    if form.decimals is None:
        mantissa, exponent = f"{x:{'+' if sign else ''}.2e}".split("e")
        return dialect.sci(mantissa, int(exponent))
    text = f"{x:{'+' if sign else ''}.{form.decimals}f}"
    return text.replace("-", "$-$", 1) if dialect is LATEX else text.replace("-", "−", 1)


def mean_std(mean, std, dialect: Dialect, form: NumberFormat | None = None) -> str:
    """``mean ± std`` in the mean's format: the std at the mean's decimals, or, scientific,
    both over the mean's power of ten: ``(2.64 ± 2.10)×10^-4``."""
    if mean is None or np.isnan(mean):
        return dialect.missing
    form = form or NumberFormat.of([mean])
    has_std = std is not None and not np.isnan(std)
    if form.decimals is None and np.isfinite(mean) and mean != 0:
        mantissa, exponent = f"{float(mean):.2e}".split("e")
        if not has_std:
            return dialect.sci(mantissa, int(exponent))
        spread = f"{float(std) / 10 ** int(exponent):.2f}"
        if dialect is LATEX:
            return rf"$({mantissa} \pm {spread})\times10^{{{int(exponent)}}}$"
        return f"({mantissa.replace('-', '−')} ± {spread})e{int(exponent)}"
    form = form if form.decimals is not None else NumberFormat(3)
    text = number(mean, dialect, form)
    if has_std:
        text += " " + dialect.small(f"{dialect.pm} {number(std, dialect, form)}")
    return text


def seed_text(seeds, dialect: Dialect) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0-3, 7"`` (with the dialect's dash)."""
    seeds = sorted({int(s) for s in seeds})
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(str(s) if s == start else f"{start}{dialect.seed_range}{s}")
            start = None
    return ", ".join(parts)


def provenance(runs: pd.DataFrame) -> dict[str, str]:
    """Version, commit, grid hash, seeds, dates, backend and device of ``runs`` (text values,
    several values joined by ", "; "unknown" where the records do not say)."""
    def values(column, shorten=None):
        if column not in runs:
            return "unknown"
        found = sorted({str(v) for v in runs[column].dropna() if str(v)})
        found = [shorten(v) for v in found] if shorten else found
        return ", ".join(found) if found else "unknown"

    dates = sorted({str(c)[:10] for c in runs.get("created", pd.Series(dtype=str)).dropna()})
    devices = sorted({f"{b} ({k} x{_count(c)})" for b, k, c in zip(
        runs.get("env_backend", ["unknown"] * len(runs)),
        runs.get("env_device_kind", ["unknown"] * len(runs)),
        runs.get("env_device_count", [None] * len(runs)))})
    per_run = runs.groupby("run_id")["seed"].nunique()
    return {
        "vgbench": values("vgbench_version"), "commit": values("env_git_commit", _short_commit),
        "program": values("env_program_fingerprint"),
        "grid": values("grid_hash"), "seeds": list(runs["seed"].unique()),
        "seeds_per_run": "/".join(str(n) for n in sorted(per_run.unique())),
        "date": dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "unknown",
        "device": ", ".join(devices) if devices else "unknown", "jax": values("env_jax"),
        "runs": str(runs["run_id"].nunique()),
    }


def provenance_text(runs: pd.DataFrame, dialect: Dialect) -> str:
    p = provenance(runs)
    protocol = ""
    if "tuning_rule" in runs and runs["tuning_rule"].notna().any():
        grids = [f"{c[:-5]} {' or '.join(runs[c].dropna().unique())}" for c in runs.columns
                 if c.endswith("_grid")]
        protocol = (f"tuned on validation ({dialect.escape('; '.join(grids))}, per entry and "
                    f"setting); ")
    return (f"{protocol}vgbench {dialect.escape(p['vgbench'])}; commit {dialect.code(p['commit'])}"
            f"{'' if p['program'] == 'unknown' else ' (program ' + dialect.code(p['program']) + ')'}; "
            f"grid {dialect.code(p['grid'])}; {p['runs']} run{'s' * (p['runs'] != '1')}, seeds "
            f"{seed_text(p['seeds'], dialect)} ({p['seeds_per_run']} per run); run "
            f"{dialect.escape(p['date'])}; {dialect.escape(p['device'])}; "
            f"JAX {dialect.escape(p['jax'])}.")


@dataclass
class Table:
    """One table, already formatted for one dialect: ``groups`` are column spans
    ``(text, first, last)`` (1-based) for a line above the header."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    label: str
    groups: list[tuple[str, int, int]]
    short: str = ""
    text_columns: int = 1
    align: str = ""   # one of l, r, c per column; default: text columns left, the others right

    def alignment(self) -> str:
        return self.align or "l" * self.text_columns + "r" * (len(self.header) - self.text_columns)


def _info(board: pd.DataFrame, dialect: Dialect) -> dict:
    first = board.iloc[0]
    axis = first["frontier_axis"] if isinstance(first["frontier_axis"], str) else None
    target = "" if np.isnan(first["target"]) else f"; target {_value_text(first['target'])}"
    return {"axis": axis, "at": first["at"], "higher": bool(first["higher_is_better"]),
            "metric": str(first["metric"]).replace("_", " "), "target": target,
            "where": f"Study {dialect.code(first['study'])}, task {dialect.code(first['task'])}",
            "direction": "higher" if first["higher_is_better"] else "lower",
            "entry": dialect.escape(str(first["entry_axes"] or "entry")),
            "rule": _rule_text(board, dialect),
            "label": re.sub(r"[^A-Za-z0-9-]+", "-", f"vgbench-{first['study']}-{first['task']}"),
            "study": str(first["study"]), "task": str(first["task"])}


def _rule_text(board: pd.DataFrame, dialect: Dialect) -> str:
    """" (dagger)" for one baseline entry; for matched baselines, which axes they fix."""
    bases = {b for b in board["baseline_entry"] if isinstance(b, str)}
    if len(bases) <= 1:
        return f" ({dialect.dagger})"
    return (f" with the same other axes and {dialect.escape(board['baseline_rule'].iloc[0])} "
            f"({dialect.dagger})")


def tuned(row) -> list[tuple[str, float, str]]:
    """``(field, chosen value, grid text)`` of each tuned field of a leaderboard or setting row."""
    keys = row.index if hasattr(row, "index") else row.keys()
    return [(k[:-5], row[k[:-5]], row[k]) for k in keys
            if k.endswith("_grid") and k[:-5] in keys and isinstance(row[k], str)]


def _edge_mark(row, dialect: Dialect) -> str:
    """The mark of a value chosen at the edge of its grid ('' otherwise); an entry that learned
    nothing at any value is marked as at chance instead."""
    get = row.get if hasattr(row, "get") else (lambda k: None)
    if _flag(get("tuned_at_chance")):
        return " (chance)"
    return dialect.ddagger if _flag(get("tuned_at_edge")) else ""


def _flag(value) -> bool:
    return isinstance(value, (bool, np.bool_)) and bool(value)


def _chosen_text(row, dialect: Dialect) -> str:
    return ", ".join(f"{dialect.escape(f)} {_value_text(v)}" for f, v, _ in tuned(row)) + \
        _edge_mark(row, dialect)


def grids_text(rows: pd.DataFrame, field: str, axis: str | None) -> str:
    """``{...}``, or, where settings were tried at different values, each grid with the values
    of the frontier axis it applies to: ``{0.1, 0.3} at depth 2, 4; {0.01, 0.03} at depth 32``."""
    column = f"{field}_grid"
    distinct = [str(g) for g in rows[column].dropna().unique()]
    if len(distinct) <= 1 or axis is None or "frontier_value" not in rows:
        return "; ".join(distinct)
    grids = rows.dropna(subset=[column]).groupby(column, sort=False)["frontier_value"]
    parts = sorted(((sorted(v.dropna().unique()), g) for g, v in grids), key=lambda p: p[0])
    return "; ".join(f"{g} at {axis} {', '.join(_int_text(x) for x in vals)}" for vals, g in parts)


def _tuning_caption(board: pd.DataFrame, dialect: Dialect, settings: pd.DataFrame | None = None) -> str:
    """The protocol, for the captions of a tuned study ('' for an untuned one)."""
    first = board.iloc[0]
    fields = tuned(first)
    if not fields:
        return ""
    axis = first["frontier_axis"] if isinstance(first["frontier_axis"], str) else None
    rows = board if settings is None else settings
    grids = "; ".join(f"{dialect.escape(f)} from {dialect.escape(grids_text(rows, f, axis))}"
                      for f, _, _ in fields)
    per = f" and {dialect.escape(axis)}" if axis else ""
    edge = ""
    if "tuned_at_edge" in rows and rows["tuned_at_edge"].fillna(False).astype(bool).any():
        edge = (f" {dialect.ddagger}: still at an end of its range after the range was extended "
                f"up to a declared limit (the grid's tune.limits or extension budget): the best "
                f"value may lie beyond it.")
    if "tuned_at_chance" in rows and rows["tuned_at_chance"].fillna(False).astype(bool).any():
        edge += (" (chance): no value learned (validation loss above 0.9 times the trivial "
                 "predictor's at every value); the range was not extended.")
    seeds = ""
    if "same_seeds" in rows and not rows["same_seeds"].fillna(True).astype(bool).any() \
            and "tune_seed_text" in rows:
        seeds = (f" Chosen on tuning seeds {dialect.escape(rows['tune_seed_text'].iloc[0])}; "
                 f"every number shown comes from other seeds.")
    elif "same_seeds" in rows and rows["same_seeds"].fillna(False).astype(bool).any():
        seeds = " Chosen and reported on the same seeds (records made before confirmation runs)."
    return (f" Each entry at its own tuned value ({grids}), chosen per entry{per} on the "
            f"validation split: fewest diverged or failed seeds, then best mean final validation "
            f"metric, ties to the smaller value; test numbers are never used to choose.{seeds}{edge}")


def _metric_cell(setting, best: float | None, dialect: Dialect, form: NumberFormat) -> str:
    text = mean_std(setting["mean"], setting["std"], dialect, form)
    if best is not None and setting["mean"] == best:
        text = dialect.bold(text)
    lost = int(setting["n_diverged"] + setting["n_failed"])
    return text + (f" ({lost} failed)" if lost else "")


def _best(means, higher: bool) -> float | None:
    """The best mean, if there are at least two to choose from (bold marks a winner)."""
    means = np.asarray(means, dtype=float)
    if np.isfinite(means).sum() < 2:
        return None
    return float(np.nanmax(means) if higher else np.nanmin(means))


def _entry_cell(row, dialect: Dialect) -> str:
    return dialect.escape(row["entry"]) + (dialect.dagger if row["baseline"] else "")


def _lost(rows: pd.DataFrame) -> bool:
    return bool((rows["n_diverged"] + rows["n_failed"]).fillna(0).gt(0).any())


def _notes(dialect: Dialect, *, bold: bool, baseline: bool, failed: bool,
           bold_text: str = "best in bold") -> str:
    """The clauses that explain what a table's cells show, and only what they show."""
    notes = [bold_text] * bool(bold) + [f"{dialect.dagger} baseline entry"] * bool(baseline)
    notes += ["(k failed): seeds that diverged or failed"] * bool(failed)
    return "".join(f"; {n}" for n in notes)


def _short(info: dict, dialect: Dialect, what: str) -> str:
    """The list-of-tables caption: study, task, what the table shows."""
    return dialect.escape(f"{info['study']} ({info['task']}): {what}")


def _values_text(values, axis: str) -> str:
    return f"{axis} {', '.join(_int_text(v) for v in values)}"


def _part_names(values, every) -> tuple[str, str]:
    """(label suffix, short-caption suffix) of a part holding ``values`` of ``every``."""
    if list(values) == list(every):
        return "", ""
    first, last = _int_text(values[0]), _int_text(values[-1])
    return f"-{first}-{last}", f" {first} to {last}" if first != last else f" {first}"


def scaling_table(board: pd.DataFrame, settings: pd.DataFrame, dialect: Dialect,
                  values=None) -> Table:
    """The final metric of each entry at each of ``values`` (default: every value) of the
    frontier axis, and, with the largest value, the frontier. One number format for the whole
    table; the chosen tuned values are in :func:`chosen_table`."""
    info = _info(board, dialect)
    every = sorted(settings["frontier_value"].dropna().unique())
    values = every if values is None else list(values)
    shown = settings[settings["frontier_value"].isin(values) & settings["entry"].isin(board["entry"])]
    form = NumberFormat.of(shown["mean"])
    columns = [shown[shown["frontier_value"] == v] for v in values]
    bests = [_best(part["mean"], info["higher"]) for part in columns]
    # each entry's row of each column, looked up once (a table is built for every split tried)
    cells_of = [_first_rows(part) for part in columns]
    frontier = bool(values[-1] == every[-1])
    rows, bold = [], False
    for _, row in board.iterrows():
        cells = [_entry_cell(row, dialect)]
        for found, best in zip(cells_of, bests):
            here = found.get(row["entry"])
            cells.append(_metric_cell(here, best, dialect, form)
                         if here is not None else dialect.missing)
            bold |= here is not None and best is not None and here["mean"] == best
        if frontier:
            cells.append(_frontier_text(row, dialect))
        rows.append(cells)
    axis = dialect.escape(info["axis"])
    caption = (f"{info['where']}: final {dialect.escape(info['metric'])} against {axis} "
               f"({info['direction']} is better{info['target']}), mean {dialect.pm} std over the "
               f"seeds that finished"
               + _notes(dialect, bold=bold, baseline=board["baseline"].any(),
                        failed=_lost(shown), bold_text="best per column in bold") + ".")
    if frontier:
        censored = board["frontier_censored"].fillna(False).astype(bool) & board["frontier"].notna()
        one = board.get("frontier_one_seed", pd.Series(False, index=board.index))
        marks = [f"{dialect.geq}: the largest tried"] * bool(censored.any())
        marks += ["*: one seed's outcome decides it"] * bool(one.fillna(False).astype(bool).any())
        caption += (f" Frontier: the largest {axis} at which at least 2/3 of the seeds reach the "
                    f"target{' (' + '; '.join(marks) + ')' if marks else ''}.")
    if tuned(board.iloc[0]):
        fields = " and ".join(dialect.escape(f) for f, _, _ in tuned(board.iloc[0]))
        caption += (f" Each entry at its own {fields}, chosen per {axis} on the validation split "
                    f"({dialect.ref(info['label'] + '-chosen', 'see the chosen-values table')}).")
    label, short = _part_names(values, every)
    header = [info["entry"]] + [_int_text(v) for v in values] + ["frontier"] * frontier
    span = (dialect.escape(f"{info['metric']} at {info['axis']}"), 2, 1 + len(values))
    return Table(caption, header, rows, info["label"] + "-scaling" + label, [span],
                 _short(info, dialect, f"{info['metric']} against {info['axis']}") + short)


def _first_rows(frame: pd.DataFrame) -> dict:
    """entry -> its first row of ``frame`` (a Series), as ``frame[frame.entry == e].iloc[0]``."""
    found = {}
    for _, row in frame.iterrows():
        found.setdefault(row["entry"], row)
    return found


def _frontier_text(row, dialect: Dialect) -> str:
    f = row["frontier"]
    one = "*" if _flag(row.get("frontier_one_seed")) else ""
    return (dialect.missing + one if np.isnan(f) else
            (dialect.geq if row["frontier_censored"] else "") + _int_text(f) + one)


def chosen_table(board: pd.DataFrame, settings: pd.DataFrame, dialect: Dialect,
                 values=None) -> Table:
    """The tuned value(s) chosen for each entry at each of ``values`` of the frontier axis."""
    info = _info(board, dialect)
    every = sorted(settings["frontier_value"].dropna().unique())
    values = every if values is None else list(values)
    shown = settings[settings["frontier_value"].isin(values) & settings["entry"].isin(board["entry"])]
    fields = [f for f, _, _ in tuned(board.iloc[0])]
    rows = []
    for _, row in board.iterrows():
        cells = [_entry_cell(row, dialect)]
        for v in values:
            here = shown[(shown["frontier_value"] == v) & (shown["entry"] == row["entry"])]
            cells.append(_chosen_cell(here.iloc[0], dialect, len(fields) > 1)
                         if len(here) else dialect.missing)
        rows.append(cells)
    names = " and ".join(dialect.escape(f) for f in fields)
    caption = (f"{info['where']}: the {names} chosen for each entry at each "
               f"{dialect.escape(info['axis'])}"
               + _notes(dialect, bold=False, baseline=board["baseline"].any(), failed=False) + "."
               + _tuning_caption(board, dialect, shown))
    label, short = _part_names(values, every)
    header = [info["entry"]] + [_int_text(v) for v in values]
    span = (dialect.escape(f"{names} at {info['axis']}"), 2, 1 + len(values))
    return Table(caption, header, rows, info["label"] + "-chosen" + label, [span],
                 _short(info, dialect, f"chosen {'/'.join(fields)} against {info['axis']}") + short)


def _chosen_cell(setting, dialect: Dialect, named: bool) -> str:
    return ", ".join((f"{dialect.escape(f)} " if named else "") + _value_text(v)
                     for f, v, _ in tuned(setting)) + _edge_mark(setting, dialect)


COMPARISON_UNITS = (("tuned", "metric", "success"), ("attenuation", "limited"), ("delta",))
_UNIT_NAMES = {"metric": "{metric}", "attenuation": "attenuation", "delta": "paired comparison"}


def comparison_table(board: pd.DataFrame, dialect: Dialect, columns=None, *,
                     chosen_elsewhere: bool = False, per_value: bool = False) -> Table:
    """The leaderboard at the headline setting (or at the one value of the frontier axis its
    rows share): tuned value, metric, success, attenuation, paired comparison with the
    baseline; ``columns`` picks some of :data:`COMPARISON_UNITS`' names (default: all).
    ``chosen_elsewhere``: the tuning protocol is in the chosen-values table; ``per_value``: one
    of several comparisons, one per value of the frontier axis (its label says which)."""
    info = _info(board, dialect)
    columns = [c for unit in COMPARISON_UNITS for c in unit] if columns is None else list(columns)
    best = _best(board["mean"], info["higher"])
    form = NumberFormat.of(board["mean"])
    fields = [f for f, _, _ in tuned(board.iloc[0])] if "tuned" in columns else []
    show = set(columns) - ({"success"} if not board["success"].astype(bool).any() else set())
    deltas = _delta_cells(board, dialect)
    rows = []
    for (_, row), delta in zip(board.iterrows(), deltas):
        cells = [_entry_cell(row, dialect)]
        cells += [_value_text(v) + _edge_mark(row, dialect) for _, v, _ in tuned(row)] * bool(fields)
        cells += [_metric_cell(row, best, dialect, form)] * ("metric" in show)
        cells += [str(row["success"])] * ("success" in show)
        cells += [f"{_signed(row.get('log10_attenuation_init'), dialect)} {dialect.arrow} "
                  f"{_signed(row.get('log10_attenuation_final'), dialect)}"] * ("attenuation" in show)
        cells += [dialect.escape(row.get("limited_by") or "") or dialect.missing] * ("limited" in show)
        cells += list(delta) * ("delta" in show)
        rows.append(cells)
    at = (f" at {dialect.escape(info['axis'])} {_int_text(info['at'])}"
          if info["axis"] and not np.isnan(info["at"]) else "")
    bold = "metric" in show and best is not None
    caption = f"{info['where']}{at}: "
    if "metric" in show:
        caption += (f"final {dialect.escape(info['metric'])} ({info['direction']} is better), "
                    f"mean {dialect.pm} std over the seeds that finished")
    else:
        caption += f"final {dialect.escape(info['metric'])}: how the entries got there"
    caption += _notes(dialect, bold=bold, baseline=board["baseline"].any() and "delta" not in show,
                      failed="metric" in show and _lost(board)) + "."
    if "success" in show:
        caption += f" Success: seeds reaching the target{info['target'].replace('; target', '')}."
    if "attenuation" in show:
        caption += (f" {dialect.log_a}: log10 of the backpropagated signal at the input end over "
                    f"the output end, at initialisation {dialect.arrow} end of training (negative: "
                    f"vanishing; positive: exploding).")
    if "limited" in show:
        caption += (" Limited by: why a setting missed the target (vanished or exploded past 1.2 "
                    "decades at the end, diverged, budget: still improving at the end, plateau: "
                    "neither).")
    if "delta" in show:
        caption += _delta_caption(board, deltas, info, dialect)
    if fields:
        marks = any(_edge_mark(row, dialect) for _, row in board.iterrows())
        caption += (f" {dialect.escape(' and '.join(fields))}: chosen on the validation split"
                    f"{', marks' * marks} as in "
                    f"{dialect.ref(info['label'] + '-chosen', 'the chosen-values table')}."
                    if chosen_elsewhere else _tuning_caption(board, dialect))
    elif tuned(board.iloc[0]):
        caption += (f" Each entry at its own tuned "
                    f"{dialect.escape(' and '.join(f for f, _, _ in tuned(board.iloc[0])))}.")
    header = [info["entry"], *(dialect.escape(f) for f in fields)]
    header += [dialect.escape(info["metric"])] * ("metric" in show) + ["success"] * ("success" in show)
    header += [dialect.log_a] * ("attenuation" in show) + ["limited by"] * ("limited" in show)
    header += [f"{dialect.delta} vs. baseline", "P(better)"] * ("delta" in show)
    align = "l" + "r" * (len(header) - 1)
    if "limited" in show:   # the one column of words
        at_column = len(fields) + 1 + ("metric" in show) + ("success" in show) + ("attenuation" in show)
        align = align[:at_column] + "l" + align[at_column + 1:]
    what = ", ".join(_UNIT_NAMES[c].format(metric=info["metric"]) for c in columns
                     if c in _UNIT_NAMES and c in show)
    suffix = "" if len(columns) == sum(map(len, COMPARISON_UNITS)) else "-" + "-".join(
        c for c in columns if c in _UNIT_NAMES)
    at_label = f"-{_int_text(info['at'])}" if per_value else ""
    at_short = f" at {info['axis']} {_int_text(info['at'])}" if at else ""
    return Table(caption, header, rows, info["label"] + at_label + suffix, [],
                 _short(info, dialect, what + at_short), align=align)


def _delta_cells(board: pd.DataFrame, dialect: Dialect) -> list[tuple[str, str]]:
    """(Δ with its interval or its values, P(better)) of each row, one format for all Δs."""
    form = NumberFormat.of(board["diff"])   # its interval and values beside it: the same
    cells = []
    for _, row in board.iterrows():
        if row["baseline"] or np.isnan(row["p_improve"]):
            cells.append((dialect.missing, dialect.missing))
            continue
        p_better = number(row["p_improve"], dialect, 2)
        if np.isnan(row["diff"]):   # no seed on which both finished: P(better) still counts
            cells.append((dialect.missing, p_better))
        elif np.isnan(row["diff_ci_low"]):   # too few pairs, or no spread: the differences
            found = [float(v) for v in str(row.get("diff_values") or "").split("; ") if v]
            mid = number(row["diff"], dialect, form, sign=True)
            if len(set(found)) == 1 and len(found) > 1:
                text = f"(all {len(found)})"
            else:
                text = "(" + ", ".join(number(v, dialect, form, sign=True) for v in found) + ")"
            cells.append((f"{mid} " + dialect.small(text), p_better))
        else:
            low, mid, high = (number(row[c], dialect, form, sign=True)
                              for c in ("diff_ci_low", "diff", "diff_ci_high"))
            cells.append((f"{mid} " + dialect.small(f"[{low}, {high}]"), p_better))
    return cells


def _delta_caption(board, deltas, info: dict, dialect: Dialect) -> str:
    texts = [d for d, _ in deltas]
    kinds = []
    if any("[" in t for t in texts):
        kinds.append(f"with its 95{dialect.percent} bootstrap interval from 5 or more pairs")
    if any("(all " in t for t in texts):
        kinds.append("(all k): the same difference on all k pairs")
    if any("(" in t and "(all " not in t for t in texts):
        kinds.append("in brackets: the differences themselves, where too few pairs for an interval")
    return (f" {dialect.delta}: paired difference from the baseline{info['rule']} on shared seeds"
            f"{', ' + '; '.join(kinds) if kinds else ''}; P(better): share of those seeds on "
            f"which the entry beats the baseline (ties count half, failures lose).")


def study_parts(board: pd.DataFrame, settings: pd.DataFrame,
                dialect: Dialect) -> list[tuple[Callable[[list], Table], list]]:
    """Per task, the tables of a study as ``(build, units)``: ``build(units)`` makes the table
    of those units (values of the frontier axis, or comparison columns), so that a table too
    wide for the page can be made again in parts. Per task: the scaling table and the chosen
    values (where entries were run at two or more values of the frontier axis), then the
    comparison at the headline setting; a study whose entries each ran at one value of the
    axis gets one comparison per value instead."""
    parts = []
    for task, task_board in board.groupby("task", sort=True):
        task_settings = settings[settings["task"] == task]
        info = _info(task_board, dialect)
        per_entry = task_settings.groupby("entry")["frontier_value"].nunique()
        scaling = info["axis"] is not None and per_entry.max() >= 2 if len(per_entry) else False
        units = sorted(task_settings["frontier_value"].dropna().unique())
        if scaling:
            parts.append((partial(scaling_table, task_board, task_settings, dialect), units))
            if tuned(task_board.iloc[0]):
                parts.append((partial(chosen_table, task_board, task_settings, dialect), units))
        comparisons = [task_board]
        if info["axis"] is not None and not scaling and task_board["at"].nunique() > 1:
            comparisons = [rows for _, rows in task_board.groupby("at", sort=True)]
        for rows in comparisons:
            parts.append((_comparison_builder(rows, dialect, scaling, len(comparisons) > 1),
                          list(COMPARISON_UNITS)))
    return parts


def _comparison_builder(board: pd.DataFrame, dialect: Dialect, chosen_elsewhere: bool,
                        per_value: bool) -> Callable[[list], Table]:
    def build(units):
        return comparison_table(board, dialect, [c for unit in units for c in unit],
                                chosen_elsewhere=chosen_elsewhere, per_value=per_value)
    return build


def study_tables(board: pd.DataFrame, settings: pd.DataFrame, dialect: Dialect) -> list[Table]:
    """The tables of a study, whole (see :func:`study_parts`)."""
    return [build(units) for build, units in study_parts(board, settings, dialect)]


LATEX_PREAMBLE = [
    "% Generated by `vgbench report` from run records; do not edit by hand.",
    "% Needs \\usepackage{booktabs} (texlive-latex-recommended) and nothing else. Floats are",
    "% sized for a two-column page (\\columnwidth 3.25in, \\textwidth 6.75in, 10pt): table",
    "% where a table fits the column, table* where it needs the page, wider ones split."]


def _width(table: Table) -> float:
    return tabular_width(table.header, table.rows)


def placed_tables(board: pd.DataFrame, settings: pd.DataFrame) -> list[Placed]:
    """The LaTeX tables of a study, each in the float it fits (split where none is wide enough)."""
    return [placed for build, units in study_parts(board, settings, LATEX)
            for placed in split_to_fit(build, units, _width)]


def markdown_block(table: Table) -> list[str]:
    """One pipe table under its short and long caption (a spanning header becomes a prefix of
    each column's)."""
    header = list(table.header)
    for text, first, last in table.groups:  # Markdown has no spanning header: prefix
        axis = text.rsplit(" at ", 1)[-1]
        header[first - 1:last] = [f"{axis} {h}" for h in header[first - 1:last]]
    align = [{"l": ":---", "r": "---:", "c": ":---:"}[a] for a in table.alignment()]
    return ([f"**{table.short}.** {table.caption}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in table.rows] + [""])


def latex_table(study_runs: pd.DataFrame, board: pd.DataFrame, settings: pd.DataFrame) -> str:
    """The LaTeX of one study: booktabs floats that fit the page, each with the provenance."""
    footer = provenance_text(study_runs, LATEX)
    return "\n".join(LATEX_PREAMBLE + [float_text(placed, footer)
                                       for placed in placed_tables(board, settings)])


def markdown_table(study_runs: pd.DataFrame, board: pd.DataFrame, settings: pd.DataFrame) -> str:
    """The Markdown of one study: its pipe tables, then the provenance."""
    parts = [f"# Study `{board['study'].iloc[0]}`", ""]
    for table in study_tables(board, settings, MARKDOWN):
        parts += markdown_block(table)
    parts += [f"_Provenance: {provenance_text(study_runs, MARKDOWN)}_", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------- mean-field theory

THEORY_TABLE_CAPTION = (
    "Per-layer change of log10 |dL/dh_l| at initialization: mean-field prediction (1/2) log10 "
    "chi_1 against measurement (mean and 95 % t-interval over seeds; fitted over hidden layers "
    "{first}..L-{last}); agrees: within the tolerance of vgbench.report.theory (a no in bold).")


def theory_table_text(table: pd.DataFrame, runs: pd.DataFrame, dialect: Dialect, *,
                      window: slice, study: str) -> str:
    """The theory study's agreement table as Markdown or booktabs LaTeX (:data:`MARKDOWN`,
    :data:`LATEX`).

    Args:
      table: :func:`vgbench.report.theory.agreement_table`.
      runs: the study's ``runs`` frame, for the provenance.
      window: the hidden layers (0-based) the slopes were fitted over in the deepest run
        (:func:`vgbench.report.theory.fit_window`); the caption names them.
      study: the study's name, for the Markdown heading.
    """
    header = ["activation", "init", "width", "σw²", "σb²", "q*", "χ1", "predicted",
              "measured (95% CI)", "rel. error", "agrees"]
    if dialect is LATEX:
        header = ["activation", "init", "width", r"$\sigma_w^2$", r"$\sigma_b^2$", r"$q^*$",
                  r"$\chi_1$", "predicted", r"measured (95\% CI)", "rel. error", "agrees"]
    forms = {c: NumberFormat.of(table[c]) if len(table) else NumberFormat(3)
             for c in ("sigma_w2", "sigma_b2", "q_star")}
    lines = []
    for row in table.itertuples():
        interval = (f"{number(row.measured, dialect, 5)} [{number(row.ci_low, dialect, 5)}, "
                    f"{number(row.ci_high, dialect, 5)}]")
        rel = (dialect.missing if math.isnan(row.rel_error)
               else f"{number(100 * row.rel_error, dialect, 1)}{dialect.percent}")
        lines.append([dialect.escape(row.activation), dialect.escape(row.init), str(int(row.width)),
                      number(row.sigma_w2, dialect, forms["sigma_w2"]),
                      number(row.sigma_b2, dialect, forms["sigma_b2"]),
                      number(row.q_star, dialect, forms["q_star"]),
                      f"{row.chi1:.4f}", number(row.predicted_fit, dialect, 5), interval, rel,
                      "yes" if row.agrees else dialect.bold("no")])
    depth = int(table["depth"].max()) if len(table) else window.stop
    # L - last is the last layer fitted: the window leaves ``last`` out at the output end
    caption = THEORY_TABLE_CAPTION.format(first=window.start + 1, last=depth - window.stop)
    if not any(row[-1] == dialect.bold("no") for row in lines):
        caption = caption.replace(" (a no in bold)", "")
    footer = provenance_text(runs, dialect)
    table = Table(caption=dialect.escape(caption), header=header, rows=lines,
                  label="theory_agreement", groups=[], text_columns=2,
                  short=dialect.escape(f"{study}: mean-field prediction against measurement"))
    if dialect is LATEX:
        def build(columns):
            return with_columns(table, [0, 1, *columns],
                                label_suffix="" if columns[0] == 2 else f"-{columns[0]}")
        placed = split_to_fit(build, list(range(2, len(header))), _width)
        return "\n".join(LATEX_PREAMBLE + [float_text(p, footer) for p in placed])
    return "\n".join([f"# Study `{study}`: theory against measurement", ""]
                     + markdown_block(table) + [f"_Provenance: {footer}_", ""])


def _q_text(q: float, dialect) -> str:
    if math.isinf(q):
        return dialect.infinity
    return "0" if q == 0 else f"{q:.3g}"


def _short_commit(commit: str) -> str:
    """``"6b3b9728d87d...+dirty"`` -> ``"6b3b9728d87d+dirty"``: 12 hex digits, flags kept."""
    head, plus, flags = commit.partition("+")
    return head[:12] + plus + flags


def _signed(x, dialect: Dialect) -> str:
    """A signed attenuation in decades, one decimal: −4.6 (vanishing), +2.1 (exploding)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return dialect.missing
    return number(x, dialect, 1, sign=True)


def _value_text(x) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _int_text(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _count(value) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"

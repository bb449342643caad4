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
from typing import Callable

import numpy as np
import pandas as pd

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


LATEX = Dialect(escape=latex_escape, bold=lambda s: rf"\textbf{{{s}}}",
                code=lambda s: rf"\texttt{{{latex_escape(s)}}}", pm=r"$\pm$",
                infinity=r"$\infty$", missing="--", dagger=r"$^\dagger$", ddagger=r"$^\ddagger$",
                geq=r"$\geq$", seed_range="--", sci=lambda m, e: rf"${m}\times10^{{{e}}}$",
                small=lambda s: rf"{{\scriptsize {s}}}", arrow=r"$\to$", delta=r"$\Delta$",
                log_a=r"$\log_{10} a$", percent=r"\%")
MARKDOWN = Dialect(escape=lambda s: str(s).replace("|", r"\|"), bold=lambda s: f"**{s}**",
                   code=lambda s: f"`{s}`", pm="±", infinity="∞", missing="–", dagger="†",
                   ddagger="‡", geq="≥", seed_range="–", sci=lambda m, e: f"{m}e{e}", small=lambda s: s,
                   arrow="→", delta="Δ", log_a="log10 a", percent="%")


def number(x, dialect: Dialect, decimals: int | None = None, sign: bool = False) -> str:
    """A number for a table: fixed decimals in [0.001, 1000), scientific outside."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return dialect.missing
    x = float(x)
    if math.isinf(x):
        return ("$-$" if dialect is LATEX else "−") * (x < 0) + "+" * (sign and x > 0) \
            + dialect.infinity
    if decimals is None:
        decimals = _decimals(x)
    if decimals is None:
        mantissa, exponent = f"{x:{'+' if sign else ''}.2e}".split("e")
        return dialect.sci(mantissa, int(exponent))
    text = f"{x:{'+' if sign else ''}.{decimals}f}"
    return text.replace("-", "$-$", 1) if dialect is LATEX else text.replace("-", "−", 1)


def _decimals(x: float) -> int | None:
    size = abs(x)
    if size == 0 or 0.01 <= size < 1000:
        return 3
    return 4 if 0.001 <= size < 0.01 else None


def mean_std(mean, std, dialect: Dialect) -> str:
    if mean is None or np.isnan(mean):
        return dialect.missing
    decimals = _decimals(float(mean)) if np.isfinite(mean) else 3
    text = number(mean, dialect, decimals)
    if std is not None and not np.isnan(std):
        text += " " + dialect.small(f"{dialect.pm} {number(std, dialect, decimals)}")
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


def _info(board: pd.DataFrame, dialect: Dialect) -> dict:
    first = board.iloc[0]
    axis = first["frontier_axis"] if isinstance(first["frontier_axis"], str) else None
    target = "" if np.isnan(first["target"]) else f"; target {number(first['target'], dialect)}"
    return {"axis": axis, "at": first["at"], "higher": bool(first["higher_is_better"]),
            "metric": str(first["metric"]).replace("_", " "), "target": target,
            "where": f"Study {dialect.code(first['study'])}, task {dialect.code(first['task'])}",
            "direction": "higher" if first["higher_is_better"] else "lower",
            "entry": dialect.escape(str(first["entry_axes"] or "entry")),
            "rule": _rule_text(board, dialect),
            "label": re.sub(r"[^A-Za-z0-9-]+", "-", f"vgbench-{first['study']}-{first['task']}")}


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


def _metric_cell(setting, best: float | None, dialect: Dialect, chosen: bool = False) -> str:
    text = mean_std(setting["mean"], setting["std"], dialect)
    if best is not None and setting["mean"] == best:
        text = dialect.bold(text)
    lost = int(setting["n_diverged"] + setting["n_failed"])
    text += f" ({lost} failed)" if lost else ""
    if chosen and tuned(setting):
        text += " " + dialect.small(f"({_chosen_text(setting, dialect)})")
    return text


def _best(means, higher: bool) -> float | None:
    """The best mean, if there are at least two to choose from (bold marks a winner)."""
    means = np.asarray(means, dtype=float)
    if np.isfinite(means).sum() < 2:
        return None
    return float(np.nanmax(means) if higher else np.nanmin(means))


def scaling_table(board: pd.DataFrame, settings: pd.DataFrame, dialect: Dialect) -> Table | None:
    """The final metric of each entry at each value of the frontier axis, and the frontier."""
    info = _info(board, dialect)
    if info["axis"] is None:
        return None
    values = sorted(settings["frontier_value"].dropna().unique())
    columns = [settings[settings["frontier_value"] == v] for v in values]
    bests = [_best(part["mean"], info["higher"]) for part in columns]
    rows = []
    for _, row in board.iterrows():
        cells = [dialect.escape(row["entry"]) + (dialect.dagger if row["baseline"] else "")]
        for part, best in zip(columns, bests):
            here = part[part["entry"] == row["entry"]]
            cells.append(_metric_cell(here.iloc[0], best, dialect, chosen=True)
                         if len(here) else dialect.missing)
        f = row["frontier"]
        one = "*" if _flag(row.get("frontier_one_seed")) else ""
        cells.append(dialect.missing + one if np.isnan(f) else
                     (dialect.geq if row["frontier_censored"] else "") + _int_text(f) + one)
        rows.append(cells)
    axis = dialect.escape(info["axis"])
    caption = (f"{info['where']}: final {dialect.escape(info['metric'])} against {axis} "
               f"({info['direction']} is better{info['target']}), mean {dialect.pm} std over the "
               f"seeds that finished; best per column in bold; {dialect.dagger} baseline entry; "
               f"(k failed): seeds that diverged or failed. Frontier: the largest {axis} at which "
               f"at least 2/3 of the seeds reach the target ({dialect.geq}: the largest tried; *: one "
               f"seed's outcome decides it)."
               f"{' In brackets: the chosen value.' if tuned(board.iloc[0]) else ''}"
               f"{_tuning_caption(board, dialect, settings)}")
    header = [info["entry"]] + [_int_text(v) for v in values] + ["frontier"]
    span = (dialect.escape(f"{info['metric']} at {info['axis']}"), 2, 1 + len(values))
    return Table(caption, header, rows, info["label"] + "-scaling", [span])


def comparison_table(board: pd.DataFrame, dialect: Dialect) -> Table:
    """The leaderboard at the headline setting: metric, success, attenuation, paired test."""
    info = _info(board, dialect)
    best = _best(board["mean"], info["higher"])
    with_success = board["success"].astype(bool).any()
    fields = [f for f, _, _ in tuned(board.iloc[0])]
    rows = []
    for _, row in board.iterrows():
        cells = [dialect.escape(row["entry"]) + (dialect.dagger if row["baseline"] else "")]
        cells += [_value_text(v) + _edge_mark(row, dialect) for _, v, _ in tuned(row)]
        cells.append(_metric_cell(row, best, dialect))
        cells += [str(row["success"])] if with_success else []
        cells.append(f"{_signed(row.get('log10_attenuation_init'), dialect)} {dialect.arrow} "
                     f"{_signed(row.get('log10_attenuation_final'), dialect)}")
        cells.append(dialect.escape(row.get("limited_by") or "") or dialect.missing)
        if row["baseline"] or np.isnan(row["p_improve"]):
            cells += [dialect.missing, dialect.missing]
        elif np.isnan(row["diff"]):   # no seed on which both finished: P(better) still counts
            cells += [dialect.missing, number(row["p_improve"], dialect, 2)]
        elif np.isnan(row["diff_ci_low"]):   # too few pairs, or no spread: the differences
            values = str(row.get("diff_values") or "").split("; ")
            text = ", ".join(number(float(v), dialect, _decimals(abs(row["diff"])) or 3, sign=True)
                             for v in values if v)
            cells += [f"{number(row['diff'], dialect, _decimals(abs(row['diff'])), sign=True)} "
                      + dialect.small(f"({text})"), number(row["p_improve"], dialect, 2)]
        else:
            diff = [row["diff_ci_low"], row["diff"], row["diff_ci_high"]]
            decimals = _decimals(np.nanmax(np.abs(diff)))
            low, mid, high = (number(x, dialect, decimals, sign=True) for x in diff)
            cells += [f"{mid} " + dialect.small(f"[{low}, {high}]"),
                      number(row["p_improve"], dialect, 2)]
        rows.append(cells)
    at = (f" at {dialect.escape(info['axis'])} {_int_text(info['at'])}"
          if info["axis"] and not np.isnan(info["at"]) else "")
    caption = (f"{info['where']}{at}: final {dialect.escape(info['metric'])} "
               f"({info['direction']} is better), mean {dialect.pm} std over the seeds that "
               f"finished, best in bold; (k failed): seeds that diverged or failed. Success: "
               f"seeds reaching the target{info['target'].replace('; target', '')}. "
               f"{dialect.log_a}: log10 of the backpropagated signal at the input end over the "
               f"output end, at initialisation {dialect.arrow} end of training (negative: "
               f"vanishing; positive: exploding). Limited by: why a setting missed the target "
               f"(vanished or exploded past 1.2 decades at the end, diverged, budget: still "
               f"improving at the end, plateau: neither). "
               f"{dialect.delta}: paired difference from the baseline{info['rule']} on shared "
               f"seeds, with its 95{dialect.percent} bootstrap interval from 5 or more pairs, "
               f"else the differences themselves in brackets; P(better): share of those seeds "
               f"on which the entry beats the baseline (ties count half, failures lose)."
               f"{_tuning_caption(board, dialect)}")
    header = [info["entry"], *(dialect.escape(f) for f in fields), dialect.escape(info["metric"])]
    header += ["success"] if with_success else []
    header += [dialect.log_a, "limited by", f"{dialect.delta} vs. baseline [95{dialect.percent} CI]",
               "P(better)"]
    return Table(caption, header, rows, info["label"], [])


def study_tables(board: pd.DataFrame, settings: pd.DataFrame, dialect: Dialect) -> list[Table]:
    """Per task: the scaling table (if the study has a frontier axis), then the comparison."""
    tables = []
    for task, task_board in board.groupby("task", sort=True):
        scaling = scaling_table(task_board, settings[settings["task"] == task], dialect)
        tables += ([scaling] if scaling else []) + [comparison_table(task_board, dialect)]
    return tables


LATEX_PREAMBLE = [
    "% Generated by `vgbench report` from run records; do not edit by hand.",
    "% Needs \\usepackage{booktabs} and \\usepackage{graphicx}. A table wider than the",
    "% column is scaled down to \\linewidth; in two-column layouts, table* gives more room."]


def latex_float(table: Table, footer: str, *, text_columns: int = 1) -> str:
    """One booktabs ``table`` float with the provenance ``footer``; the first
    ``text_columns`` columns are left-aligned, the others right-aligned."""
    # the tabular is set in a box first: only a box wider than the line is scaled down
    align = "l" * text_columns + "r" * (len(table.header) - text_columns)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\footnotesize",
             r"\setlength{\tabcolsep}{4pt}", rf"\caption{{{table.caption}}}",
             rf"\label{{tab:{table.label}}}",
             r"\sbox0{%",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    for text, first, last in table.groups:
        span = rf"\multicolumn{{{last - first + 1}}}{{c}}{{{text}}}"
        lines.append(" & " * (first - 1) + span + " &" * (len(table.header) - last) + r" \\")
        lines.append(rf"\cmidrule(lr){{{first}-{last}}}")
    lines += [" & ".join(table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(cells) + r" \\" for cells in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}}%",
              r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi",
              r"\par\smallskip",
              rf"{{\scriptsize\raggedright Provenance: {footer}\par}}", r"\end{table}", ""]
    return "\n".join(lines)


def markdown_block(table: Table, *, text_columns: int = 1) -> list[str]:
    """One pipe table under its caption (a spanning header becomes a prefix of each column's)."""
    header = list(table.header)
    for text, first, last in table.groups:  # Markdown has no spanning header: prefix
        axis = text.rsplit(" at ", 1)[-1]
        header[first - 1:last] = [f"{axis} {h}" for h in header[first - 1:last]]
    align = [":---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ([table.caption, "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in table.rows] + [""])


def latex_table(study_runs: pd.DataFrame, board: pd.DataFrame, settings: pd.DataFrame) -> str:
    """The LaTeX of one study: booktabs ``table`` floats, each with the provenance footer."""
    footer = provenance_text(study_runs, LATEX)
    return "\n".join(LATEX_PREAMBLE + [latex_float(table, footer)
                                       for table in study_tables(board, settings, LATEX)])


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
    "{first}..L-{last}).")


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
    lines = []
    for row in table.itertuples():
        interval = (f"{number(row.measured, dialect, 5)} [{number(row.ci_low, dialect, 5)}, "
                    f"{number(row.ci_high, dialect, 5)}]")
        rel = (dialect.missing if math.isnan(row.rel_error)
               else f"{number(100 * row.rel_error, dialect, 1)}{dialect.percent}")
        lines.append([dialect.escape(row.activation), dialect.escape(row.init), str(int(row.width)),
                      f"{row.sigma_w2:.3g}", f"{row.sigma_b2:.3g}", _q_text(row.q_star, dialect),
                      f"{row.chi1:.4f}", number(row.predicted_fit, dialect, 5), interval, rel,
                      "yes" if row.agrees else dialect.bold("no")])
    depth = int(table["depth"].max()) if len(table) else window.stop
    # L - last is the last layer fitted: the window leaves ``last`` out at the output end
    caption = THEORY_TABLE_CAPTION.format(first=window.start + 1, last=depth - window.stop)
    footer = provenance_text(runs, dialect)
    table = Table(caption=dialect.escape(caption), header=header, rows=lines,
                  label="theory_agreement", groups=[])
    if dialect is LATEX:
        return "\n".join(LATEX_PREAMBLE + [latex_float(table, footer, text_columns=2)])
    return "\n".join([f"# Study `{study}`: theory against measurement", ""]
                     + markdown_block(table, text_columns=2) + [f"_Provenance: {footer}_", ""])


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

"""The tuning protocol: every entry at its own value of the study's tuned fields, chosen on validation.

A grid's ``[tune]`` section (e.g. ``lr = [0.01, 0.03, 0.1, 0.3]``) runs every entry at every
listed value. For each task, entry and setting of the swept axis (each depth, each T), the
reporter chooses one value:

1. the value at which the fewest seeds diverged or failed: a lost seed counts as the worst
   possible validation result (-inf for an accuracy, +inf for a loss), so a value at which a
   seed was lost is chosen only when every value lost one;
2. among those, the best mean final **validation** metric over the finished seeds;
3. ties go to the smaller value.

Nothing here reads a test metric: the test numbers of the chosen runs are what the
leaderboards, tables and figures then report.

The runner applies the same rule (:mod:`vgbench.selection`) to the tuning seeds' records,
extends a range whose winner sits at an end, and runs the winner on the confirmation seeds;
the tables report those. Each setting is chosen from the values its runs were tried at (a grid's ``[[tune.when]]`` rules
give some settings another range). A chosen value at either end of its setting's range that
beats the value next to it (not a tie) is marked ``at_edge``: the best value may lie beyond
the range, and the tables say so. :func:`choose` returns the runs at the chosen
values (the rest of the report sees only those) and the table of every candidate value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vgbench import selection

RULE = ("each entry and setting at its own value, chosen on the validation split: fewest "
        "diverged or failed seeds, then best mean final validation metric, ties to the smaller value")
GROUP = ["task", "entry", "frontier_value"]


def tuned_fields(runs: pd.DataFrame) -> list[str]:
    """The fields a study's runs were tuned over (empty if the study has no [tune] section)."""
    if "tuned_axes" not in runs or runs.empty:
        return []
    names = {name for text in runs["tuned_axes"].dropna().unique() for name in str(text).split(" / ")}
    return [name for name in sorted(names) if name and name in runs]


def candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per task x entry x setting x candidate value, with its validation statistics,
    its place in the choice (``choice_rank`` 1 is chosen) and ``chosen``."""
    fields = tuned_fields(runs)
    if not fields:
        return pd.DataFrame()
    rows = []
    for key, group in runs.groupby(GROUP + fields, dropna=False, sort=True):
        ok = group["ok"].to_numpy(bool)
        values = group["val_metric"].to_numpy(float)[ok]
        values = values[~np.isnan(values)]
        first = group.iloc[0]
        rows.append({**dict(zip(GROUP + fields, key)), "study": first["study"],
                     "frontier_axis": first["frontier_axis"], "entry_order": first["entry_order"],
                     "val_metric_name": "val_" + str(first["target_metric"]).removeprefix("test_"),
                     "higher_is_better": bool(first["higher_is_better"]),
                     "n_seeds": len(group), "n_ok": int(ok.sum()),
                     "n_lost": int(len(group) - ok.sum()),
                     "val_mean": float(values.mean()) if len(values) else np.nan,
                     "val_std": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                     "val_min": float(values.min()) if len(values) else np.nan,
                     "val_max": float(values.max()) if len(values) else np.nan,
                     "val_loss_mean": _mean(group["final_val_loss"].to_numpy(float)[ok])
                     if "final_val_loss" in group else np.nan,
                     "val_gain_mean": _mean((group["val_metric"] - group["val_metric_init"])
                                            .to_numpy(float)[ok])
                     if "val_metric_init" in group else np.nan,
                     "task_baseline": float(group["task_baseline"].iloc[0])
                     if "task_baseline" in group else np.nan})
    table = pd.DataFrame(rows)
    ranked = []
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        ranked.append(_rank(group, fields))
    table = pd.concat(ranked)
    table["chosen"] = table["choice_rank"] == 1
    table["at_chance"] = _at_chance(table)
    table["at_edge"] = _at_edge(table, fields)
    head = ["study", "task", "entry", "frontier_axis", "frontier_value", *fields, "chosen",
            "choice_rank", "at_edge", "at_chance"]
    return table[head + [c for c in table.columns if c not in head]].sort_values(
        ["task", "entry_order", "frontier_value", *fields], ignore_index=True)


def _rank(group: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The rule of :mod:`vgbench.selection` over one entry and setting's candidates."""
    ranks = selection.rank(group[fields].to_numpy(float), group["n_lost"].to_numpy(float),
                           group["val_mean"].to_numpy(float), bool(group["higher_is_better"].iloc[0]))
    return group.assign(choice_rank=ranks)


def _at_edge(table: pd.DataFrame, fields: list[str]) -> pd.Series:
    """True for a chosen row whose value of some tuned field is the smallest or largest its
    setting tried and ranks strictly above the value next to it (the other fields equal);
    never for an entry at chance."""
    edge = pd.Series(False, index=table.index)
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        chosen = group[group["chosen"]]
        if chosen.empty or bool(chosen["at_chance"].iloc[0]):
            continue
        row = chosen.iloc[0]
        for f in fields:
            others = [g for g in fields if g != f]
            line = group[(group[others] == row[others]).all(axis=1)] if others else group
            where = list(line.index).index(chosen.index[0])
            if selection.edge_side(line[f].to_numpy(float), line["n_lost"].to_numpy(),
                                   line["val_mean"].to_numpy(float), where):
                edge[chosen.index[0]] = True
    return edge


def _at_chance(table: pd.DataFrame) -> pd.Series:
    """Per candidate row: whether its entry and setting learned nothing at any value."""
    flags = pd.Series(False, index=table.index)
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        flags[group.index] = selection.at_chance(
            group["val_loss_mean"].to_numpy(float), float(group["task_baseline"].iloc[0]),
            group["val_gain_mean"].to_numpy(float), bool(group["higher_is_better"].iloc[0]))
    return flags


def choose(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows to report, :func:`candidates` of the tuning rows).

    Records of the tune-then-confirm protocol (``role``): the confirmation rows, each with its
    setting's values tried (``<field>_grid``), ``tuned_at_edge`` and ``tuned_at_chance`` from
    the tuning rows. Older records, chosen and reported on the same seeds: the rows at each
    setting's chosen value (``same_seeds`` says so). Without tuned fields, ``runs`` comes back
    whole with an empty candidate table.
    """
    roles = runs["role"] if "role" in runs else pd.Series("study", index=runs.index)
    confirm = runs[roles == "confirm"]
    tuning_rows = runs[roles != "confirm"]
    table = candidates(tuning_rows)
    if table.empty:
        return runs, table
    fields = tuned_fields(tuning_rows)
    marks = table.loc[table["chosen"], GROUP + fields + ["at_edge", "at_chance"]].rename(
        columns={"at_edge": "tuned_at_edge", "at_chance": "tuned_at_chance"})
    grids = tuning_rows.groupby(GROUP, dropna=False, sort=False).agg(
        **{f"{f}_grid": (f, lambda v: _grid_text(sorted(v.dropna().unique()))) for f in fields})
    if len(confirm):
        keep = confirm.merge(marks, on=GROUP, how="left", suffixes=("", "_rule"))
        # the runner chose with the same rule; a difference means the records disagree
        keep["choice_agrees"] = np.all([np.isclose(keep[f].astype(float), keep[f + "_rule"].astype(float))
                                        for f in fields], axis=0)
        seeds = sorted({int(x) for x in tuning_rows["seed"]})
        keep = keep.drop(columns=[f + "_rule" for f in fields]).assign(
            same_seeds=False, tune_seed_text=", ".join(map(str, seeds)))
    else:
        keep = tuning_rows.merge(marks, on=GROUP + fields, how="inner").assign(same_seeds=True)
    keep = keep.merge(grids.reset_index(), on=GROUP, how="left").assign(tuning_rule=RULE)
    return keep, table


def _mean(values) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else np.nan


def _grid_text(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"

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

Each setting is chosen from the values its runs were tried at (a grid's ``[[tune.when]]`` rules
give some settings another range). A chosen value at either end of its setting's range that
beats the value next to it (not a tie) is marked ``at_edge``: the best value may lie beyond
the range, and the tables say so. :func:`choose` returns the runs at the chosen
values (the rest of the report sees only those) and the table of every candidate value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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
                     "val_max": float(values.max()) if len(values) else np.nan})
    table = pd.DataFrame(rows)
    ranked = []
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        ranked.append(_rank(group, fields))
    table = pd.concat(ranked)
    table["chosen"] = table["choice_rank"] == 1
    table["at_edge"] = _at_edge(table, fields)
    head = ["study", "task", "entry", "frontier_axis", "frontier_value", *fields, "chosen",
            "choice_rank", "at_edge"]
    return table[head + [c for c in table.columns if c not in head]].sort_values(
        ["task", "entry_order", "frontier_value", *fields], ignore_index=True)


def _rank(group: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The rule of the module docstring as a sort: lost seeds, then validation, then value."""
    higher = bool(group["higher_is_better"].iloc[0])
    score = group["val_mean"].to_numpy(float)
    score = np.where(np.isnan(score), np.inf, -score if higher else score)   # smaller is better
    order = np.lexsort([group[f].to_numpy(float) for f in reversed(fields)]
                       + [score, group["n_lost"].to_numpy(float)])
    ranks = np.empty(len(group), int)
    ranks[order] = np.arange(1, len(group) + 1)
    return group.assign(choice_rank=ranks)


def _at_edge(table: pd.DataFrame, fields: list[str]) -> pd.Series:
    """True for a chosen row whose value of some tuned field is the smallest or largest its
    setting tried and ranks strictly above the value next to it (the other fields equal)."""
    edge = pd.Series(False, index=table.index)
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        chosen = group[group["chosen"]]
        if chosen.empty:
            continue
        row = chosen.iloc[0]
        for f in fields:
            others = [g for g in fields if g != f]
            line = group[(group[others] == row[others]).all(axis=1)] if others else group
            values = np.sort(line[f].to_numpy(float))
            if len(values) < 2 or row[f] not in (values[0], values[-1]):
                continue
            inward = values[1] if row[f] == values[0] else values[-2]
            neighbour = line[line[f] == inward].iloc[0]
            tie = (neighbour["n_lost"] == row["n_lost"]
                   and (neighbour["val_mean"] == row["val_mean"]
                        or (np.isnan(neighbour["val_mean"]) and np.isnan(row["val_mean"]))))
            if not tie:
                edge[chosen.index[0]] = True
    return edge


def choose(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows of ``runs`` at each setting's chosen value, :func:`candidates` of ``runs``).

    Without tuned fields, ``runs`` comes back whole with an empty candidate table.
    """
    table = candidates(runs)
    if table.empty:
        return runs, table
    fields = tuned_fields(runs)
    chosen = table.loc[table["chosen"], GROUP + fields + ["at_edge"]]
    keep = runs.merge(chosen.rename(columns={"at_edge": "tuned_at_edge"}), on=GROUP + fields,
                      how="inner")
    # each setting's own range: the values its runs were tried at
    grids = runs.groupby(GROUP, dropna=False, sort=False).agg(
        **{f"{f}_grid": (f, lambda v: _grid_text(sorted(v.dropna().unique()))) for f in fields})
    keep = keep.merge(grids.reset_index(), on=GROUP, how="left").assign(tuning_rule=RULE)
    return keep, table


def _grid_text(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"

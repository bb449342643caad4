"""Do two results agree? Per study, task, entry and setting, within the seed spread.

Either side is a results directory (its run records, else its per-seed ``reference/`` files)
or one per-seed reference file (:mod:`vgbench.report.reference`): ``vgbench compare results/
my_results/`` checks a fresh run of the suite against the committed reference.

Two runs of the same suite on different machines are not bitwise equal (XLA's kernels and
thread counts differ), so "the same result" means: the same entries were run, each at the same
chosen value of its tuned fields, the same number of seeds was lost, and the two 95 %
intervals of the mean final metric overlap (bootstrap from 5 seeds, Student-t below).
:func:`compare_results` lists every setting with one row per check; ``vgbench compare DIR_A
DIR_B`` prints the ones that disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vgbench.report import reference, tuning
from vgbench.report.stats import describe, t_interval

KEYS = ["study", "task", "entry", "frontier_value"]


def settings_of(source: str | Path) -> pd.DataFrame:
    """Every study's per-setting statistics, from the reported rows (the confirmation runs of a
    tuned study; for older records, the rows at each setting's chosen value)."""
    table = reference.per_seed_table(source)
    parts = []
    for study, rows in table.groupby("study", sort=True):
        fields = tuning.tuned_fields(rows) if "tuned_axes" in rows else []
        if fields and "role" in rows and (rows["role"] == "confirm").any():
            rows = rows[rows["role"] == "confirm"]
        elif fields and {"ok", "val_metric", "entry_order"} <= set(rows):
            rows, _ = tuning.choose(rows)
        for key, group in rows.groupby(KEYS, dropna=False, sort=True):
            ok = group["status"] == "ok"
            values = group.loc[ok, "metric"].to_numpy(float)
            stats = describe(values)
            low, high = stats["ci_low"], stats["ci_high"]
            if np.isnan(low) and stats["n"] > 1:
                _, low, high, _ = t_interval(values)
            first = group.iloc[0]
            parts.append({**dict(zip(KEYS, key)), "mean": stats["mean"], "ci_low": low,
                          "ci_high": high, "n_seeds": len(group), "n_ok": int(ok.sum()),
                          "chosen": ", ".join(f"{f}={first[f]:g}" for f in fields),
                          "metric": first.get("target_metric", "")})
    if not parts:
        raise ValueError(f"{source}: no readable run records or reference rows")
    return pd.DataFrame(parts)


def compare_settings(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per setting of either side: both sides' statistics and whether they agree."""
    cols = KEYS + ["mean", "ci_low", "ci_high", "n_seeds", "n_ok", "chosen", "metric"]
    merged = a[cols].merge(b[cols], on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
    reasons = [_disagreement(row) for row in merged.to_dict("records")]
    merged["agree"] = [r == "" for r in reasons]
    merged["why"] = reasons
    return merged.drop(columns="_merge")


def _disagreement(row: dict) -> str:
    if row["_merge"] != "both":
        return f"only in {'A' if row['_merge'] == 'left_only' else 'B'}"
    if row["chosen_a"] != row["chosen_b"]:
        return f"chose {row['chosen_a']} in A, {row['chosen_b']} in B"
    lost_a, lost_b = row["n_seeds_a"] - row["n_ok_a"], row["n_seeds_b"] - row["n_ok_b"]
    if lost_a != lost_b:
        return f"lost {lost_a:g} seeds in A, {lost_b:g} in B"
    if np.isnan(row["mean_a"]) and np.isnan(row["mean_b"]):
        return ""
    if np.isnan(row["mean_a"]) or np.isnan(row["mean_b"]):
        return "a mean on one side only"
    low = max(row["ci_low_a"], row["ci_low_b"])
    high = min(row["ci_high_a"], row["ci_high_b"])
    if low > high and not np.isclose(low, high, rtol=1e-9, atol=1e-12):
        return "95% intervals do not overlap"
    return ""


def compare_results(dir_a: str | Path, dir_b: str | Path) -> pd.DataFrame:
    """:func:`compare_settings` of two results directories or reference files."""
    return compare_settings(settings_of(dir_a), settings_of(dir_b))


def summary_text(table: pd.DataFrame, dir_a, dir_b) -> str:
    """Per study: how many settings agree, then every one that does not."""
    lines = [f"A = {dir_a}", f"B = {dir_b}"]
    for study, rows in table.groupby("study", sort=True):
        n_bad = int((~rows["agree"]).sum())
        lines.append(f"{study}: {len(rows) - n_bad} of {len(rows)} settings agree")
        for row in rows[~rows["agree"]].itertuples(index=False):
            at = "" if np.isnan(row.frontier_value) else f" at {row.frontier_value:g}"
            lines.append(f"  {row.task} / {row.entry}{at}: {row.why}; mean "
                         f"{_ci(row.mean_a, row.ci_low_a, row.ci_high_a)} (A) vs "
                         f"{_ci(row.mean_b, row.ci_low_b, row.ci_high_b)} (B)")
    return "\n".join(lines)


def _ci(mean, low, high) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"

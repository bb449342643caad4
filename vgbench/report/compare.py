"""Do two result directories agree? Per study, task, entry and setting, within the seed spread.

Two runs of the same suite on different machines are not bitwise equal (XLA's kernels and
thread counts differ), so "the same result" means: the same entries were run, each at the same
chosen value of its tuned fields, the same number of seeds was lost, and the two 95 %
bootstrap intervals of the mean final metric overlap. :func:`compare_results` lists every
setting with one row per check; ``vgbench compare DIR_A DIR_B`` prints the ones that disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vgbench.report import tuning
from vgbench.report.frames import load_frames
from vgbench.report.leaderboard import by_setting

KEYS = ["study", "task", "entry", "frontier_value"]


def settings_of(results_dir: str | Path) -> pd.DataFrame:
    """Every study's per-setting statistics (at the chosen values, for tuned studies)."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs").is_dir():
        raise FileNotFoundError(f"{results_dir}: no runs/ folder of run records here")
    frames = load_frames(results_dir)
    parts = []
    for study, runs in frames.runs.groupby("study", sort=True):
        chosen, _ = tuning.choose(runs)
        settings = by_setting(chosen)
        fields = tuning.tuned_fields(runs)
        settings["chosen"] = [", ".join(f"{f}={row[f]:g}" for f in fields)
                              for _, row in settings.iterrows()] if fields else ""
        parts.append(settings)
    if not parts:
        raise ValueError(f"{results_dir}: no readable run records")
    return pd.concat(parts, ignore_index=True)


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
    """:func:`compare_settings` of two results directories."""
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

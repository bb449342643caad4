"""Leaderboards: per task, a study's entries ranked by the final test metric, with statistics.

Two frames per study, both from the ``runs`` frame (one row per run x seed):

* :func:`by_setting`: one row per task x entry x frontier value (e.g. depth): the seed
  statistics of that one setting.
* :func:`leaderboard`: one row per task x entry, taken at the *headline setting* (the largest
  frontier value that every entry of the task ran), ranked by the mean final metric, with the
  entry's *trainability frontier* (the largest frontier value at which at least 2/3 of the
  seeds reach the target) and a paired comparison against the study's baseline entry.

Baselines: ``baseline`` may be an entry label such as ``"relu / he_normal"`` (every entry is
compared against it) or a dict of axis values such as ``{"init": "naive"}``, as a grid file's
``study.baseline`` gives it: then each entry is compared against the entry that differs from it
only on the named axes (``tanh / xavier_normal`` against ``tanh / naive``), and the entries
that match the dict are baselines themselves. Without one, every entry is compared against the
entry with the most axes set to ``"none"`` (no mitigation), ties going to the first entry in
sorted order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vgbench import selection
from vgbench.report.stats import MIN_INTERVAL_N, censored_median, describe, paired_comparison
from vgbench.report.tuning import tuned_fields

FRONTIER_RULE = "the largest {axis} at which at least 2/3 of the seeds reach the target"
SIGNAL_FALL = 1.2   # decades (vgbench.verdict.FALL): a failing cell past it vanished / exploded
LIMITS = ("none", "diverged", "vanished", "exploded", "budget", "plateau")
LIMITED_BY = {
    "none": "reached the target on at least 2/3 of the seeds",
    "diverged": "most seeds diverged or failed",
    "vanished": f"the signal at the input end ended more than {SIGNAL_FALL} decades below the output's",
    "exploded": f"the signal at the input end ended more than {SIGNAL_FALL} decades above the output's",
    "budget": "the validation metric was still improving over the last quarter of training "
              "on most finished seeds: more steps might have reached the target",
    "plateau": "a healthy signal, the validation metric no longer improving: not a gradient problem",
}


def group_summary(rows: pd.DataFrame) -> dict:
    """Seed statistics of one setting (rows: one per seed from the ``runs`` frame)."""
    ok = rows["ok"].to_numpy(bool)
    n, n_reached = len(rows), int(rows["reached"].sum())
    has_target = bool(rows["target_value"].notna().any())
    stats = describe(rows["metric"].to_numpy(float)[ok])
    steps = rows["steps_to_target"].where(rows["reached"]) if "steps_to_target" in rows else None

    def mean_ok(column, transform=None):
        if column not in rows:
            return np.nan
        values = rows[column].to_numpy(float)[ok]
        values = transform(values) if transform else values
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else np.nan

    return {
        "n_seeds": n, "n_ok": int(ok.sum()),
        "n_diverged": int((rows["status"] == "diverged").sum()),
        "n_failed": int((rows["status"] == "failed").sum()),
        "mean": stats["mean"], "std": stats["std"], "median": stats["median"],
        "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
        "n_reached": n_reached if has_target else np.nan,
        "success": f"{n_reached}/{n}" if has_target else "",
        "success_rate": n_reached / n if has_target else np.nan,
        "steps_to_target": censored_median(steps) if steps is not None else np.nan,
        "abs_log10_attenuation_init": mean_ok("log10_attenuation_init", np.abs),
        "abs_log10_attenuation_final": mean_ok("log10_attenuation_final", np.abs),
        # signed: negative when the input end gets less signal than the output end (vanishing)
        "log10_attenuation_init": mean_ok("log10_attenuation_init"),
        "log10_attenuation_final": mean_ok("log10_attenuation_final"),
        "still_improving_rate": mean_ok("still_improving"),
        "decay_per_layer": mean_ok("decay_per_layer"),
        # recurrent records fit the decay over time steps rather than layers
        "decay_over": "time step" if _recurrent(rows) else "layer",
        "dead_fraction": mean_ok("dead_fraction_final"),
        "saturation": mean_ok("saturation_final"),
        # its two parts (NaN for records older than the split, or an activation without a
        # declared flat region): bounded units in a flat tail, rectifiers switched off
        "tail_saturation": mean_ok("tail_saturation_final"),
        "inactive_fraction": mean_ok("inactive_fraction_final"),
        "plateau_rate": mean_ok("plateau"),
        "effective_horizon": mean_ok("effective_horizon"),
        "verdict": verdict_summary(rows),
        "seed_values": "; ".join(f"{v:.4g}" for v in rows["metric"].to_numpy(float)[ok]
                                 if np.isfinite(v)) if ok.sum() < MIN_INTERVAL_N else "",
    }


def limited_by(summary: dict, target_missing: bool = False) -> str:
    """What limited one setting (:data:`LIMITED_BY` says each in words), from its summary:
    ``none`` where it met the frontier rule, then diverged, vanished, exploded (the signed
    attenuation at the end of training), budget (still improving), else plateau."""
    n = summary["n_seeds"]
    if target_missing or (3 * summary["n_reached"] >= 2 * n):
        return "none" if not target_missing else ""
    if 2 * (summary["n_diverged"] + summary["n_failed"]) > n:
        return "diverged"
    final = summary["log10_attenuation_final"]
    if np.isfinite(final) and final <= -SIGNAL_FALL or final == -np.inf:
        return "vanished"
    if np.isfinite(final) and final >= SIGNAL_FALL:
        return "exploded"
    if summary["still_improving_rate"] > 0.5:
        return "budget"
    return "plateau"


def verdict_summary(rows: pd.DataFrame) -> str:
    """The most common per-seed verdict, at init -> at the end, with its share of the seeds:
    ``"vanishing -> healthy (3/3)"``; empty where the records have none (recurrent runs)."""
    if "verdict_init" not in rows or "verdict_final" not in rows:
        return ""
    pairs = [f"{a} -> {b}" for a, b in zip(rows["verdict_init"], rows["verdict_final"])
             if isinstance(a, str) and isinstance(b, str)]
    if not pairs:
        return ""
    top = max(sorted(set(pairs)), key=pairs.count)
    return f"{top} ({pairs.count(top)}/{len(rows)})"


def _recurrent(rows: pd.DataFrame) -> bool:
    """Whether the rows' records fitted their decay over time steps (a recurrent model's
    records carry per-time-step summaries; no model is named here)."""
    return any(key in rows and rows[key].notna().any()
               for key in ("effective_horizon", "temporal_decay", "temporal_decay_final"))


def by_setting(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per task x entry x frontier value of one study's ``runs`` rows.

    In a tuned study (``runs`` as :func:`vgbench.report.tuning.choose` leaves them) each row
    also names the chosen value of every tuned field, the setting's grid it was chosen from and
    ``tuned_at_edge`` (the value is at an end of that grid and beats its neighbour).
    """
    keys = ["task", "entry", "entry_order", "frontier_value"]
    tuned = [c for f in tuned_fields(runs) for c in (f, f"{f}_grid") if c in runs]
    tuned += [c for c in ("tuned_at_edge", "tuned_at_chance", "same_seeds", "tune_seed_text",
                          "choice_agrees") if tuned and c in runs]
    rows = []
    for key, group in runs.groupby(keys, dropna=False, sort=True):
        first = group.iloc[0]
        rows.append({**dict(zip(keys, key)), "study": first["study"],
                     **{c: first[c] for c in tuned},
                     "entry_axes": first["entry_axes"], "frontier_axis": first["frontier_axis"],
                     "metric": first["target_metric"],
                     "higher_is_better": bool(first["higher_is_better"]),
                     "target": first["target_value"], **group_summary(group)})
        rows[-1]["limited_by"] = limited_by(rows[-1], np.isnan(first["target_value"]))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    head = ["study", "task", "entry", "entry_order", "frontier_axis", "frontier_value", *tuned,
            "metric", "higher_is_better", "target"]
    return frame[head + [c for c in frame.columns if c not in head]]


def frontier_one_seed(settings: pd.DataFrame) -> bool:
    """Whether one seed's outcome decides the frontier: at the frontier one success fewer, or at
    the next value tried one success more, would move it."""
    best, _ = frontier(settings)
    order = settings.sort_values("frontier_value")
    reached = order["n_reached"].to_numpy(float)
    n = order["n_seeds"].to_numpy(float)
    values = order["frontier_value"].to_numpy(float)
    for i, v in enumerate(values):
        if not np.isnan(best) and v == best and 3 * (reached[i] - 1) < 2 * n[i]:
            return True
        if (np.isnan(best) or v > best) and 3 * (reached[i] + 1) >= 2 * n[i]:
            if i == 0 or np.isnan(best) or values[i - 1] <= best:
                return True
    return False


def frontier(settings: pd.DataFrame) -> tuple[float, bool]:
    """Largest frontier value where >= 2/3 of the seeds reach the target, and whether it is the
    largest value tried (then the true frontier may lie further out). NaN if none qualifies."""
    rate = settings["success_rate"].to_numpy(float)
    values = settings["frontier_value"].to_numpy(float)
    # k of n seeds with 3k >= 2n, computed on counts so that 2/3 itself qualifies exactly
    good = 3 * settings["n_reached"].to_numpy(float) >= 2 * settings["n_seeds"].to_numpy(float)
    good &= ~np.isnan(rate) & ~np.isnan(values)
    if not good.any():
        return (np.nan, False)
    best = float(values[good].max())
    return (best, best >= np.nanmax(values))


def baseline_map(entries: pd.DataFrame, baseline=None, axes=(), within=None) -> dict:
    """Entry -> the entry it is compared against (None where the grid lacks it).

    ``entries``: one row per entry in entry order, with ``entry``, the axis columns and the
    config columns; ``axes``: the entry axes. A dict baseline picks the entries that match
    every field it names (:func:`vgbench.selection.baseline_of`): each entry is compared with
    the one that shares its other axes (or the ``within`` axes). A declared baseline that
    matches no entry is an error, never replaced by another entry.
    """
    labels = entries["entry"].tolist()
    if isinstance(baseline, str):
        if baseline not in labels:
            raise ValueError(f"baseline {baseline!r} is not an entry; entries: {', '.join(labels)}")
        return dict.fromkeys(labels, baseline)
    if baseline:
        rows = entries.to_dict("records")
        index = selection.baseline_of(rows, baseline, list(axes), within)
        if all(i is None for i in index):
            raise ValueError(f"no entry matches baseline {baseline}; entries: {', '.join(labels)}")
        return {row["entry"]: (None if i is None else labels[i]) for row, i in zip(rows, index)}
    nones = [sum(part.strip().lower() == "none" for part in label.split(" / ")) for label in labels]
    return dict.fromkeys(labels, labels[int(np.argmax(nones))])


def baseline_rule(baseline, axes=(), within=None) -> str:
    """How the baseline was chosen, in words, for captions."""
    if isinstance(baseline, str):
        return baseline
    if baseline:
        rule = ", ".join(f"{k} = {v}" for k, v in baseline.items())
        return rule + (f" within each {' / '.join(within)}" if within else "")
    return "the entry with the most axes set to none, else the first (no baseline declared)"


def _key(value) -> str:
    """Axis values compared as text, with 2.0 and 2 the same."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def leaderboard(runs: pd.DataFrame, *, baseline=None, entry_axes=(),
                settings: pd.DataFrame | None = None, within=None) -> pd.DataFrame:
    """The leaderboard of one study (see the module docstring); ``entry_axes`` adds columns;
    ``settings`` is :func:`by_setting` of ``runs`` where the caller has it already."""
    settings = by_setting(runs) if settings is None else settings
    if settings.empty:
        return settings
    axes = [a for a in str(runs["entry_axes"].iloc[0]).split(" / ") if a and a in runs]
    out = []
    for task, task_settings in settings.groupby("task", sort=True):
        task_runs = runs[runs["task"] == task]
        entries = task_runs.drop_duplicates("entry").sort_values("entry_order")
        bases = baseline_map(entries, baseline, axes, within)
        at = headline_value(task_settings)
        rows = []
        for entry, entry_settings in task_settings.groupby("entry", sort=False):
            value = at if not np.isnan(at) else entry_settings["frontier_value"].max()
            here = entry_settings[_same(entry_settings["frontier_value"], value)]
            if here.empty:
                continue
            row = here.iloc[0].to_dict()
            row["frontier"], row["frontier_censored"] = frontier(entry_settings)
            has_axis = isinstance(row["frontier_axis"], str)
            row["frontier_one_seed"] = has_axis and frontier_one_seed(entry_settings)
            row["frontier_rule"] = FRONTIER_RULE.format(axis=row["frontier_axis"]) if has_axis else ""
            base = bases.get(entry)
            row["baseline"], row["baseline_entry"] = entry == base, base
            row["baseline_rule"] = baseline_rule(baseline, axes, within)
            row.update(_versus(task_runs, entry, base, value, row["higher_is_better"]))
            first = entries[entries["entry"] == entry].iloc[0]
            row.update({axis: first.get(axis) for axis in entry_axes})
            rows.append(row)
        board = pd.DataFrame(rows)
        direction = 1 if board["higher_is_better"].iloc[0] else -1
        board = board.assign(_key=-direction * board["mean"].fillna(-direction * np.inf))
        board = board.sort_values(["_key", "success_rate", "entry_order"],
                                  ascending=[True, False, True], na_position="last")
        board.insert(0, "rank", np.arange(1, len(board) + 1))
        out.append(board.drop(columns="_key"))
    board = pd.concat(out, ignore_index=True).rename(columns={"frontier_value": "at"})
    head = ["study", "task", "rank", "entry", *entry_axes, "baseline", "baseline_entry", "metric",
            "higher_is_better", "frontier_axis", "at"]
    return board[head + [c for c in board.columns if c not in head and c != "entry_order"]]


def headline_value(df: pd.DataFrame) -> float:
    """The largest frontier value that every entry of ``df`` ran (rows with ``entry`` and
    ``frontier_value``); NaN without a frontier axis or a value in common."""
    per_entry = [set(g["frontier_value"].dropna()) for _, g in df.groupby("entry")]
    common = set.intersection(*per_entry) if per_entry else set()
    return max(common) if common else np.nan


def _same(values: pd.Series, value: float) -> pd.Series:
    return values.isna() if np.isnan(value) else values == value


def _versus(task_runs: pd.DataFrame, entry: str, base: str | None, value: float,
            higher: bool) -> dict:
    """Paired comparison of ``entry`` against ``base`` at one frontier value, on shared seeds."""
    keys = ("diff", "diff_ci_low", "diff_ci_high", "p_improve", "p_improve_ci_low",
            "p_improve_ci_high")
    if base is None or entry == base:
        return {"n_paired": 0, "diff_values": "", **{k: np.nan for k in keys}}
    here = task_runs[_same(task_runs["frontier_value"], value)]

    def seed_metric(label):
        rows = here[here["entry"] == label]
        return rows.assign(value=rows["metric"].where(rows["ok"])).groupby("seed")["value"].mean()

    paired = pd.concat([seed_metric(entry), seed_metric(base)], axis=1, join="inner",
                       keys=["entry", "base"])
    result = paired_comparison(paired["entry"].to_numpy(), paired["base"].to_numpy(),
                               higher_is_better=higher)
    values = "" if not np.isnan(result["diff_ci_low"]) else "; ".join(
        f"{d:+.4g}" for d in result["diff_values"])
    return {"n_paired": result["n_paired"], "diff_values": values, **{k: result[k] for k in keys}}

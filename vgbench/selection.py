"""The tuning rule in one place: which candidate value wins, whether it sits at an edge, whether
the range should grow, and whether an entry learned anything at any value.

Plain numpy over one entry-and-setting's candidates, so that the runner (which extends ranges
and starts the confirmation runs) and the reporter (which tabulates every candidate) apply the
same rule to the same numbers. Nothing here reads a test metric.

The rule, per task, entry and setting (docs/reporting.md, "Tuning protocol"):

1. fewest diverged or failed seeds (a lost seed counts as the worst possible validation value);
2. then the best mean final **validation** metric over the finished seeds;
3. ties to the smaller value.

A chosen value at an end of its range that beats the value next to it (not a tie) is *at the
edge*: the best value may lie beyond it, and the runner extends the range one step that way
(:func:`next_value`) unless the entry is *at chance* (:func:`at_chance`) or a declared limit
stops it.
"""

from __future__ import annotations

import math

import numpy as np

CONFIRM_SUFFIX = "-confirm"   # a confirmation record's id: its config's hash and this
CHANCE_LOSS_FRACTION = 0.9   # learned something: validation loss below 0.9 x the trivial predictor's
CHANCE_GAIN = 0.05           # ... or an accuracy 5 points above its value at initialisation


def rank(values, n_lost, val_mean, higher_is_better: bool) -> np.ndarray:
    """1-based ranks of candidates (1 is chosen) under the module's rule.

    Args:
      values: ``[n_candidates, n_fields]`` (or 1-d) tuned values, compared as numbers.
      n_lost: seeds that diverged or failed, per candidate.
      val_mean: mean final validation metric over the finished seeds (NaN if none finished).
    """
    values = np.asarray(values, float).reshape(len(n_lost), -1)
    score = np.asarray(val_mean, float)
    score = np.where(np.isnan(score), np.inf, -score if higher_is_better else score)
    keys = [values[:, j] for j in reversed(range(values.shape[1]))]
    order = np.lexsort(keys + [score, np.asarray(n_lost, float)])
    ranks = np.empty(len(order), int)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def edge_side(values, n_lost, val_mean, chosen: int) -> int:
    """-1 / +1 when candidate ``chosen`` is the smallest / largest of ``values`` (one field, the
    others equal) and strictly beats the value next to it; 0 otherwise (inside, or a tie).
    Where every value lost every seed (diverged everywhere), the smallest value is at the edge
    (-1): the range grows towards smaller values until a seed survives or a limit stops it."""
    values = np.asarray(values, float)
    order = np.argsort(values)
    if len(values) < 2 or chosen not in (order[0], order[-1]):
        return 0
    if all(math.isnan(v) for v in val_mean) and len(set(n_lost)) == 1 and n_lost[0] > 0:
        # every value lost every seed: smaller steps are the way out of divergence
        return -1 if chosen == order[0] else 0
    side = -1 if chosen == order[0] else 1
    inward = order[1] if side < 0 else order[-2]
    tie = n_lost[inward] == n_lost[chosen] and (
        val_mean[inward] == val_mean[chosen]
        or (math.isnan(val_mean[inward]) and math.isnan(val_mean[chosen])))
    return 0 if tie else side


def at_chance(val_loss_mean, task_baseline: float, val_gain_mean=None,
              higher_is_better: bool = False) -> bool:
    """True when no candidate learned. A candidate learned when its mean final validation loss
    is below ``CHANCE_LOSS_FRACTION`` x the trivial, input-blind predictor's, or, for a metric
    where higher is better (an accuracy), when its mean validation metric rose at least
    ``CHANCE_GAIN`` above its value at initialisation (``val_gain_mean``): a classifier can be
    right on most examples while a few confident mistakes keep its loss high. An entry where
    every value diverged is not at chance (its steps were too large: see :func:`edge_side`).
    Such an entry is reported as at chance, not as a choice at an edge, and is not extended."""
    losses = np.asarray(val_loss_mean, float)
    gains = np.full(len(losses), np.nan) if val_gain_mean is None else np.asarray(val_gain_mean, float)
    if not (np.isfinite(losses).any() or np.isfinite(gains).any()):
        return False
    learned = np.zeros(len(losses), bool)
    if task_baseline is not None and np.isfinite(task_baseline) and task_baseline > 0:
        learned |= np.isfinite(losses) & (losses < CHANCE_LOSS_FRACTION * task_baseline)
    if higher_is_better:
        learned |= np.isfinite(gains) & (gains >= CHANCE_GAIN)
    return not learned.any()


def _on_one_three(values) -> bool:
    """Whether every value is 1 or 3 times a power of ten (0.003, 0.01, 0.03, ...)."""
    for v in values:
        if not v > 0:
            return False
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        if not (math.isclose(mantissa, 1, rel_tol=1e-6) or math.isclose(mantissa, 3, rel_tol=1e-6)):
            return False
    return True


def next_value(values, side: int) -> float:
    """The value one step beyond the ``side`` (-1 low, +1 high) end of ``values``.

    On a 1-3 series (0.003, 0.01, 0.03, ...) the step continues the series; otherwise it
    repeats the ratio of the two end values (the difference where a value is not positive).
    """
    values = sorted(float(v) for v in values)
    end, inner = (values[0], values[1]) if side < 0 else (values[-1], values[-2])
    if _on_one_three(values):
        exponent = math.floor(math.log10(end) + 1e-9)
        mantissa = round(end / 10 ** exponent)
        if side > 0:
            nxt = 3 * 10 ** exponent if mantissa == 1 else 10 ** (exponent + 1)
        else:
            nxt = 3 * 10 ** (exponent - 1) if mantissa == 1 else 10 ** exponent
        return float(f"{nxt:.6g}")
    if end > 0 and inner > 0:
        return float(f"{end * end / inner:.6g}")
    return float(f"{end + (end - inner):.6g}")


# ---------------------------------------------------------------------------- baselines

def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def is_baseline(row: dict, baseline: dict) -> bool:
    """Whether an entry (a dict of its axis and config values) matches every baseline field."""
    return all(_text(row.get(k)) == _text(v) for k, v in baseline.items())


def comparison_axes(rows: list[dict], baseline: dict, axes, within=None) -> list[str]:
    """The axes on which an entry and its baseline must agree: ``within`` where the grid names
    them, else every axis of ``axes`` that the baseline does not touch. An axis touches the
    baseline when it is a baseline field or the baseline fields' values depend on it (a zipped
    axis whose points set them, like ``mitigation`` setting ``skip``)."""
    if within:
        return list(within)
    keep = []
    for axis in axes:
        touched = axis in baseline
        for key in baseline:
            if touched:
                break
            seen: dict[str, set] = {}
            for row in rows:
                seen.setdefault(_text(row.get(axis)), set()).add(_text(row.get(key)))
            touched = len({frozenset(v) for v in seen.values()}) > 1
        if not touched:
            keep.append(axis)
    return keep


def baseline_of(rows: list[dict], baseline: dict, axes, within=None) -> list[int | None]:
    """For each row, the index of the baseline row it is compared with (None where its group
    has none); a baseline row is its own."""
    on = comparison_axes(rows, baseline, axes, within)
    bases: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if is_baseline(row, baseline):
            bases.setdefault(tuple(_text(row.get(a)) for a in on), i)
    return [bases.get(tuple(_text(row.get(a)) for a in on)) for row in rows]

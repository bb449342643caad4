"""Statistics over seeds: summaries with percentile-bootstrap intervals, paired comparisons.

Every bootstrap draws from ``numpy.random.default_rng(BOOTSTRAP_SEED)``, so a report is the
same number for number each time it is built from the same records.

Failures: a seed that diverged or failed has no final metric (NaN here). Summaries of a metric
are over the seeds that finished, with the count of the others beside them; paired comparisons
count a failed seed as the worse side of its pair (see :func:`paired_comparison`).

Reference: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13 (percentile
intervals); Agarwal et al., *Deep RL at the Edge of the Statistical Precipice* (NeurIPS 2021)
for the probability of improvement.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SEED = 0
N_BOOTSTRAP = 2000
LEVEL = 0.95
MIN_INTERVAL_N = 5   # no interval from fewer values: the report shows the values themselves


def bootstrap_ci(values, statistic=np.mean, *, n_boot: int = N_BOOTSTRAP, level: float = LEVEL,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over the finite entries of ``values``.

    ``statistic`` takes an array and ``axis=``. With fewer than ``MIN_INTERVAL_N`` values a
    percentile bootstrap cannot cover 95 % (from 2 values its "interval" is the two values), and
    without spread there is nothing to resample: the interval is then ``(nan, nan)`` and the
    report shows the values instead.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < MIN_INTERVAL_N or np.unique(values).size < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    resamples = values[rng.integers(0, len(values), size=(n_boot, len(values)))]
    estimates = statistic(resamples, axis=1)
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):  # interpolating between two infinite estimates
        low, high = np.percentile(estimates, [tail, 100 - tail])
    return (float(low), float(high))


def describe(values) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (ddof 1), ``median``, ``ci_low``, ``ci_high`` of the finite-or-±inf values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": np.nan, "std": np.nan, "median": np.nan,
                "ci_low": np.nan, "ci_high": np.nan}
    with np.errstate(invalid="ignore"):  # the spread of values that include ±inf is NaN
        std = float(np.std(values, ddof=1)) if n > 1 else np.nan
    low, high = bootstrap_ci(values)
    return {"n": n, "mean": float(np.mean(values)), "std": std,
            "median": float(np.median(values)), "ci_low": low, "ci_high": high}


def t_interval(values, *, level: float = LEVEL) -> tuple[float, float, float, int]:
    """Mean and Student-t interval over the finite ``values``: (mean, low, high, n)."""
    import math

    from scipy import stats

    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return (mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return (mean, mean - half, mean + half, n)


def censored_median(values) -> float:
    """Median where NaN means "never happened" (counted as later than everything).

    Used for steps to target: the median exists only while at least half the seeds got there.
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.nan
    median = float(np.median(np.where(np.isnan(values), np.inf, values)))
    return median if np.isfinite(median) else np.nan


def paired_comparison(entry, baseline, *, higher_is_better: bool = True,
                      n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Compare ``entry`` against ``baseline`` on the same seeds (aligned arrays; NaN = failed).

    Returns:
      ``n_paired`` (seeds in the comparison), ``n_both_finished``;
      ``diff`` = mean of ``entry - baseline`` over seeds where both finished, and its bootstrap
      interval ``diff_ci_low``/``diff_ci_high`` (pairs resampled together; NaN from fewer than
      ``MIN_INTERVAL_N`` pairs or without spread: then ``diff_values`` lists the differences);
      ``p_improve`` = fraction of seeds on which the entry beats the baseline, a tie counting
      one half and a failed seed losing to any finished one (two failures tie), and its
      bootstrap interval ``p_improve_ci_low``/``p_improve_ci_high``.
    """
    entry = np.asarray(entry, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if entry.shape != baseline.shape or entry.ndim != 1:
        raise ValueError(f"paired values must be aligned 1-d arrays, got shapes "
                         f"{entry.shape} and {baseline.shape}")
    both = ~np.isnan(entry) & ~np.isnan(baseline)
    diff = entry[both] - baseline[both]
    sign = 1.0 if higher_is_better else -1.0
    score_entry = np.where(np.isnan(entry), -np.inf, sign * entry)
    score_base = np.where(np.isnan(baseline), -np.inf, sign * baseline)
    wins = (score_entry > score_base) + 0.5 * (score_entry == score_base)
    diff_low, diff_high = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    p_low, p_high = bootstrap_ci(wins, n_boot=n_boot, seed=seed)
    return {"n_paired": len(entry), "n_both_finished": int(both.sum()),
            "diff_values": [float(d) for d in diff],
            "diff": float(diff.mean()) if len(diff) else np.nan,
            "diff_ci_low": diff_low, "diff_ci_high": diff_high,
            "p_improve": float(wins.mean()) if len(wins) else np.nan,
            "p_improve_ci_low": p_low, "p_improve_ci_high": p_high}

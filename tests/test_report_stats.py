"""Seed statistics against direct computations."""

import math

import numpy as np
import pytest

from vgbench.report import stats
from vgbench.report.stats import BOOTSTRAP_SEED, N_BOOTSTRAP, bootstrap_ci, censored_median, describe, paired_comparison


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means():
    values = np.array([0.91, 0.93, 0.88, 0.95, 0.90])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = [values[rng.integers(0, 5, size=5)].mean() for _ in range(N_BOOTSTRAP)]
    expected = np.percentile(means, [2.5, 97.5])
    assert bootstrap_ci(values) == pytest.approx(tuple(expected))
    assert bootstrap_ci(values) == bootstrap_ci(values)       # deterministic


def test_bootstrap_ci_width_matches_the_normal_theory_on_a_large_sample():
    values = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)


def test_bootstrap_ci_needs_two_values_and_ignores_nan():
    assert all(np.isnan(bootstrap_ci([0.5])))
    assert all(np.isnan(bootstrap_ci([np.nan, np.nan])))
    assert bootstrap_ci([1.0, np.nan, 3.0]) == bootstrap_ci([1.0, 3.0])


def test_describe_matches_numpy():
    values = [0.2, 0.4, 0.9, np.nan]
    stats = describe(values)
    finite = np.array([0.2, 0.4, 0.9])
    assert stats["n"] == 3
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std(ddof=1))
    assert stats["median"] == pytest.approx(0.4)
    assert np.isnan(stats["ci_low"]) and np.isnan(stats["ci_high"])   # no interval from 3 values
    five = describe([0.2, 0.4, 0.9, 0.5, 0.6])
    assert five["ci_low"] <= five["mean"] <= five["ci_high"]
    assert describe([])["n"] == 0 and np.isnan(describe([])["mean"])
    assert np.isnan(describe([0.3])["std"])


def test_censored_median_counts_never_as_later_than_everything():
    assert censored_median([100, np.nan, 200]) == 200
    assert np.isnan(censored_median([100, np.nan, np.nan]))
    assert np.isnan(censored_median([100, 300, np.nan, np.nan]))  # median between 300 and inf


def _direct(entry, base, higher):
    """The paired statistics written out seed by seed."""
    wins, diffs = [], []
    for e, b in zip(entry, base):
        if np.isnan(e) and np.isnan(b):
            wins.append(0.5)
        elif np.isnan(e):
            wins.append(0.0)
        elif np.isnan(b):
            wins.append(1.0)
        else:
            diffs.append(e - b)
            better = e > b if higher else e < b
            wins.append(1.0 if better else 0.5 if e == b else 0.0)
    return np.mean(diffs), np.mean(wins), wins, diffs


@pytest.mark.parametrize("higher", [True, False])
def test_paired_comparison_against_a_direct_computation(higher):
    entry = np.array([0.91, np.nan, 0.93, 0.80, 0.70, np.nan])
    base = np.array([0.10, 0.10, np.nan, 0.80, 0.75, np.nan])
    result = paired_comparison(entry, base, higher_is_better=higher)
    diff, p_improve, wins, diffs = _direct(entry, base, higher)
    assert result["n_paired"] == 6 and result["n_both_finished"] == 3
    assert result["diff"] == pytest.approx(diff)
    assert result["p_improve"] == pytest.approx(p_improve)
    assert np.isnan(result["diff_ci_low"])          # 3 pairs: the differences, no interval
    assert result["diff_values"] == pytest.approx(diffs)
    assert (result["p_improve_ci_low"], result["p_improve_ci_high"]) == pytest.approx(
        bootstrap_ci(wins))


def test_paired_comparison_sees_a_consistent_improvement():
    base = np.array([0.5, 0.25, 0.75, 0.5, 0.5])
    gain = np.array([0.125, 0.25, 0.125, 0.0625, 0.125])
    result = paired_comparison(base + gain, base, higher_is_better=True)
    assert result["diff"] == pytest.approx(gain.mean())
    assert 0.0625 <= result["diff_ci_low"] < gain.mean() < result["diff_ci_high"] <= 0.25
    assert result["p_improve"] == 1.0
    lower = paired_comparison(base + gain, base, higher_is_better=False)
    assert lower["p_improve"] == 0.0 and lower["diff"] == pytest.approx(gain.mean())
    # the same gain on every seed has no spread to resample: the values, not an interval
    same = paired_comparison(base + 0.125, base, higher_is_better=True)
    assert np.isnan(same["diff_ci_low"]) and same["diff_values"] == [0.125] * 5


def test_paired_comparison_rejects_unaligned_inputs():
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def test_t_interval_is_the_student_t_interval_over_the_finite_values():
    mean, low, high, n = stats.t_interval([1.0, 2.0, 3.0, np.nan])
    assert (mean, n) == (2.0, 3)
    assert high - mean == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)   # t_0.975(2)
    assert mean - low == pytest.approx(high - mean)
    assert math.isnan(stats.t_interval([1.0])[1]) and stats.t_interval([])[3] == 0


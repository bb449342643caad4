"""The per-seed verdict: thresholds applied to signal profiles, and real runs classified."""

import numpy as np
import pytest

from vgbench import record, train, verdict
from vgbench.spec import RunSpec


def profile_row(decades_per_layer, hidden=10, out=1.0):
    """A delta_norm row whose hidden layers follow 10^(slope * l), plus an output layer."""
    return list(10.0 ** (decades_per_layer * np.arange(hidden))) + [out]


def test_geometric_decay_is_vanishing_with_its_layer_range():
    v, span, prof = verdict.classify(profile_row(0.5))
    assert v == "vanishing"
    np.testing.assert_allclose(prof["slope"], 0.5)
    np.testing.assert_allclose(prof["fall"], 4.5)
    # more than FALL = 1.2 decades below the last hidden layer (index 9): layers 1..7
    assert span == "1-7"


def test_growth_towards_the_input_is_exploding():
    v, span, _ = verdict.classify(profile_row(-0.3))
    assert v == "exploding" and span == "1-5"   # 0.3 * (9 - l) > 1.2 for l <= 4 (0-based)


def test_thresholds_are_both_needed():
    # a steep slope over few layers (fall 0.8 < FALL) is healthy, as tanh/naive at depth 4 trains
    assert verdict.classify(profile_row(0.27, hidden=4))[0] == "healthy"
    # a fall past FALL spread thinly over many layers (slope 0.02 < SLOPE) is healthy too
    assert verdict.classify(profile_row(0.02, hidden=64))[0] == "healthy"
    assert verdict.classify(profile_row(0.0))[0] == "healthy"


def test_an_underflowed_first_layer_is_vanishing():
    row = profile_row(0.5)
    row[0] = 0.0
    assert verdict.classify(row)[0] == "vanishing"


def test_symptoms_past_their_thresholds_only():
    assert verdict.symptoms(plateau=True, plateau_step=100, frozen=-2.0, dead=0.5,
                            tail_saturation=0.3) == [
        "loss plateau from step 100", "frozen early layers (layer 1 updates 0.01x the "
        "most-updated layer)", "50% dead units", "30% saturated units"]
    assert verdict.symptoms(plateau=False, frozen=-0.1, dead=0.01, tail_saturation=0.001) == []


def test_frozen_measure_is_first_over_largest_hidden_update_ratio():
    ratios = [[1e-4, 1e-2, 1e-3, 5.0], [1e-4, 1e-2, 1e-3, 5.0]]   # the output layer is left out
    np.testing.assert_allclose(verdict.frozen_decades(ratios), -2.0)


def test_calibrate_takes_the_envelope_of_healthy_runs():
    def rec(label, slope, reached):
        delta = [profile_row(slope, hidden=5), profile_row(slope / 2, hidden=5)]
        return {"grid_axes": {"activation_init": label},
                "config": {"activation": "relu", "init": "he_normal", "depth": 5},
                "seeds": [0], "metrics": {"steps_to_target": [50 if reached else None]},
                "summary": {"dead_fraction_final": [0.01]},
                "diagnostics": {"delta_norm": [delta],
                                "update_ratio": [[[1e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1.0]] * 2]}}
    got = verdict.calibrate([rec("healthy", 0.05, True), rec("healthy", -0.08, False),
                             rec("control", 0.9, False)])
    np.testing.assert_allclose(got["SLOPE"], 0.08)      # init of every healthy run
    np.testing.assert_allclose(got["FALL"], 0.32)
    np.testing.assert_allclose(got["FROZEN"], 1.0)      # only the run that reached the target
    np.testing.assert_allclose(got["DEAD"], 0.01)


@pytest.mark.parametrize("activation,init,depth,expected", [
    ("sigmoid", "naive", 20, "vanishing"), ("relu", "he_normal", 8, "healthy")])
def test_verdict_of_real_runs(activation, init, depth, expected):
    spec = RunSpec(task="digits", model="mlp", depth=depth, width=64, activation=activation,
                   init=init, steps=50, log_every=25, batch_size=128, lr=0.1)
    program, raw = train.train(spec, [0, 1])
    rec = record.build_record(spec, [0, 1], raw.outputs, task=program.task,
                              layer_names=program.model.layer_names, compile_s=0.0, run_s=0.0)
    s = rec["summary"]
    assert s["verdict_init"] == [expected, expected]
    assert s["verdict_final"] == [expected, expected]
    if expected == "vanishing":
        assert all(f > 10 for f in s["signal_fall_init"])   # about 0.85 decades per layer
        assert s["verdict_layers_init"][0].startswith("1-")
        assert "vanishing" in s["verdict"][0] and "dense_1" in s["verdict"][0]
    else:
        assert all(abs(f) < verdict.FALL for f in s["signal_fall_init"])
        assert s["verdict"][0].startswith("at init: healthy; at the end: healthy")
    # the record's verdicts are what the record's own diagnostics give
    assert [v["verdict_init"] for v in verdict.record_verdicts(rec)] == s["verdict_init"]
    # the leaderboard's verdict column: the most common init -> end pair and its share
    from vgbench.report import frames
    from vgbench.report.leaderboard import leaderboard

    runs = frames.build_frames([rec]).runs
    assert list(runs["verdict_init"]) == [expected, expected]
    board = leaderboard(runs)
    assert board["verdict"].tolist() == [f"{expected} -> {expected} (2/2)"]


def test_verdict_summary_counts_the_most_common_pair():
    import pandas as pd

    from vgbench.report.leaderboard import verdict_summary

    rows = pd.DataFrame({"verdict_init": ["vanishing", "vanishing", "healthy", None],
                         "verdict_final": ["healthy", "healthy", "healthy", None]})
    assert verdict_summary(rows) == "vanishing -> healthy (2/4)"
    assert verdict_summary(pd.DataFrame({"seed": [0]})) == ""

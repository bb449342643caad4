"""Aggregation numbers on the hand-made toy study (see fixtures_records.toy_study)."""

import math

import numpy as np
import pandas as pd
import pytest
from fixtures_records import record, toy_study

from vgbench.report import build_frames, by_setting, leaderboard
from vgbench.report.leaderboard import baseline_map, frontier


@pytest.fixture(scope="module")
def runs():
    return build_frames(toy_study()).runs


def setting(settings, entry, depth):
    rows = settings[(settings["entry"] == entry) & (settings["frontier_value"] == depth)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_by_setting_counts_failures_and_summarises_finished_seeds(runs):
    settings = by_setting(runs)
    assert len(settings) == 4
    relu4 = setting(settings, "relu", 4)
    assert (relu4["n_seeds"], relu4["n_ok"], relu4["n_diverged"], relu4["n_failed"]) == (3, 2, 1, 0)
    assert relu4["mean"] == pytest.approx(0.92)
    assert relu4["std"] == pytest.approx(np.std([0.91, 0.93], ddof=1))
    assert relu4["success"] == "2/3" and relu4["success_rate"] == pytest.approx(2 / 3)
    assert relu4["steps_to_target"] == 200          # median of 100, never, 200
    sig2 = setting(settings, "sigmoid", 2)
    assert sig2["mean"] == pytest.approx(np.mean([0.5, 0.6, 0.95]))
    assert sig2["median"] == pytest.approx(0.6)
    assert sig2["success"] == "1/3" and math.isnan(sig2["steps_to_target"])
    sig4 = setting(settings, "sigmoid", 4)
    assert (sig4["n_ok"], sig4["n_failed"]) == (2, 0 + 1)
    assert sig4["mean"] == pytest.approx(0.1) and sig4["success"] == "0/3"


def test_summary_columns_are_means_over_finished_seeds(runs):
    settings = by_setting(runs)
    relu4 = setting(settings, "relu", 4)
    rows = runs[(runs["entry"] == "relu") & (runs["frontier_value"] == 4) & runs["ok"]]
    assert relu4["abs_log10_attenuation_init"] == pytest.approx(
        rows["log10_attenuation_init"].abs().mean())
    assert relu4["decay_per_layer"] == pytest.approx(rows["decay_per_layer"].mean())
    assert relu4["dead_fraction"] == pytest.approx(rows["dead_fraction_final"].mean())
    assert relu4["saturation"] == pytest.approx(rows["saturation_final"].mean())


def test_unit_fraction_columns_are_means_over_finished_seeds_and_empty_for_older_records():
    # the tail-saturated and inactive shares of each seed (seed 1 diverged: not counted)
    rec = record(depth=4, activation="tanh", status=["ok", "diverged", "ok"],
                 summary={"tail_saturation_final": [0.2, None, 0.4],
                          "inactive_fraction_final": [0.0, None, 0.1],
                          "saturation_final": [0.2, None, 0.5]})
    row = by_setting(build_frames([rec]).runs).iloc[0]
    assert row["tail_saturation"] == pytest.approx(0.3)
    assert row["inactive_fraction"] == pytest.approx(0.05)
    assert row["saturation"] == pytest.approx(row["tail_saturation"] + row["inactive_fraction"])
    old = record(depth=4, activation="tanh")
    for key in ("tail_saturation_final", "inactive_fraction_final"):
        del old["summary"][key]            # a record from before the split
    row = by_setting(build_frames([old]).runs).iloc[0]
    assert math.isnan(row["tail_saturation"]) and math.isnan(row["inactive_fraction"])
    assert row["saturation"] == pytest.approx(np.mean(old["summary"]["saturation_final"]))


def test_frontier_is_the_largest_depth_where_two_thirds_reach_the_target(runs):
    settings = by_setting(runs)
    relu = settings[settings["entry"] == "relu"]
    assert frontier(relu) == (4.0, True)        # 3/3 at depth 2, exactly 2/3 at depth 4
    sigmoid = settings[settings["entry"] == "sigmoid"]
    value, censored = frontier(sigmoid)
    assert math.isnan(value) and not censored   # 1/3 and 0/3
    made_up = pd.DataFrame({"frontier_value": [2.0, 4.0, 8.0], "success_rate": [1, 0.2, 1],
                            "n_reached": [3, 1, 3], "n_seeds": [3, 5, 3]})
    assert frontier(made_up) == (8.0, True)


def test_leaderboard_ranks_at_the_deepest_common_depth(runs):
    board = leaderboard(runs, entry_axes=("activation",))
    assert board["entry"].tolist() == ["relu", "sigmoid"] and board["rank"].tolist() == [1, 2]
    assert (board["at"] == 4).all() and set(board["frontier_axis"]) == {"depth"}
    assert board["activation"].tolist() == ["relu", "sigmoid"]
    relu = board.iloc[0]
    assert relu["mean"] == pytest.approx(0.92) and relu["n_diverged"] == 1
    assert relu["frontier"] == 4 and relu["frontier_censored"]
    for column in ("success", "steps_to_target", "abs_log10_attenuation_init",
                   "abs_log10_attenuation_final", "decay_per_layer", "dead_fraction",
                   "saturation", "tail_saturation", "inactive_fraction", "diff", "diff_ci_low",
                   "diff_ci_high", "p_improve",
                   "n_paired", "ci_low", "ci_high", "std", "median"):
        assert column in board.columns, column


def test_default_baseline_is_the_first_entry_and_compares_on_shared_seeds(runs):
    board = leaderboard(runs).set_index("entry")
    assert board.loc["relu", "baseline"] and not board.loc["sigmoid", "baseline"]
    sig = board.loc["sigmoid"]
    # seed 0: 0.10 vs 0.91 (worse), seed 1: 0.10 vs diverged (better), seed 2: failed vs 0.93
    assert sig["n_paired"] == 3
    assert sig["diff"] == pytest.approx(0.10 - 0.91)
    assert sig["p_improve"] == pytest.approx(1 / 3)
    assert np.isnan(board.loc["relu", "diff"])


def test_named_baseline_by_axis_values_or_label(runs):
    by_axes = leaderboard(runs, baseline={"activation": "sigmoid"}).set_index("entry")
    by_label = leaderboard(runs, baseline="sigmoid").set_index("entry")
    assert by_axes.loc["sigmoid", "baseline"] and by_label.loc["sigmoid", "baseline"]
    assert by_axes.loc["relu", "diff"] == pytest.approx(0.91 - 0.10)
    assert by_axes.loc["relu", "p_improve"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="entries: relu, sigmoid"):
        leaderboard(runs, baseline="tanh")


def test_default_baseline_prefers_the_unmitigated_entry():
    entries = pd.DataFrame({"entry": ["batchnorm / residual", "none / none", "none / residual"]})
    assert set(baseline_map(entries).values()) == {"none / none"}


def test_a_partial_baseline_pairs_each_entry_with_its_own_reference():
    records = [record(study="grid", depth=4, activation=a, init=i)
               for a in ("relu", "tanh") for i in ("naive", "xavier_normal")]
    runs = build_frames(records).runs
    board = leaderboard(runs, baseline={"init": "naive"}).set_index("entry")
    assert board["baseline_entry"].to_dict() == {
        "relu / naive": "relu / naive", "relu / xavier_normal": "relu / naive",
        "tanh / naive": "tanh / naive", "tanh / xavier_normal": "tanh / naive"}
    assert board["baseline"].to_dict() == {"relu / naive": True, "relu / xavier_normal": False,
                                           "tanh / naive": True, "tanh / xavier_normal": False}
    tanh = runs[(runs["activation"] == "tanh")].set_index(["init", "seed"])["metric"]
    expected = (tanh["xavier_normal"] - tanh["naive"]).mean()
    assert board.loc["tanh / xavier_normal", "diff"] == pytest.approx(expected)
    assert np.isnan(board.loc["tanh / naive", "diff"])


def test_lower_is_better_metrics_rank_ascending():
    records = []
    for init, losses in (("naive", [0.3, 0.4]), ("he_normal", [0.1, 0.2])):
        rec = record(study="loss", depth=3, init=init, seeds=(0, 1), grid_axes={"init": init})
        rec["target"] = {"metric": "test_loss", "value": 0.25, "higher_is_better": False}
        rec["metrics"]["final_test_loss"] = losses
        records.append(rec)
    board = leaderboard(build_frames(records).runs)
    assert board["entry"].tolist() == ["he_normal", "naive"]
    assert board["mean"].tolist() == pytest.approx([0.15, 0.35])


def test_a_recurrent_model_of_any_name_fits_its_decay_over_time_steps():
    # read from the records' per-time-step summaries, not from a model's name: a plugin's
    # recurrent model whose signal never fell three decades (no effective horizon) included
    from fixtures_records import recurrent_study

    records = recurrent_study(seq_lens=(5,), cells=("lstm",)) + toy_study()[:1]
    records[0]["config"]["model"] = "my_recurrent_net"
    records[0]["summary"]["effective_horizon"] = [None] * len(records[0]["seeds"])
    records[0]["summary"]["effective_horizon_final"] = [None] * len(records[0]["seeds"])
    settings = by_setting(build_frames(records).runs).set_index("study")
    assert settings.loc["memory", "decay_over"] == "time step"
    assert set(settings.drop(index="memory")["decay_over"]) == {"layer"}

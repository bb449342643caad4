"""vgbench compare: two result directories agree within their seed spread, or say where not."""

import copy

from fixtures_records import toy_study, write_results

from vgbench import cli
from vgbench.report.compare import compare_results


def two_dirs(tmp_path, change=None):
    a = write_results(tmp_path / "a", toy_study())
    records = copy.deepcopy(toy_study())
    if change:
        change(records)
    b = write_results(tmp_path / "b", records)
    return a, b


def test_identical_results_agree(tmp_path, capsys):
    a, b = two_dirs(tmp_path)
    table = compare_results(a, b)
    assert len(table) == 4 and table["agree"].all()
    assert cli.main(["compare", str(a), str(b)]) == 0
    assert "toy: 4 of 4 settings agree" in capsys.readouterr().out


def test_small_noise_agrees_and_a_shifted_mean_does_not(tmp_path, capsys):
    def change(records):
        records[0]["metrics"]["final_test_accuracy"] = [0.91, 0.92, 0.93]   # within the spread
        # sigmoid depth 2 moved: from 3 seeds (0.50, 0.60, 0.95) the 95 % t-interval of A's mean
        # is [0.10, 1.27], so only a move below it is a disagreement
        records[2]["metrics"]["final_test_accuracy"] = [0.0, 0.0, 0.01]
    a, b = two_dirs(tmp_path, change)
    table = compare_results(a, b).set_index(["entry", "frontier_value"])
    assert table.loc[("relu", 2.0), "agree"]
    assert not table.loc[("sigmoid", 2.0), "agree"]
    assert table.loc[("sigmoid", 2.0), "why"] == "95% intervals do not overlap"
    assert cli.main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "toy: 3 of 4 settings agree" in out and "digits / sigmoid at 2" in out


def test_lost_seeds_and_missing_runs_are_disagreements(tmp_path):
    def change(records):
        records[0]["status"] = ["ok", "diverged", "ok"]
        del records[3]
    a, b = two_dirs(tmp_path, change)
    why = dict(zip(compare_results(a, b)["entry"] + compare_results(a, b)["frontier_value"].astype(str),
                   compare_results(a, b)["why"]))
    assert why["relu2.0"] == "lost 0 seeds in A, 1 in B"
    assert why["sigmoid4.0"] == "only in A"


def test_a_directory_without_records_is_one_error(tmp_path, capsys):
    a, _ = two_dirs(tmp_path)
    assert cli.main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "neither run records (runs/) nor per-seed reference files" in capsys.readouterr().err

"""The tuning protocol: [tune] in grid files, selection on validation only, reports at the chosen value."""

import textwrap

import numpy as np
import pandas as pd
import pytest

from fixtures_records import record, write_results
from vgbench import grid
from vgbench.report import tuning
from vgbench.report.build import build_report
from vgbench.report.frames import build_frames


def tuned_record(lr, depth, activation, val, test, status=None):
    rec = record(study="tuned", depth=depth, activation=activation, lr=lr, seeds=(0, 1, 2),
                 status=status, accuracy=test,
                 grid_axes={"depth": depth, "activation": activation, "lr": lr})
    rec["metrics"]["final_val_accuracy"] = list(val)
    rec["tuning"] = {"lr": [0.01, 0.1, 1.0]}
    return rec


# validation accuracies per (activation, depth, lr), three seeds; None: a lost seed
VAL = {
    ("relu", 2, 0.01): [0.50, 0.52, 0.54], ("relu", 2, 0.1): [0.90, 0.92, 0.91],
    ("relu", 2, 1.0): [0.95, None, 0.97],                      # best survivors, one diverged
    ("relu", 4, 0.01): [0.60, 0.60, 0.60], ("relu", 4, 0.1): [0.60, 0.60, 0.60],   # a tie
    ("relu", 4, 1.0): [0.30, 0.20, 0.10],
    ("tanh", 2, 0.01): [0.80, 0.81, 0.82], ("tanh", 2, 0.1): [0.70, 0.72, 0.71],
    ("tanh", 2, 1.0): [None, None, None],
    ("tanh", 4, 0.01): [0.40, 0.30, 0.20], ("tanh", 4, 0.1): [0.50, 0.55, 0.60],
    ("tanh", 4, 1.0): [0.52, 0.53, 0.54],
}
EXPECTED = {("relu", 2): 0.1, ("relu", 4): 0.01, ("tanh", 2): 0.01, ("tanh", 4): 0.1}


def tuned_records(test_of=lambda key, i: 0.5 + 0.01 * i):
    recs = []
    for key, val in VAL.items():
        status = ["ok" if v is not None else "diverged" for v in val]
        test = [test_of(key, i) if v is not None else None for i, v in enumerate(val)]
        recs.append(tuned_record(key[2], key[1], key[0], val, test, status))
    return recs


def chosen_lrs(records) -> dict:
    runs = build_frames(records).runs
    chosen, _ = tuning.choose(runs)
    return {(a, int(d)): lr for (a, d), lr in
            chosen.groupby(["activation", "frontier_value"])["lr"].first().items()}


def test_chosen_lr_is_the_hand_computed_argmax_of_mean_validation():
    by_hand = {}
    for (act, depth) in EXPECTED:
        scores = []
        for lr in (0.01, 0.1, 1.0):
            val = VAL[(act, depth, lr)]
            lost = sum(v is None for v in val)
            ok = [v for v in val if v is not None]
            scores.append((lost, -np.mean(ok) if ok else np.inf, lr))
        by_hand[(act, depth)] = min(scores)[2]
    assert by_hand == EXPECTED
    assert chosen_lrs(tuned_records()) == EXPECTED


def test_a_diverged_seed_never_wins_and_ties_go_to_the_smaller_lr():
    chosen = chosen_lrs(tuned_records())
    assert chosen[("relu", 2)] == 0.1        # 1.0 has better survivors but lost a seed
    assert chosen[("tanh", 2)] != 1.0        # every seed lost
    assert chosen[("relu", 4)] == 0.01       # 0.01 and 0.1 tie exactly


def test_test_labels_do_not_change_any_choice():
    rng = np.random.default_rng(0)
    shuffled = tuned_records(test_of=lambda key, i: float(rng.uniform()))
    inverted = tuned_records(test_of=lambda key, i: 1.0 - 0.3 * key[2])
    assert chosen_lrs(shuffled) == chosen_lrs(inverted) == EXPECTED


def test_candidate_table_ranks_every_value_and_marks_one_choice_per_setting():
    runs = build_frames(tuned_records()).runs
    table = tuning.candidates(runs)
    assert len(table) == len(VAL)
    assert table.groupby(["entry", "frontier_value"])["chosen"].sum().eq(1).all()
    row = table[(table["entry"] == "relu") & (table["frontier_value"] == 2) & (table["lr"] == 1.0)]
    assert int(row["n_lost"].iloc[0]) == 1 and row["val_mean"].iloc[0] == pytest.approx(0.96)


def test_report_of_a_tuned_study_shows_each_entry_at_its_chosen_lr(tmp_path):
    results = write_results(tmp_path, tuned_records())
    build_report(results, formats=("png",), workers=1)
    board = pd.read_csv(results / "leaderboards" / "tuned_by_depth.csv")
    got = {(r.entry, int(r.frontier_value)): r.lr for r in board.itertuples()}
    assert got == EXPECTED
    assert set(board["lr_grid"]) == {"{0.01, 0.1, 1}"}
    assert "lr" not in board["entry"].iloc[0]           # lr is not an entry axis
    table = (results / "tables" / "tuned.md").read_text()
    assert "chosen per entry and depth on the validation split" in table
    assert "tuned on validation" in table
    candidates = pd.read_csv(results / "leaderboards" / "tuned_tuning.csv")
    assert len(candidates) == len(VAL)
    assert (results / "figures" / "tuned" / "lr_sensitivity.png").stat().st_size > 10_000


def write_grid(tmp_path, tune: str, fixed: str = 'task = "digits"\n'):
    path = tmp_path / "g.toml"
    path.write_text(textwrap.dedent("""
        [study]
        name = "g"
        [fixed]
        """) + fixed + textwrap.dedent("""
        [axes]
        depth = [2, 3]
        """) + tune)
    return path


def test_tune_section_runs_every_entry_at_every_value(tmp_path):
    g = grid.load(write_grid(tmp_path, "[tune]\nlr = [0.3, 0.01, 0.1]\n"))
    assert g.tuning == {"lr": [0.01, 0.1, 0.3]}
    assert [(r.spec.depth, r.spec.lr) for r in g.runs] == [
        (d, lr) for d in (2, 3) for lr in (0.01, 0.1, 0.3)]
    assert all(r.grid_axes["lr"] == r.spec.lr for r in g.runs)
    assert g.meta()["tuning"] == {"lr": [0.01, 0.1, 0.3]}
    from vgbench.train import program_key
    assert len({program_key(r.spec).run_id for r in g.runs}) == 2     # one program per depth


@pytest.mark.parametrize("tune, fixed, message", [
    ("[tune]\nwidth = [8, 16]\n", 'task = "digits"\n', r"tune\.width: cannot tune 'width' \(it changes the compiled program"),
    ("[tune]\nlr = []\n", 'task = "digits"\n', r"tune\.lr: expected a non-empty list"),
    ("[tune]\nlr = [0.1, -0.01]\n", 'task = "digits"\n', r"tune\.lr\[1\]: .*> 0"),
    ("[tune]\nlr = [0.1, 0.0]\n", 'task = "digits"\n', r"tune\.lr\[1\]"),
    ("[tune]\nlr = [0.1, 0.1]\n", 'task = "digits"\n', r"tune\.lr: 0\.1 is listed twice"),
    ("[tune]\nlr = [0.1]\n", 'task = "digits"\nlr = 0.2\n', r"tune\.lr: 'lr' is also fixed"),
    ("[tune]\nlr = 0.1\n", 'task = "digits"\n', r"tune\.lr: expected a non-empty list"),
    ("[tune]\nlrs = [0.1]\n", 'task = "digits"\n', r"cannot tune 'lrs' \(unknown key\).*did you mean 'lr'"),
    ("[tune]\n", 'task = "digits"\n', r"tune must be a table such as"),
])
def test_bad_tune_sections_are_one_error_naming_file_and_key(tmp_path, tune, fixed, message):
    path = write_grid(tmp_path, tune, fixed)
    with pytest.raises(grid.GridError, match=message) as err:
        grid.load(path)
    assert str(path) in str(err.value)

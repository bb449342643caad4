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


def edge_records(val_at_top):
    """One entry at depths 2 and 4, tried at {0.1, 0.3} at depth 2 and {0.01, 0.03} at depth 4;
    at depth 2 the top value scores ``val_at_top`` against 0.5 next to it."""
    recs = []
    for depth, lrs, vals in ((2, (0.1, 0.3), (0.5, val_at_top)), (4, (0.01, 0.03), (0.7, 0.6))):
        for lr, v in zip(lrs, vals):
            rec = tuned_record(lr, depth, "relu", [v] * 3, [0.5] * 3)
            rec["tuning"] = {"lr": list(lrs)}
            recs.append(rec)
    return recs


@pytest.mark.parametrize("val_at_top, edge_at_2", [(0.9, True), (0.5, False), (0.4, True)])
def test_a_value_chosen_at_an_end_of_its_settings_grid_is_marked(val_at_top, edge_at_2):
    # 0.9: the top value wins outright; 0.5: a tie goes to 0.1, the bottom, but no better than
    # its neighbour; 0.4: the bottom wins outright. At depth 4 the bottom (0.01) wins: an edge
    chosen, table = tuning.choose(build_frames(edge_records(val_at_top)).runs)
    edge = {int(r.frontier_value): bool(r.tuned_at_edge) for r in chosen.itertuples()}
    assert edge == {2: edge_at_2, 4: True}
    grids = {int(r.frontier_value): r.lr_grid for r in chosen.itertuples()}
    assert grids == {2: "{0.1, 0.3}", 4: "{0.01, 0.03}"}      # each setting's own range
    assert table["at_edge"].sum() == int(edge_at_2) + 1 and not table.loc[~table["chosen"], "at_edge"].any()


def test_tables_name_each_settings_grid_and_mark_edge_choices(tmp_path):
    results = write_results(tmp_path, edge_records(0.9))
    build_report(results, formats=("png",), workers=1)
    table = (results / "tables" / "tuned.md").read_text()
    assert "lr from {0.1, 0.3} at depth 2; {0.01, 0.03} at depth 4" in table
    assert "| 0.3‡ |" in table and "‡: still at an end of its range" in table
    assert "Chosen and reported on the same seeds" in table   # records without confirmation runs
    board = pd.read_csv(results / "leaderboards" / "tuned_by_depth.csv")
    assert board["tuned_at_edge"].tolist() == [True, True]


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


def test_tune_when_gives_the_matching_settings_their_own_values(tmp_path):
    g = grid.load(write_grid(tmp_path, textwrap.dedent("""
        [tune]
        lr = [0.1, 0.3]
        [[tune.when]]
        depth = 3
        lr = [0.001, 0.01, 0.03]
        [[tune.when]]
        depth = [2, 3]
        lr = [0.5, 1.0]
        """)))
    tried = [(r.spec.depth, r.spec.lr, tuple(r.tuning["lr"])) for r in g.runs]
    assert tried == ([(2, lr, (0.5, 1.0)) for lr in (0.5, 1.0)]            # the first rule
                     + [(3, lr, (0.001, 0.01, 0.03)) for lr in (0.001, 0.01, 0.03)])  # that matches
    assert g.tuning == {"lr": [0.1, 0.3]}
    assert g.tuning_when[0] == {"match": {"depth": 3}, "values": {"lr": [0.001, 0.01, 0.03]}}


def test_each_record_and_manifest_entry_carries_its_own_runs_values(tmp_path):
    import json

    from vgbench import cli

    path = write_grid(tmp_path, "[tune]\nlr = [0.1, 0.3]\nextend = 0\n[[tune.when]]\ndepth = 3\n"
                      "lr = [0.01]\n",
                      'task = "digits"\nwidth = 4\nbatch_size = 8\nsteps = 2\nlog_every = 1\n')
    results = tmp_path / "results"
    assert cli.main(["run", str(path), "--results", str(results), "--no-progress"]) == 0
    manifest = json.loads((results / "studies" / "g.json").read_text())
    by_run = {r["run_id"]: r["tuning"] for r in manifest["runs"]}
    roles = []
    for f in (results / "runs").glob("*.json"):
        rec = json.loads(f.read_text())
        want = {"lr": [0.01]} if rec["config"]["depth"] == 3 else {"lr": [0.1, 0.3]}
        roles.append(rec["role"])
        if rec["role"] == "tune":
            assert rec["tuning"] == by_run[rec["run_id"]] == want
        else:   # the confirmation run of the chosen value carries the values it was chosen from
            assert rec["tuning"] == want and rec["chosen"]["values"]["lr"] in want["lr"]
    assert sorted(roles) == ["confirm"] * 2 + ["tune"] * 3


@pytest.mark.parametrize("tune, message", [
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepth = 5\nlr = [0.01]\n",
     r"tune\.when\[0\] matches no run of the grid"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepth = 2\nlr = [0.01]\n[[tune.when]]\ndepth = 2\nlr = [1.0]\n",
     r"tune\.when\[1\] matches no run .*an earlier rule takes all it matches"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepth = 2\nsigma_w = [1.0]\n",
     r"tune\.when\[0\]\.sigma_w: 'sigma_w' is not tuned by \[tune\]"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\nlr = [0.01]\n", r"tune\.when\[0\]: matches every run"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepth = 2\n", r"tune\.when\[0\]: gives no values"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepht = 2\nlr = [0.01]\n",
     r"tune\.when\[0\]: unknown key 'depht'.*did you mean 'depth'"),
    ("[tune]\nlr = [0.1]\n[[tune.when]]\ndepth = 2\nlr = [0.01, 0.01]\n",
     r"tune\.when\[0\]\.lr: 0\.01 is listed twice"),
])
def test_bad_tune_when_rules_are_one_error_naming_file_and_rule(tmp_path, tune, message):
    path = write_grid(tmp_path, tune)
    with pytest.raises(grid.GridError, match=message) as err:
        grid.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("tune, fixed, message", [
    ("[tune]\nwidth = [8, 16]\n", 'task = "digits"\n',
     r"tune\.width: cannot tune 'width' \(it changes the compiled program"),
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

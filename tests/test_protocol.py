"""Tune, then confirm: disjoint seeds, choices blind to test labels, extensions that fire exactly
when an end value wins and stop at the declared limit, intervals only from 5 values, baselines
as declared, and ``vgbench compare`` against a committed per-seed reference file."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vgbench import grid, selection
from vgbench.report import stats
from vgbench.report.leaderboard import LIMITS, limited_by
from vgbench.runner import confirmation_grid, extensions
from vgbench.spec import SCHEMA
from vgbench.store import Store

TINY = 'task = "digits"\nmodel = "mlp"\nwidth = 8\nbatch_size = 16\nsteps = 6\nlog_every = 3\n'


def write(tmp_path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def protocol_grid(tmp_path, tune: str, study: str = "seeds = 3\n") -> Path:
    return write(tmp_path, f"[study]\nname = \"p\"\n{study}[fixed]\n{TINY}"
                           f"depth = 2\n[axes]\nactivation = [\"tanh\", \"relu\"]\n{tune}")


# ---------------------------------------------------------------------------- fake records

def fake_record(run, val: list[float], *, lost: int = 0, val_loss: float = 0.5) -> dict:
    """A minimal stored record of ``run``: per-seed validation accuracy ``val`` (its first
    ``lost`` seeds diverged), a validation loss and the task's trivial loss 2.3."""
    n = len(run.seeds)
    status = ["diverged"] * lost + ["ok"] * (n - lost)
    acc = [None] * lost + list(val[lost:])
    return {"schema": SCHEMA, "run_id": run.run_id, "config": run.spec.to_dict(),
            "seeds": list(run.seeds), "status": status, "diagnostics": {}, "summary": {},
            "target": {"metric": "test_accuracy", "higher_is_better": True},
            "metrics": {"final_val_accuracy": acc, "final_test_accuracy": acc,
                        "final_val_loss": [None] * lost + [val_loss] * (n - lost),
                        "task_baseline": [2.3] * n}}


def store_with(tmp_path, g, curve, **kw) -> Store:
    """A store holding every run of ``g`` with validation accuracy ``curve(lr)`` on both seeds."""
    store = Store(tmp_path / "results")
    for run in g.runs:
        store.write(fake_record(run, [curve(run.spec.lr)] * len(run.seeds), **kw))
    return store


def one_entry(tmp_path, tune: str) -> grid.Grid:
    path = write(tmp_path, f"[study]\nname = \"e\"\nseeds = 3\n[fixed]\n{TINY}depth = 2\n"
                           f"activation = \"relu\"\n{tune}")
    return grid.load(path)


def extend_until_done(g, store, curve, **kw) -> list[float]:
    """Run the extension loop on fake records; the values it added, in order."""
    added, runs = [], list(g.runs)
    for _ in range(10):
        new = extensions(g, store, runs)
        if not new:
            return added
        for run in new:
            store.write(fake_record(run, [curve(run.spec.lr)] * len(run.seeds), **kw))
            added.append(run.spec.lr)
        runs += new
    raise AssertionError("the extension loop did not stop")


# ---------------------------------------------------------------------------- the grid file

def test_tuning_and_confirmation_seeds_are_disjoint_and_declared(tmp_path):
    g = grid.load(protocol_grid(tmp_path, "[tune]\nlr = [0.1, 0.3]\nseeds = 2\n",
                                study="seeds = 5\n"))
    assert g.tune_seeds == (0, 1)
    assert g.seeds == (1000, 1001, 1002, 1003, 1004)
    assert all(r.seeds == (0, 1) and r.role == "tune" for r in g.runs)
    assert len({r.group for r in g.runs}) == 2   # two entries, each tried at two rates


@pytest.mark.parametrize("tune, study, message", [
    ("[tune]\nlr = [0.1]\nseeds = 0\n", "seeds = 3\n", r"p\.toml: tune\.seeds: expected a count >= 1"),
    ("[tune]\nlr = [0.1]\nseeds = [0, 1]\n", "seeds = [1, 2]\n",
     r"p\.toml: study\.seeds: the confirmation seeds \[1, 2\] share \[1\] with the tuning seeds"),
    ("[tune]\nlr = [0.1, 0.3]\nlimits = {lr = [0.2, 1.0]}\n", "seeds = 3\n",
     r"p\.toml: tune\.limits\.lr: \[0\.2, 1\] leaves out values of tune\.lr"),
    ("[tune]\nlr = [0.1, 0.3]\nlimits = {lr = [0.01, 0.2]}\n", "seeds = 3\n",
     r"p\.toml: tune\.limits\.lr: \[0\.01, 0\.2\] leaves out values of tune\.lr"),
    ("[tune]\nlr = [0.1]\nextend = -1\n", "seeds = 3\n", r"p\.toml: tune\.extend: expected a count"),
    ("[tune]\nlr = [0.1]\nlimits = {sigma_w = [0, 1]}\n", "seeds = 3\n",
     r"tune\.limits\.sigma_w: 'sigma_w' is not a tuned field"),
])
def test_bad_protocol_is_one_error_naming_file_and_key_and_nothing_runs(tmp_path, tune, study,
                                                                          message):
    from vgbench import cli

    path = protocol_grid(tmp_path, tune, study)
    with pytest.raises(grid.GridError, match=message):
        grid.load(path)
    assert cli.main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) != 0
    assert not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("baseline, message", [
    ('baseline = {activation = "gelu"}', r"p\.toml: study\.baseline\.activation: no run has "
                                         r"activation = 'gelu'; the runs have relu, tanh"),
    ('baseline = {depth = 2}', r"p\.toml: study\.baseline: every run matches"),
    ('baseline = {activation = "tanh"}\ncompare_within = ["width"]',
     r"p\.toml: study\.compare_within: 'width' is not an axis"),
])
def test_a_bad_baseline_is_one_error_naming_file_and_key(tmp_path, baseline, message):
    with pytest.raises(grid.GridError, match=message):
        grid.load(protocol_grid(tmp_path, "", study=f"seeds = 2\n{baseline}\n"))


def test_a_baseline_missing_from_a_comparison_group_is_an_error(tmp_path):
    path = write(tmp_path, f"""
        [study]
        name = "p"
        baseline = {{ skip = "none" }}
        compare_within = ["activation"]
        [fixed]
        {TINY.replace(chr(10), chr(10) + '        ')}depth = 3
        [axes]
        activation = ["tanh", "relu"]
        skip = ["none", "residual"]
        [[exclude]]
        activation = "relu"
        skip = "none"
        """)
    with pytest.raises(grid.GridError, match=r"study\.baseline: no run matches \{'skip': 'none'\} "
                                             r"among the runs with \{\"activation\": \"relu\"\}"):
        grid.load(path)


def test_modern_mitigations_compares_each_activation_with_its_own_unmitigated_network():
    """The declared baseline (no skip, no clip, no norm) is found through the mitigation axis
    within each activation, never replaced by another activation's network."""
    g = grid.load("benchmarks/modern_mitigations.toml")
    rows = [{**r.spec.to_dict(), **r.grid_axes} for r in g.runs if r.spec.depth == 16
            and r.spec.lr == r.tuning["lr"][0]]
    index = selection.baseline_of(rows, g.baseline, ["activation_init", "mitigation"],
                                  g.compare_within)
    for row, i in zip(rows, index):
        base = rows[i]
        assert base["mitigation"] == "none"
        assert base["activation_init"] == row["activation_init"]


# ---------------------------------------------------------------------------- extensions

def test_an_extension_fires_exactly_when_the_end_value_wins_and_stops_at_the_limit(tmp_path):
    g = one_entry(tmp_path, "[tune]\nlr = [0.01, 0.03]\nlimits = {lr = [0.001, 0.3]}\nextend = 5\n")
    rising = lambda lr: min(0.95, 0.5 + lr)                  # noqa: E731  (the top always wins)
    store = store_with(tmp_path / "a", g, rising)
    assert extend_until_done(g, store, rising) == [0.1, 0.3]   # 1.0 would pass the limit 0.3
    confirm = confirmation_grid(g, store).runs
    assert [r.spec.lr for r in confirm] == [0.3]
    assert confirm[0].chosen["at_edge"] == {"lr": "limit"}
    assert confirm[0].tuning == {"lr": [0.01, 0.03, 0.1, 0.3]}


def test_the_extension_budget_stops_it_and_says_so(tmp_path):
    g = one_entry(tmp_path, "[tune]\nlr = [0.01, 0.03]\nextend = 1\n")
    rising = lambda lr: 0.5 + lr                             # noqa: E731
    store = store_with(tmp_path / "a", g, rising)
    assert extend_until_done(g, store, rising) == [0.1]
    assert confirmation_grid(g, store).runs[0].chosen["at_edge"] == {"lr": "budget"}


@pytest.mark.parametrize("curve, kw", [
    (lambda lr: {0.01: 0.5, 0.03: 0.9, 0.1: 0.6}[lr], {}),        # the peak is inside
    (lambda lr: 0.7, {}),                                         # a tie at the end
    (lambda lr: 0.5 + lr, {"val_loss": 2.2}),                     # at chance: learned nothing
])
def test_no_extension_inside_on_a_tie_or_at_chance(tmp_path, curve, kw):
    g = one_entry(tmp_path, "[tune]\nlr = [0.01, 0.03, 0.1]\n")
    store = store_with(tmp_path / "a", g, curve, **kw)
    assert extensions(g, store) == []
    assert confirmation_grid(g, store).runs[0].chosen["at_edge"] == {}


def test_diverging_at_every_rate_extends_towards_smaller_rates(tmp_path):
    g = one_entry(tmp_path, "[tune]\nlr = [0.01, 0.03]\nlimits = {lr = [0.001, 1.0]}\nextend = 4\n")
    store = store_with(tmp_path / "a", g, lambda lr: 0.5, lost=2)
    new = extensions(g, store)
    assert [r.spec.lr for r in new] == [0.003]


def test_next_value_continues_a_one_three_series_or_repeats_the_ratio():
    assert selection.next_value([0.003, 0.01, 0.03], +1) == 0.1
    assert selection.next_value([0.003, 0.01, 0.03], -1) == 0.001
    assert selection.next_value([0.01, 0.03], -1) == 0.003
    assert selection.next_value([0.1, 0.2, 0.4], +1) == 0.8
    assert selection.next_value([0.1, 0.2, 0.4], -1) == 0.05


# ---------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def protocol_results(tmp_path_factory):
    """A tiny tuned study run by the runner, tune then confirm, and its report."""
    from vgbench import cli
    from vgbench.report import build_report

    tmp = tmp_path_factory.mktemp("protocol")
    path = protocol_grid(tmp, "[tune]\nlr = [0.03, 0.1]\nseeds = 2\nextend = 1\n"
                              "limits = {lr = [0.01, 0.3]}\n",
                         study='seeds = 5\nbaseline = {activation = "tanh"}\n')
    results = tmp / "results"
    assert cli.main(["run", str(path), "--results", str(results), "--no-progress"]) == 0
    build_report(results, formats=("png",), workers=1)
    return results


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]


def test_confirmation_runs_use_only_fresh_seeds_and_carry_their_choice(protocol_results):
    records = _records(protocol_results)
    tune = [r for r in records if r["role"] == "tune"]
    confirm = [r for r in records if r["role"] == "confirm"]
    assert len(confirm) == 2 and len(tune) >= 4
    tune_seeds = {s for r in tune for s in r["seeds"]}
    assert tune_seeds == {0, 1}
    for r in confirm:
        assert r["seeds"] == [1000, 1001, 1002, 1003, 1004]
        assert r["run_id"].endswith(selection.CONFIRM_SUFFIX)
        assert r["config"]["lr"] == r["chosen"]["values"]["lr"]
        assert r["env"]["program_fingerprint"]


def test_the_manifest_lists_every_run_of_the_study_confirmations_included(protocol_results):
    """A confirmation another study made first (same config, seeds and choice) keeps the record
    of that study; the manifest is what puts it in this one too."""
    from vgbench.report.records import in_studies, study_memberships

    manifest = json.loads((protocol_results / "studies" / "p.json").read_text())
    listed = {r["run_id"] for r in manifest["runs"]}
    assert {r["run_id"] for r in _records(protocol_results)} <= listed
    # a record that two manifests list belongs to both; one that none lists, to its own study;
    # one that its own study's manifest no longer lists (a setting taken out of the grid) is
    # not reported there
    record = {"run_id": "x", "study": "made_it", "grid_axes": {"depth": 8}}
    both = {"x": [{"study": "made_it", "grid_axes": {}}, {"study": "lists_it", "grid_axes": {}}]}
    assert [r["study"] for r in in_studies(record, both)] == ["made_it", "lists_it"]
    assert [r["study"] for r in in_studies(record, {})] == ["made_it"]
    assert [r["study"] for r in in_studies(record, {"x": [{"study": "lists_it"}]})] == ["lists_it"]
    assert len(study_memberships(protocol_results)) == len(listed)


def test_test_labels_never_reach_a_choice(protocol_results, tmp_path):
    """Scrambling every tuning record's test metrics leaves every choice as it was."""
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(protocol_results / "runs", copy / "runs")
    g = grid.load(next(protocol_results.parent.glob("p.toml")))
    store = Store(copy)
    before = [(r.group, r.spec.lr) for r in confirmation_grid(g, store).runs]
    rng = np.random.default_rng(0)
    for path in (copy / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        for key in list(rec["metrics"]):
            if key.startswith("final_test_"):
                rec["metrics"][key] = rng.uniform(size=len(rec["seeds"])).tolist()
        path.write_text(json.dumps(rec))
    assert [(r.group, r.spec.lr) for r in confirmation_grid(g, store).runs] == before


def test_tables_report_the_confirmation_seeds_and_the_sensitivity_figure_the_tuning_runs(
        protocol_results):
    board = pd.read_csv(protocol_results / "leaderboards" / "p.csv")
    assert (board["n_seeds"] == 5).all()
    assert set(board["limited_by"].dropna()) <= set(LIMITS)
    text = (protocol_results / "tables" / "p.md").read_text()
    assert "seeds 1000–1004" in text and "Chosen on tuning seeds 0, 1" in text
    reference = pd.read_csv(protocol_results / "reference" / "p.csv")
    assert set(reference["role"]) == {"tune", "confirm"}
    assert (protocol_results / "figures" / "p" / "lr_sensitivity.png").exists()


def test_compare_accepts_a_results_directory_or_the_committed_per_seed_file(protocol_results,
                                                                             tmp_path):
    from vgbench.report import compare

    reference = protocol_results / "reference" / "p.csv"
    table = compare.compare_results(protocol_results, reference)
    assert table["agree"].all() and len(table) == 2
    shifted = pd.read_csv(reference)
    shifted.loc[shifted["role"] == "confirm", "metric"] -= 0.5 * (
        shifted.loc[shifted["role"] == "confirm", "entry"] == "relu")
    shifted.to_csv(tmp_path / "p.csv", index=False)
    table = compare.compare_results(reference, tmp_path / "p.csv")
    bad = table[~table["agree"]]
    assert list(bad["entry"]) == ["relu"] and "do not overlap" in bad["why"].iloc[0]


def test_compare_names_what_it_cannot_read(tmp_path):
    from vgbench.report import compare

    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x\.csv: not a per-seed reference file: no column study"):
        compare.compare_results(tmp_path / "x.csv", tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither run records"):
        compare.compare_results(tmp_path / "empty", tmp_path / "x.csv")


# ---------------------------------------------------------------------------- statistics

def test_no_interval_from_fewer_than_five_values():
    assert all(math.isnan(x) for x in stats.bootstrap_ci([0.1, 0.2, 0.3, 0.4]))
    assert all(math.isnan(x) for x in stats.bootstrap_ci([0.5] * 6))   # no spread
    low, high = stats.bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert 0.1 <= low < 0.3 < high <= 0.5
    pair = stats.paired_comparison([0.9, 0.8], [0.5, 0.6])
    assert math.isnan(pair["diff_ci_low"]) and pair["diff_values"] == pytest.approx([0.4, 0.2])


def test_limited_by_reads_the_setting_in_a_fixed_order():
    base = {"n_seeds": 5, "n_reached": 0, "n_diverged": 0, "n_failed": 0,
            "log10_attenuation_final": -0.2, "still_improving_rate": 0.0}
    assert limited_by({**base, "n_reached": 4}) == "none"
    assert limited_by({**base, "n_diverged": 3}) == "diverged"
    assert limited_by({**base, "log10_attenuation_final": -5.0}) == "vanished"
    assert limited_by({**base, "log10_attenuation_final": 2.0}) == "exploded"
    assert limited_by({**base, "still_improving_rate": 0.8}) == "budget"
    assert limited_by(base) == "plateau"


def test_still_improving_compares_the_last_quarter():
    from vgbench.diagnostics import still_improving

    steps = [0, 25, 50, 75, 100]
    assert still_improving(np.array([0.1, 0.5, 0.7, 0.80, 0.85]), steps, True) is True
    assert still_improving(np.array([0.1, 0.5, 0.7, 0.80, 0.805]), steps, True) is False
    assert still_improving(np.array([2.0, 1.0, 0.5, 0.40, 0.30]), steps, False) is True
    assert still_improving(np.array([2.0, 1.0, 0.5, 0.40, 0.399]), steps, False) is False


# ---------------------------------------------------------------------------- the reference

def test_the_committed_reference_results_were_made_by_this_program():
    """A change to the code that trains and measures (vgbench.fingerprint) leaves the committed
    reference results behind until they are re-made, or until the new fingerprint is declared
    number-neutral, with a reason, in results/reference/fingerprints.txt."""
    from vgbench.fingerprint import program_fingerprint

    folder = Path(__file__).resolve().parent.parent / "results" / "reference"
    files = sorted(folder.glob("*.csv"))
    assert files, f"{folder}: no committed per-seed reference files"
    made_by = set()
    for f in files:
        column = pd.read_csv(f, usecols=["env_program_fingerprint"])["env_program_fingerprint"]
        made_by |= set(column.dropna().astype(str))
    declared = folder / "fingerprints.txt"
    neutral = {line.split()[0] for line in declared.read_text().splitlines()
               if line.strip() and not line.startswith("#")} if declared.exists() else set()
    now = program_fingerprint()
    assert made_by == {now} or now in neutral, (
        f"the reference results under {folder} were made by program {sorted(made_by)}; this code "
        f"is program {now}. Re-make them (make bench), or, if this change cannot move a number, "
        f"add '{now} <reason>' to {declared}")


def test_at_chance_reads_the_loss_and_an_accuracy_gain_over_initialisation():
    # a classifier right on most examples can keep a high loss: its accuracy gain says it learned
    assert not selection.at_chance([2.2, 2.3], 2.3, [0.5, 0.0], higher_is_better=True)
    assert selection.at_chance([2.2, 2.3], 2.3, [0.01, 0.02], higher_is_better=True)
    assert not selection.at_chance([1.0, 2.3], 2.3)                 # the loss fell below 0.9x
    assert selection.at_chance([2.2, 2.3], 2.3, [0.5, 0.5], higher_is_better=False)
    assert not selection.at_chance([np.nan, np.nan], 2.3)          # diverged everywhere


def test_the_fingerprint_ignores_docstrings_comments_and_layout_but_not_code(tmp_path):
    from vgbench.fingerprint import program_fingerprint

    def fingerprint(source: str) -> str:
        root = tmp_path / f"pkg{len(list(tmp_path.iterdir()))}"   # a new folder each time
        root.mkdir()
        (root / "m.py").write_text(textwrap.dedent(source))
        return program_fingerprint(root)

    base = fingerprint('def f(x):\n    """Doc."""\n    return x + 1\n')
    assert fingerprint('def f(x):  # why\n    """Other doc."""\n\n    return x + 1\n') == base
    assert fingerprint('def f(x):\n    """Doc."""\n    return x + 2\n') != base
    assert fingerprint('def f(x):\n    """Doc."""\n    s = "# kept"\n    return x + 1\n') != base

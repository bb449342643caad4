"""The runner: batching, shards, resume, incremental grids, bad input, SIGKILL, two runners at once."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fixtures_grids import tiny_grid

from vgbench import cli, grid
from vgbench.runner import make_batches, select_shard
from vgbench.train import program_key

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "benchmarks" / "smoke.toml"
VOLATILE = ("timing", "created")

TINY = tiny_grid("tiny", 'depth = [2, 3]\nactivation = ["tanh", "relu"]\ninit = ["naive", "he_normal"]')


def results_dir(path: Path, jax_cache: Path) -> Path:
    (path / ".cache").mkdir(parents=True, exist_ok=True)
    jax_cache.mkdir(parents=True, exist_ok=True)
    link = path / ".cache" / "jax"
    if not link.exists():
        link.symlink_to(jax_cache, target_is_directory=True)
    return path


def write_grid(tmp_path, text=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def records(results: Path) -> dict:
    """run_id -> record without the fields that may differ between identical runs."""
    out = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_bytes())
        for key in VOLATILE:
            rec.pop(key, None)
        rec["env"].pop("git_commit", None)   # the tree may change while the tests run
        out[path.stem] = rec
    return out


def vgbench_run(*args) -> int:
    return cli.main(["run", *map(str, args), "--no-progress"])


# ---------------------------------------------------------------------------- planning

def test_batches_group_runs_that_share_a_program(tmp_path):
    g = grid.load(write_grid(tmp_path))
    batches = make_batches([g])
    assert len(batches) == 4 and [b.index for b in batches] == [0, 1, 2, 3]
    for b in batches:
        assert len(b.runs) == 2 and b.entries == 4
        assert len({program_key(r.spec).run_id for r in b.runs}) == 1
        assert {r.spec.init for r in b.runs} == {"naive", "he_normal"}
    assert make_batches([g]) == batches
    small = make_batches([g], max_batch=3)    # a run's seeds are never split
    assert len(small) == 8 and all(b.entries == 2 for b in small)


def test_shards_partition_the_batches_deterministically():
    grids = grid.load_many([ROOT / "benchmarks" / "default.toml"])
    batches = make_batches(grids)
    for n in (1, 2, 3, 7):
        parts = [select_shard(batches, (i, n)) for i in range(1, n + 1)]
        assert sorted(b.index for p in parts for b in p) == [b.index for b in batches]
        assert parts == [select_shard(batches, (i, n)) for i in range(1, n + 1)]
        loads = [sum(b.cost for b in p) for p in parts]
        assert max(loads) <= 1.25 * (sum(loads) / n) + max(b.cost for b in batches)


def test_shard_argument_is_checked(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", str(SMOKE), "--shard", "4/3"])
    assert "1 <= i <= N" in capsys.readouterr().err


# ---------------------------------------------------------------------------- end to end

def test_run_resume_and_incremental_grid(tmp_path, jax_cache, capsys):
    path = write_grid(tmp_path)
    results = results_dir(tmp_path / "results", jax_cache)
    assert vgbench_run(path, "--results", results) == 0
    out = capsys.readouterr().out
    assert "tiny: 8 runs (8 run now), 0 diverged, 0 failed" in out
    first = {p.name: p.read_bytes() for p in (results / "runs").glob("*.json")}
    assert len(first) == 8
    rec = json.loads(next(iter(first.values())))
    assert rec["study"] == "tiny" and set(rec["grid_axes"]) == {"depth", "activation", "init"}
    assert rec["grid_hash"] == grid.load(path).grid_hash and rec["study_baseline"] is None
    study = json.loads((results / "studies" / "tiny.json").read_text())
    assert len(study["runs"]) == 8 and study["axes"] == ["depth", "activation", "init"]

    stamps = {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")}
    assert vgbench_run(path, "--results", results) == 0
    assert "nothing to run: all 8 runs are done" in capsys.readouterr().out
    # the second call ran nothing: every record is the same file, not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")} == stamps
    assert {p.name: p.read_bytes() for p in (results / "runs").glob("*.json")} == first

    path.write_text(textwrap.dedent(TINY).replace("depth = [2, 3]", "depth = [2, 3, 4]"))
    assert vgbench_run(path, "--results", results) == 0
    assert "tiny: 12 runs (4 run now)" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in (results / "runs").glob("*.json")}
    assert len(after) == 12
    assert all(after[name] == blob for name, blob in first.items())   # nothing redone


def test_corrupt_record_is_named_and_run_again(tmp_path, jax_cache, capsys):
    path = write_grid(tmp_path, TINY.replace('["tanh", "relu"]', '["tanh"]'))
    results = results_dir(tmp_path / "results", jax_cache)
    assert vgbench_run(path, "--results", results) == 0
    reference = records(results)
    victim = sorted((results / "runs").glob("*.json"))[0]
    victim.write_bytes(victim.read_bytes()[:100])       # as a crashed foreign writer would
    capsys.readouterr()
    assert vgbench_run(path, "--results", results) == 0
    captured = capsys.readouterr()
    assert str(victim) in captured.err and "not a valid record" in captured.err
    assert "(1 run now)" in captured.out
    assert records(results) == reference


def test_changed_seeds_rerun_and_keep_the_old_record(tmp_path, jax_cache, capsys):
    text = TINY.replace('["tanh", "relu"]', '["tanh"]').replace("depth = [2, 3]", "depth = [2]")
    path = write_grid(tmp_path, text)
    results = results_dir(tmp_path / "results", jax_cache)
    assert vgbench_run(path, "--results", results) == 0
    path.write_text(textwrap.dedent(text).replace("seeds = 2", "seeds = 3"))
    assert vgbench_run(path, "--results", results) == 0
    assert "(2 run now)" in capsys.readouterr().out
    assert all(r["seeds"] == [0, 1, 2] for r in records(results).values())
    assert len(list((results / "runs" / "superseded").glob("*.json"))) == 2


@pytest.mark.parametrize("text", [
    '[axes]\nactivation = ["relux"]\n',
    '[axes]\ndepth = []\n',
    '[fixed]\ndepth = "deep"\n',
])
def test_bad_grid_runs_and_writes_nothing(tmp_path, capsys, text):
    good = write_grid(tmp_path, TINY, "good.toml")
    bad = write_grid(tmp_path, text, "bad.toml")
    results = tmp_path / "results"
    assert vgbench_run(good, bad, "--results", results) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1
    assert not results.exists()


def test_missing_grid_file_is_one_error(tmp_path, capsys):
    assert vgbench_run(tmp_path / "nope.toml", "--results", tmp_path / "r") == 2
    assert "nope.toml: grid file does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_model_that_cannot_take_its_task_is_one_error_before_any_run(tmp_path, capsys):
    path = tmp_path / "misfit.toml"
    path.write_text(textwrap.dedent("""
        [study]
        name = "misfit"
        [fixed]
        task = "digits"
        steps = 10
        [axes]
        model = ["mlp", "rnn"]
    """))
    assert vgbench_run(path, "--results", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "misfit.toml: run with model='rnn'" in err and "needs sequence inputs" in err
    assert not (tmp_path / "r").exists()   # the mlp runs, which would fit, did not run either


def test_dry_run_lists_batches_and_writes_nothing(tmp_path, capsys):
    path = write_grid(tmp_path)
    assert vgbench_run(path, "--results", tmp_path / "r", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "8 runs: 0 done, 8 to run in 4 batches" in out
    assert not (tmp_path / "r").exists()


def test_shards_together_make_the_records_of_the_unsharded_run(tmp_path, jax_cache):
    path = write_grid(tmp_path)
    whole = results_dir(tmp_path / "whole", jax_cache)
    sharded = results_dir(tmp_path / "sharded", jax_cache)
    assert vgbench_run(path, "--results", whole) == 0
    counts = []
    for i in (1, 2, 3):
        before = len(list((sharded / "runs").glob("*.json"))) if (sharded / "runs").exists() else 0
        assert vgbench_run(path, "--results", sharded, "--shard", f"{i}/3") == 0
        counts.append(len(list((sharded / "runs").glob("*.json"))) - before)
    assert sum(counts) == 8 and all(c > 0 for c in counts)
    assert records(sharded) == records(whole)


# ---------------------------------------------------------------------------- processes

def start_runner(results: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vgbench.cli", "run", str(SMOKE), "--results",
                             str(results), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke_reference(tmp_path_factory, jax_cache):
    """The smoke study run once, uninterrupted, with a cold compilation cache."""
    base = tmp_path_factory.mktemp("smoke_ref")
    cold = base / "cold-cache"
    results = results_dir(base / "results", cold)
    proc = start_runner(results)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return results, cold


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_records_of_an_uninterrupted_run(tmp_path, smoke_reference):
    reference, cache = smoke_reference
    cache_entries = sorted(p.name for p in cache.iterdir())
    results = results_dir(tmp_path / "results", cache)
    runs = results / "runs"
    proc = start_runner(results)
    deadline = time.time() + 600
    while not (runs.exists() and list(runs.glob("*.json"))):
        assert proc.poll() is None and time.time() < deadline, "runner ended before its first record"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    at_kill = len(list(runs.glob("*.json")))
    assert 0 < at_kill < 8, "the kill must land part-way through the study"
    for path in runs.glob("*.json"):          # whatever the kill left is a whole record
        json.loads(path.read_bytes())

    proc = start_runner(results)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"smoke: 8 runs ({8 - at_kill} run now)" in out
    assert records(results) == records(reference)
    assert not list(runs.glob(".*.tmp"))
    # the same programs again: the persistent cache had them all, nothing new was compiled
    assert sorted(p.name for p in cache.iterdir()) == cache_entries


@pytest.mark.slow
def test_two_runners_on_one_results_directory(tmp_path, smoke_reference):
    reference, cache = smoke_reference
    results = results_dir(tmp_path / "results", cache)
    procs = [start_runner(results), start_runner(results)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = []
    for out in outs:
        line = next(x for x in out.splitlines() if x.startswith("smoke: 8 runs"))
        ran.append(int(line.split("(")[1].split(" run now")[0]))
    assert sum(ran) == 8, outs                         # every run ran exactly once
    assert not (results / "runs" / "superseded").exists()
    assert records(results) == records(reference)


def test_a_finished_record_without_the_theory_inputs_gets_them_without_running(tmp_path, jax_cache,
                                                                               capsys):
    from vgbench.store import Store

    results = results_dir(tmp_path / "results", jax_cache)
    path = write_grid(tmp_path, TINY.replace("depth = [2, 3]", "depth = [2]"))
    assert cli.main(["run", str(path), "--results", str(results)]) == 0
    store = Store(results)
    run_ids = sorted(p.stem for p in store.runs.glob("*.json"))
    made = {run_id: store.read(run_id) for run_id in run_ids}
    for run_id, record in made.items():   # as records made before the field existed
        store.write({k: v for k, v in record.items() if k != "theory"})
    capsys.readouterr()
    assert cli.main(["run", str(path), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"added the theory inputs to {len(run_ids)} existing records" in out
    assert "nothing to run" in out
    for run_id, record in made.items():
        assert store.read(run_id) == record   # the same fields as a fresh run's, nothing rerun

"""Executors: one batch per vmapped call, resumed batches, failures, busy locks, devices, Ray."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fixtures_grids import tiny_grid
from test_runner import records, results_dir

import vgbench
from vgbench import grid, train
from vgbench.executors import make_executor, run_batch
from vgbench.runner import make_batches
from vgbench.store import RunLock, Store

ROOT = Path(__file__).resolve().parent.parent

TINY = tiny_grid("tiny_exec", 'depth = [2, 3]\ninit = ["naive", "he_normal", "xavier_normal"]',
                 study='baseline = { init = "naive" }')


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(TINY))
    return path, make_batches([grid.load(path)])


def test_a_batch_is_one_call_and_its_records_carry_the_study(tmp_path, jax_cache, tiny, monkeypatch):
    _, batches = tiny
    calls = []
    real = train.execute
    monkeypatch.setattr(train, "execute", lambda *a: calls.append(a[-1].shape) or real(*a))
    results = results_dir(tmp_path / "a", jax_cache)
    result = run_batch(batches[0], results)
    assert calls == [(6,)]                     # 3 configs x 2 seeds in one vmapped call
    assert [o.result for o in result.outcomes] == ["ran"] * 3
    recs = records(results)
    assert len(recs) == 3
    for run in batches[0].runs:
        rec = recs[run.run_id]
        assert rec["study"] == "tiny_exec" and rec["grid_axes"] == {"depth": 2, "init": run.spec.init}
        assert rec["study_baseline"] == {"init": "naive"} and rec["config"]["init"] == run.spec.init
    # each config got its own initializer: different weights at step 0
    w0 = {rid: np.array(r["diagnostics"]["weight_norm"])[:, 0] for rid, r in recs.items()}
    assert len({tuple(v.ravel()) for v in w0.values()}) == 3
    again = run_batch(batches[0], results)
    assert again.outcomes == []                # nothing left to do


def test_a_resumed_batch_gives_its_missing_runs_the_uninterrupted_records(tmp_path, jax_cache, tiny):
    _, batches = tiny
    whole = results_dir(tmp_path / "whole", jax_cache)
    part = results_dir(tmp_path / "part", jax_cache)
    run_batch(batches[1], whole)
    keep = batches[1].runs[1].run_id
    (part / "runs").mkdir(parents=True)
    shutil.copy(whole / "runs" / f"{keep}.json", part / "runs")
    before = (part / "runs" / f"{keep}.json").read_bytes()
    result = run_batch(batches[1], part)
    assert sorted(o.run_id for o in result.outcomes) == sorted(
        r.run_id for r in batches[1].runs if r.run_id != keep)
    assert (part / "runs" / f"{keep}.json").read_bytes() == before
    assert records(part) == records(whole)


def test_a_failing_batch_writes_failed_records_and_the_grid_goes_on(tmp_path, jax_cache, tiny,
                                                                    monkeypatch):
    _, batches = tiny

    def boom(*args):
        raise FloatingPointError("the program could not run")

    monkeypatch.setattr(train, "execute", boom)
    results = results_dir(tmp_path / "r", jax_cache)
    result = run_batch(batches[0], results)
    assert {o.result for o in result.outcomes} == {"failed"}
    for rec in records(results).values():
        assert rec["status"] == ["failed", "failed"]
        assert rec["error"][0] == "FloatingPointError: the program could not run"
        assert "FloatingPointError" in rec["traceback"]
    monkeypatch.undo()
    assert run_batch(batches[0], results).outcomes == []               # failed is a result
    retried = run_batch(batches[0], results, retry_failed=True)
    assert {o.result for o in retried.outcomes} == {"ran"}
    assert len(list((results / "runs" / "superseded").glob("*.json"))) == 3


def test_a_batch_held_by_another_runner_is_left_alone(tmp_path, jax_cache, tiny):
    _, batches = tiny
    results = results_dir(tmp_path / "r", jax_cache)
    store = Store(results)
    lock = RunLock(store.locks / f"{batches[0].runs[2].run_id}.lock")
    assert lock.acquire()
    try:
        result = run_batch(batches[0], results)
        assert {o.result for o in result.outcomes} == {"busy"} and len(result.outcomes) == 3
        assert not list((results / "runs").glob("*.json")) if (results / "runs").exists() else True
    finally:
        lock.release()
    assert {o.result for o in run_batch(batches[0], results).outcomes} == {"ran"}


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid choices: local, ray"):
        make_executor("dask", "results")


def test_process_executor_matches_the_local_one(tmp_path, jax_cache, tiny, monkeypatch):
    path, batches = tiny
    local = results_dir(tmp_path / "local", jax_cache)
    pooled = results_dir(tmp_path / "pooled", jax_cache)
    for b in batches:
        run_batch(b, local)
    monkeypatch.delenv("VGBENCH_CPU_DEVICES")    # the workers share this machine's cores
    executor = make_executor("local", pooled, jobs=2)
    try:
        results = list(executor.map(batches))
    finally:
        executor.close()
    assert sorted(r.index for r in results) == [0, 1]

    def without_device_count(recs):
        return {rid: {**rec, "env": {k: v for k, v in rec["env"].items() if k != "device_count"}}
                for rid, rec in recs.items()}

    assert without_device_count(records(pooled)) == without_device_count(records(local))
    # each of the two workers asked for its half of the cores, not this process's two devices
    share = max(1, vgbench.usable_cores() // 2)
    for path in (pooled / "runs").glob("*.json"):
        assert json.loads(path.read_text())["env"]["device_count"] == share


SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    from vgbench import grid, train
    from vgbench.executors import run_batch
    from vgbench.runner import make_batches
    assert len(jax.local_devices()) == 2, jax.local_devices()
    # two accelerators' layout (vmapped entries, sharded across the devices); on a CPU the
    # entries run in sequence and the devices take slices of a batch instead
    train.entries_in_sequence = lambda: False
    batch = make_batches([grid.load(sys.argv[1])])[0]
    result = run_batch(batch, sys.argv[2])
    print(json.dumps([o.result for o in result.outcomes]))
    """)


@pytest.mark.slow
def test_seeds_are_sharded_across_two_devices(tmp_path, jax_cache):
    path = tmp_path / "three.toml"     # 3 runs x 1 seed: an odd batch, padded to 4 entries
    path.write_text(textwrap.dedent(TINY).replace("seeds = 2", "seeds = 1")
                    .replace("depth = [2, 3]", "depth = [2]"))
    batch = make_batches([grid.load(path)])[0]
    one = results_dir(tmp_path / "one", jax_cache)
    run_batch(batch, one)
    two = results_dir(tmp_path / "two", jax_cache)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    proc = subprocess.run([sys.executable, "-c", SHARDED, str(path), str(two)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == ["ran"] * 3
    on_one, on_two = records(one), records(two)
    assert on_one.keys() == on_two.keys()
    for rid in on_one:
        raw = json.loads((two / "runs" / f"{rid}.json").read_bytes())
        assert raw["timing"]["devices"] == 2 and raw["env"]["device_count"] == 2
        a, b = on_one[rid], on_two[rid]
        assert a["seeds"] == b["seeds"] and a["status"] == b["status"]
        for key in ("final_train_loss", "final_test_loss"):
            np.testing.assert_allclose(a["metrics"][key], b["metrics"][key], rtol=1e-4)
        np.testing.assert_allclose(np.array(a["diagnostics"]["delta_norm"], float),
                                   np.array(b["diagnostics"]["delta_norm"], float), rtol=1e-3)


@pytest.mark.slow
def test_ray_executor_on_a_local_ray_instance(tmp_path, jax_cache, tiny):
    pytest.importorskip("ray", reason="Ray is installed by `make test` (requirements-ray.lock)")
    path, batches = tiny
    local = results_dir(tmp_path / "local", jax_cache)
    for b in batches:
        run_batch(b, local)
    on_ray = results_dir(tmp_path / "ray", jax_cache)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-m", "vgbench.cli", "run", str(path), "--results",
                           str(on_ray), "--executor", "ray", "--jobs", "2", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tiny_exec: 6 runs (6 run now), 0 diverged, 0 failed" in proc.stdout
    assert records(on_ray) == records(local)

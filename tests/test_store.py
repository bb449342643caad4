"""The results store: record states (done, corrupt, other seeds, failed), atomic writes, locks."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vgbench.record import failed_record
from vgbench.spec import RunSpec
from vgbench.store import RunLock, Store

SPEC = RunSpec(depth=2, width=8, steps=10, log_every=5)


def fake_record(spec=SPEC, seeds=(0, 1), status=("ok", "ok")):
    return {"schema": "vgbench.run/1", "run_id": spec.run_id, "config": spec.to_dict(),
            "seeds": list(seeds), "status": list(status), "metrics": {}, "diagnostics": {},
            "summary": {}, "timing": {}}


def check(store, spec=SPEC, seeds=(0, 1)):
    return store.check(spec.run_id, spec.to_dict(), seeds)


def test_missing_then_done(tmp_path):
    store = Store(tmp_path)
    assert check(store).state == "missing"
    path = store.write(fake_record())
    assert path == tmp_path / "runs" / f"{SPEC.run_id}.json"
    state = check(store)
    assert state.state == "done" and state.status == ("ok", "ok")
    assert store.read(SPEC.run_id)["seeds"] == [0, 1]
    assert not list((tmp_path / "runs").glob("*.tmp"))


def test_a_float_field_is_compared_as_recorded(tmp_path):
    spec = SPEC.replace(lr=0.123456789)   # records keep 6 significant digits
    store = Store(tmp_path)
    rec = fake_record(spec)
    rec["config"]["lr"] = 0.123457
    store.write(rec)
    assert check(store, spec).state == "done"


@pytest.mark.parametrize("content, reason", [
    (b'{"schema": "vgbench.run/1", "run_id": ', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"schema": "other/1"}', "schema"),
])
def test_corrupt_files_are_reported_not_raised(tmp_path, content, reason):
    store = Store(tmp_path)
    store.runs.mkdir(parents=True)
    store.path(SPEC.run_id).write_bytes(content)
    state = check(store)
    assert state.state == "corrupt" and reason in state.reason
    assert state.path == str(store.path(SPEC.run_id))


def test_a_record_of_another_config_under_this_name_is_corrupt(tmp_path):
    store = Store(tmp_path)
    other = fake_record(SPEC.replace(depth=3))
    store.runs.mkdir(parents=True)
    store.path(SPEC.run_id).write_text(json.dumps(other))
    assert "run_id" in check(store).reason
    other["run_id"] = SPEC.run_id
    store.path(SPEC.run_id).write_text(json.dumps(other))
    assert "config differs" in check(store).reason


def test_other_seeds_and_failed_states(tmp_path):
    store = Store(tmp_path)
    store.write(fake_record(seeds=(0,), status=("ok",)))
    assert check(store).state == "other_seeds"
    store.write(failed_record(SPEC, [0, 1], "RuntimeError: boom"))
    state = check(store)
    assert state.state == "failed" and "boom" in state.reason


def test_supersede_keeps_every_old_record(tmp_path):
    store = Store(tmp_path)
    store.write(fake_record(seeds=(0,), status=("ok",)))
    first = store.supersede(SPEC.run_id)
    store.write(fake_record(seeds=(5,), status=("ok",)))
    second = store.supersede(SPEC.run_id)
    assert first != second and first.exists() and second.exists()
    assert json.loads(second.read_text())["seeds"] == [5]
    assert check(store).state == "missing"
    assert store.supersede(SPEC.run_id) is None


def test_lock_is_exclusive_and_its_file_goes_away(tmp_path):
    path = tmp_path / "locks" / "abc.lock"
    a, b = RunLock(path), RunLock(path)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert not path.exists()
    assert b.acquire()
    b.release()


def test_locked_takes_all_or_none(tmp_path):
    store = Store(tmp_path)
    other = RunLock(store.locks / "b.lock")
    assert other.acquire()
    with store.locked(["a", "b", "c"]) as held:
        assert held is None
    with store.locked(["a", "c"]) as held:   # nothing of the failed attempt stays held
        assert held == ["a", "c"]
    other.release()
    with store.locked(["b"]) as held:
        assert held == ["b"]


def test_locked_removes_temporary_files_of_a_killed_writer(tmp_path):
    store = Store(tmp_path)
    store.runs.mkdir(parents=True)
    stale = store.runs / f".{SPEC.run_id}.json.x1y2.tmp"
    stale.write_text("{half")
    other = store.runs / ".someone_else.json.zz.tmp"
    other.write_text("{")
    with store.locked([SPEC.run_id]) as held:
        assert held == [SPEC.run_id]
    assert not stale.exists() and other.exists()


def test_the_lock_of_a_killed_runner_is_free(tmp_path):
    """flock is released by the kernel when its holder dies, even by SIGKILL."""
    path = tmp_path / "locks" / "r.lock"
    code = textwrap.dedent(f"""
        import sys, time
        from vgbench.store import RunLock
        assert RunLock({str(path)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert not RunLock(path).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        lock = RunLock(path)
        while not lock.acquire():
            assert time.time() < deadline
            time.sleep(0.05)
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_records_are_written_readable_by_everyone_the_umask_allows(tmp_path):
    from vgbench.record import write_json_atomic

    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "r.json", fake_record())
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        path = write_json_atomic(tmp_path / "s.json", fake_record())
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert json.loads(path.read_text())["run_id"] == SPEC.run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.json"]   # no temporaries


def test_update_rewrites_a_record_under_its_lock_and_leaves_a_busy_run_alone(tmp_path):
    store = Store(tmp_path)
    record = {"run_id": "abc", "config": {}, "value": 1}
    store.write(record)
    assert store.update("abc", lambda r: {**r, "value": r["value"] + 1}) == store.path("abc")
    assert store.read("abc")["value"] == 2
    assert store.update("abc", lambda r: None) is None and store.read("abc")["value"] == 2
    assert store.update("missing", lambda r: r) is None
    with pytest.raises(ValueError, match="keep its run_id"):
        store.update("abc", lambda r: {**r, "run_id": "xyz"})
    lock = RunLock(store.locks / "abc.lock")   # another process is writing this run
    assert lock.acquire()
    try:
        assert store.update("abc", lambda r: {**r, "value": 99}) is None
    finally:
        lock.release()
    assert store.read("abc")["value"] == 2

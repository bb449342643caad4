"""The results store: one JSON record per run under ``<results>/runs/<run_id>.json``.

A record that exists is not run again, so a grid resumes where it stopped and an edited grid
runs only its new entries. Records are written atomically (temporary file, fsync, rename; see
``vgbench.record.write_json_atomic``): a crash at any moment leaves either the whole record or
none. A file that is not a readable record of the run it is named after is reported by name
and the run is done again; it never stops the grid.

Runners that share a results directory (several processes, Ray workers, Slurm array tasks on a
shared file system) take a lock per run id before running it: ``fcntl.flock`` on
``<results>/locks/<run_id>.lock``. The kernel drops the lock when its holder dies, even by
``kill -9``, so no lock is ever stale.

Layout::

    runs/<run_id>.json              one record per run (what the reporter reads)
    runs/superseded/<run_id>.<n>.json   older records replaced on request (never deleted)
    studies/<study>.json            each study's manifest: grid, axes, baseline, run ids
    locks/<run_id>.lock             held while a run is in flight
    .cache/jax/                     JAX's persistent compilation cache
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vgbench.record import clean, write_json_atomic
from vgbench.spec import SCHEMA, id_config


@dataclass(frozen=True)
class Existing:
    """What the store holds for one run id."""

    state: str                 # "missing", "done", "corrupt", "other_seeds", "failed"
    reason: str = ""
    path: str = ""
    status: tuple[str, ...] = ()   # the record's per-seed status, when it has one
    fields: frozenset = frozenset()  # the record's top-level fields, when it has one


class Store:
    """A results directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.locks = self.root / "locks"
        self.studies = self.root / "studies"
        self.cache = self.root / ".cache" / "jax"

    def path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    # -- reading ---------------------------------------------------------------------------
    def check(self, run_id: str, config: dict, seeds) -> Existing:
        """Whether ``run_id`` is done: its record exists, parses and belongs to this config.

        The record belongs to the config when the two agree on every field the run id hashes
        (:func:`vgbench.spec.id_config`): a record made before a field was added lacks it,
        and still belongs to a config that has that field at its default.
        """
        path = self.path(run_id)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return Existing("missing")
        except OSError as err:
            return Existing("corrupt", f"cannot be read ({err.strerror})", str(path))
        try:
            record = json.loads(blob)
        except (ValueError, RecursionError) as err:
            return Existing("corrupt", f"not valid JSON ({err})", str(path))
        reason = _record_problem(record, run_id, clean(config))
        if reason:
            return Existing("corrupt", reason, str(path))
        status = tuple(str(s) for s in record["status"])
        if record["seeds"] != [int(s) for s in seeds]:
            return Existing("other_seeds", f"made with seeds {record['seeds']}", str(path), status)
        if all(s == "failed" for s in status):
            return Existing("failed", str((record.get("error") or [""])[0]), str(path), status)
        return Existing("done", "", str(path), status, frozenset(record))

    def read(self, run_id: str) -> dict:
        return json.loads(self.path(run_id).read_bytes())

    # -- writing ---------------------------------------------------------------------------
    def write(self, record: dict) -> Path:
        """Write one record atomically under its run id."""
        return write_json_atomic(self.path(record["run_id"]), record)

    def update(self, run_id: str, change) -> Path | None:
        """Rewrite a stored record as ``change(record)`` returns it, holding the run's lock.

        Returns the path written; None when the run is busy (another process holds its
        lock), has no record, or ``change`` returns None (nothing to change).
        """
        with self.locked([run_id]) as held:
            if held is None or not self.path(run_id).exists():
                return None
            new = change(self.read(run_id))
            if new is None:
                return None
            if new.get("run_id") != run_id:
                raise ValueError(f"an update of record {run_id} must keep its run_id, "
                                 f"got {new.get('run_id')!r}")
            return self.write(new)

    def supersede(self, run_id: str) -> Path | None:
        """Move an existing record aside (kept under runs/superseded/), before it is redone."""
        src = self.path(run_id)
        if not src.exists():
            return None
        dest_dir = self.runs / "superseded"
        dest_dir.mkdir(parents=True, exist_ok=True)
        n = 0
        while (dest_dir / f"{run_id}.{n}.json").exists():
            n += 1
        dest = dest_dir / f"{run_id}.{n}.json"
        os.replace(src, dest)
        return dest

    def write_study(self, manifest: dict) -> Path:
        """Write a study's manifest (left untouched when it has not changed)."""
        path = self.studies / f"{manifest['name']}.json"
        try:
            if json.loads(path.read_bytes()) == manifest:
                return path
        except (OSError, ValueError):
            pass
        return write_json_atomic(path, manifest)

    def clean_temporaries(self, run_id: str) -> None:
        """Remove half-written temporary files a killed writer of ``run_id`` left behind.

        Call only while holding the run's lock: then no one else is writing it.
        """
        for tmp in self.runs.glob(f".{run_id}.json.*.tmp"):
            tmp.unlink(missing_ok=True)

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def locked(self, run_ids):
        """Hold the locks of every run id, or of none: yields the held ids or None if any is busy."""
        held: list[RunLock] = []
        try:
            for run_id in sorted(set(run_ids)):
                lock = RunLock(self.locks / f"{run_id}.lock")
                if not lock.acquire():
                    for h in held:
                        h.release()
                    held = []
                    yield None
                    return
                held.append(lock)
            for lock in held:
                self.clean_temporaries(lock.path.stem)
            yield [h.path.stem for h in held]
        finally:
            for h in held:
                h.release()


class RunLock:
    """An exclusive, non-blocking ``flock`` on a lock file, which is removed on release."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            # the holder before us may have removed the file after we opened it: then our lock
            # is on an orphaned inode and a third runner could lock a fresh file; start over
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)   # closing drops the flock
            self.fd = None


def _record_problem(record, run_id: str, config: dict) -> str | None:
    """Why a parsed file is not the record of ``run_id`` with ``config``, or None."""
    if not isinstance(record, dict):
        return f"not a JSON object but a {type(record).__name__}"
    if record.get("schema") != SCHEMA:
        return f"schema {record.get('schema')!r} is not {SCHEMA!r}"
    if record.get("run_id") != run_id:
        return f"its run_id {record.get('run_id')!r} does not match the file name"
    stored = record.get("config")
    if not isinstance(stored, dict) or id_config(stored) != id_config(config):
        return "its config differs from the run's config"
    seeds, status = record.get("seeds"), record.get("status")
    if not isinstance(seeds, list) or not seeds or not isinstance(status, list) or len(status) != len(seeds):
        return "its seeds or status are missing or inconsistent"
    for key in ("metrics", "diagnostics", "summary"):
        if not isinstance(record.get(key), dict):
            return f"field {key!r} is missing or not an object"
    return None

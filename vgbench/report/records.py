"""Reading run records: every file is either loaded or reported as a problem, never a crash.

A record is one JSON file ``<results>/runs/<run_id>.json`` in the layout of RECORD.md. Files
that are not JSON, have another ``schema`` or are missing a required field are skipped and
come back as :class:`Problem` entries, which the report lists in ``results/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import orjson

from vgbench.spec import SCHEMA, stored_config  # the record format this reporter reads

STATUSES = ("ok", "diverged", "failed")
_REQUIRED = {"run_id": str, "config": dict, "seeds": list, "status": list, "metrics": dict,
             "diagnostics": dict, "summary": dict}


@dataclass(frozen=True)
class Problem:
    """A record that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def check_record(record) -> str | None:
    """Why ``record`` cannot be read as a ``vgbench.run/1`` record, or None if it can."""
    if not isinstance(record, dict):
        return f"not a JSON object but a {type(record).__name__}"
    schema = record.get("schema")
    if schema != SCHEMA:
        if schema is None:
            return f"no 'schema' field (expected {SCHEMA!r})"
        return f"schema {schema!r} is not {SCHEMA!r} (a record of another format version)"
    for name, kind in _REQUIRED.items():
        if not isinstance(record.get(name), kind):
            return f"field {name!r} is missing or not a {kind.__name__}"
    n_seed = len(record["seeds"])
    if n_seed == 0 or not all(isinstance(s, int) and not isinstance(s, bool)
                              for s in record["seeds"]):
        return "'seeds' must be a non-empty list of integers"
    if len(record["status"]) != n_seed:
        return f"'status' has {len(record['status'])} entries for {n_seed} seeds"
    bad = sorted({str(s) for s in record["status"]} - set(STATUSES))
    if bad:
        return f"unknown status {bad[0]!r} (expected one of {', '.join(STATUSES)})"
    for group in ("metrics", "summary", "diagnostics"):
        for name, value in record[group].items():
            if group == "diagnostics" and name in ("steps", "layer_names"):
                continue
            if isinstance(value, list) and len(value) != n_seed:
                return f"{group}.{name} has {len(value)} entries for {n_seed} seeds"
    # a run whose every seed failed may have no diagnostics at all: it still counts
    steps = record["diagnostics"].get("steps")
    if any(s != "failed" for s in record["status"]) and (not isinstance(steps, list) or not steps):
        return "diagnostics.steps is missing or empty"
    return None


def record_paths(results_dir: str | Path) -> list[Path]:
    """The record files of a results directory, in name order."""
    return sorted((Path(results_dir) / "runs").glob("*.json"))


def read_record(path: Path) -> tuple[dict | None, Problem | None]:
    """One record file: ``(record, None)``, or ``(None, problem)`` if it cannot be used."""
    try:
        record = _parse(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or UTF-8
        return None, Problem(str(path), f"not readable as JSON ({err})")
    reason = check_record(record)
    if reason is not None:
        return None, Problem(str(path), reason)
    record["_source"] = str(path)
    record["config"] = stored_config(record["config"])   # fields added since: their defaults
    return record, None


def _parse(raw: bytes):
    """JSON text -> Python objects: orjson (about twice as fast on records, which are mostly
    numbers), else the standard library, which also reads what orjson refuses as not strict
    JSON (NaN, Infinity), as the reporter always has."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def load_records(results_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """Load every ``<results_dir>/runs/*.json``; returns ``(records, problems)``.

    Each loaded record gains a ``"_source"`` key with its path, so that later stages can
    name the file when they find something wrong with it. A record that several studies'
    manifests list comes back once per study (:func:`study_memberships`).
    """
    records, problems = [], []
    memberships = study_memberships(results_dir)
    for path in record_paths(results_dir):
        record, problem = read_record(path)
        if problem is None:
            records.extend(in_studies(record, memberships))
        else:
            problems.append(problem)
    return records, problems


def study_memberships(results_dir: str | Path) -> dict[str, list[dict]]:
    """run_id -> the studies whose manifest (``<results>/studies/<name>.json``) lists it.

    A config that two studies share runs once and has one record, written with the study that
    ran it; the manifests say every study it belongs to, with its coordinates in each.
    Unreadable manifests are ignored here (the runner rewrites them on every run).
    """
    members: dict[str, list[dict]] = {}
    for path in sorted((Path(results_dir) / "studies").glob("*.json")):
        try:
            manifest = json.loads(path.read_bytes())
            name, runs = manifest["name"], manifest["runs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for run in runs if isinstance(runs, list) else []:
            if isinstance(run, dict) and isinstance(run.get("run_id"), str):
                members.setdefault(run["run_id"], []).append({
                    "study": name, "grid_axes": run.get("grid_axes") or {},
                    "grid_hash": manifest.get("grid_hash"),
                    "study_baseline": manifest.get("baseline"),
                    "tuning": run.get("tuning") or manifest.get("tuning") or {}})
    return members


def in_studies(record: dict, memberships: dict[str, list[dict]]) -> list[dict]:
    """The record once per study it belongs to (shallow copies, study fields replaced): the
    studies whose manifests list it (every run of a study, confirmations and extensions
    included), else the one that made it (its ``study``)."""
    studies = memberships.get(record.get("run_id"))
    if not studies:
        return [record]
    return [{**record, **membership} for membership in studies]

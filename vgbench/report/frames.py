"""Tidy (long) frames from run records (:mod:`vgbench.report.arrays` unpacks the diagnostics).

* ``runs``: one row per run x seed: identity, grid axes, status, final metrics, summary.
* ``grad_stats``: one row per run x seed x log point x layer: the per-layer diagnostics.
* ``time_stats``: one row per recurrent run x seed x log point x time step, for the first
  (initialisation) and the last log point: ``time_delta_norm`` = ‖∂L/∂h_t‖.
* ``curves``: one row per run x seed x log point: losses, test metric, global gradient norm.

Every frame carries ``run_id`` and ``seed``; join on them for the columns of ``runs``
(:func:`with_runs` does). A study's *entries* are the combinations of its grid axes other than
the task and the *frontier axis* (``depth`` if it is an axis, else ``seq_len``). A zipped
axis with labels names its points: the config fields that its label fixes (``model``,
``width``, ... under ``architecture = "mlp_12"``) are left out of the entry, so the entry reads
``mlp_12 / batchnorm / residual`` rather than every field of the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vgbench.report.arrays import record_arrays
from vgbench.report.parallel import run_tasks
from vgbench.report.records import Problem, in_studies, read_record, record_paths, study_memberships

FRONTIER_AXES = ("depth", "seq_len")
THEORY_COLUMNS = ("sigma_w2", "sigma_b2")   # of a record's theory inputs, as theory_<name>
# config fields that never make an entry, even where they differ between ad-hoc runs
_NOT_AXES = ("data_dir", "plugin_hash", "target")


@dataclass
class Frames:
    """The tidy frames of a set of records, and the records that could not be used."""

    runs: pd.DataFrame
    grad_stats: pd.DataFrame
    time_stats: pd.DataFrame
    curves: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    study_baselines: dict = field(default_factory=dict)   # study -> its grid's baseline


@dataclass(frozen=True)
class StudyDesign:
    """Which axes of a study make its entries, and which one is the frontier axis."""

    entry_axes: tuple[str, ...]
    frontier_axis: str | None


def tuned_axes(records: list[dict]) -> tuple[str, ...]:
    """The fields a study tunes (its grid's [tune] section), in the records' order."""
    tuned: list[str] = []
    for record in records:
        tuned += [a for a in record.get("tuning") or {} if a not in tuned]
    return tuple(tuned)


def study_design(records: list[dict]) -> StudyDesign:
    """Entry axes and frontier axis of one study's records (see the module docstring).

    A tuned field (``[tune]``) is never an entry axis: each entry is reported at its chosen value.
    """
    tuned = tuned_axes(records)
    axes: list[str] = []
    for record in records:
        axes += [a for a in record.get("grid_axes") or {} if a not in axes and a not in tuned]
    if not axes:  # ad-hoc runs: the config fields that differ between them
        configs = [r["config"] for r in records]
        axes = [k for k in configs[0] if k not in _NOT_AXES and k not in tuned
                and len({_hashable(c.get(k)) for c in configs}) > 1]
    frontier = next((a for a in FRONTIER_AXES if a in axes), None)
    implied = _implied_by_labels(axes, records)
    return StudyDesign(tuple(a for a in axes if a not in ("task", frontier) and a not in implied),
                       frontier)


def _implied_by_labels(axes: list[str], records: list[dict]) -> set[str]:
    """Config-field axes whose value a zipped axis's label determines in every record.

    A grid axis that is not a config field is the label of a zipped axis. A field that takes
    one value per label value is set by that axis's points, and the label already names it.
    A field that varies within a label value (an axis crossed with it, or a zipped axis whose
    labels group several points, like ``matched``) stays an entry axis.
    """
    fields = set(records[0]["config"]) if records else set()
    labels = [a for a in axes if a not in fields]
    implied = set()
    for label in labels:
        for axis in (a for a in axes if a in fields):
            pairs = {(_hashable(axis_value(r, label)), _hashable(axis_value(r, axis))) for r in records}
            if len(pairs) == len({value for value, _ in pairs}):   # one field value per label
                implied.add(axis)
    return implied


def axis_value(record: dict, axis: str):
    """A record's value on a grid axis (the grid's word first, else the config's)."""
    grid_axes = record.get("grid_axes") or {}
    return grid_axes[axis] if axis in grid_axes else record["config"].get(axis)


def entry_label(values) -> str:
    """``("sigmoid", "naive")`` -> ``"sigmoid / naive"``; no entry axes -> ``"default"``."""
    return " / ".join(_text(v) for v in values) if len(values) else "default"


def build_frames(records: list[dict], *, arrays: list | None = None) -> Frames:
    """Tidy frames of ``records``; a record whose arrays are malformed is skipped and reported.

    ``arrays``, if given, holds :func:`record_arrays` of each record (or the error it raised),
    computed beforehand, so that the records themselves may come without their diagnostics.
    """
    arrays = arrays if arrays is not None else [_try_arrays(r) for r in records]
    by_study: dict[str, list] = {}
    for record, found in zip(records, arrays):
        by_study.setdefault(str(record.get("study") or "adhoc"), []).append((record, found))
    run_rows, layer_parts, time_parts, curve_parts, problems = [], [], [], [], []
    study_baselines = {}
    for study, members in sorted(by_study.items()):
        study_baselines[study] = next((r["study_baseline"] for r, _ in members
                                       if isinstance(r.get("study_baseline"), dict)), None)
        design = study_design([r for r, _ in members])
        orders = _entry_orders([r for r, _ in members], design)
        targets = _task_targets([r for r, _ in members])
        for record, found in members:
            try:
                if isinstance(found, Exception):
                    raise found
                rows = _run_rows(record, study, design, orders, targets,
                                 found["underflow_first"] if found else None)
            except (KeyError, TypeError, ValueError, IndexError) as err:
                where = record.get("_source") or f"run {record.get('run_id')}"
                problems.append(Problem(str(where), f"malformed record ({err})"))
                continue
            run_rows += rows
            if found is None:  # every seed failed before logging anything
                continue
            keys = (study, record["run_id"], record["seeds"], record["diagnostics"]["steps"])
            layer_parts.append((keys, found["layer"], found["layer_names"]))
            curve_parts.append((keys, found["curve"]))
            if found["time"] is not None:
                time_parts.append((keys, found["time"]))
    return Frames(runs=_runs_frame(run_rows), grad_stats=_long_frame(layer_parts, "layer"),
                  time_stats=_long_frame(time_parts, "t"), curves=_long_frame(curve_parts, None),
                  problems=problems, study_baselines=study_baselines)


def load_frames(results_dir: str | Path, *, workers: int = 1) -> Frames:
    """Load the records of ``results_dir`` and build their frames, on ``workers`` processes
    (parsing JSON is most of the time); problems of both stages are reported together."""
    paths = record_paths(results_dir)
    chunks = [paths[i::workers] for i in range(workers)] if workers > 1 else [paths]
    loaded = run_tasks([(_load_chunk, (chunk,)) for chunk in chunks if chunk], {}, workers)
    found = sorted((item for chunk in loaded for item in chunk), key=lambda item: item[0])
    problems = [item[1] for item in found if isinstance(item[1], Problem)]
    memberships = study_memberships(results_dir)
    kept = [(path, member, arrays) for path, record, *rest in found
            if not isinstance(record, Problem)
            for arrays in rest for member in in_studies(record, memberships)]
    frames = build_frames([item[1] for item in kept], arrays=[item[2] for item in kept])
    frames.problems = problems + frames.problems
    return frames


def _load_chunk(shared: dict, paths: list) -> list:
    """Read records and extract their arrays; the records come back without diagnostics."""
    out = []
    for path in paths:
        record, problem = read_record(path)
        if problem is not None:
            out.append((str(path), problem))
            continue
        found = _try_arrays(record)
        diagnostics = record["diagnostics"]
        record["diagnostics"] = {k: diagnostics[k] for k in ("steps", "layer_names",
                                                             "test_metric", "val_metric")
                                 if k in diagnostics}
        out.append((str(path), record, found))
    return out


def _try_arrays(record: dict):
    try:
        return record_arrays(record)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return err


RUN_ID_COLUMNS = ("study", "task", "entry", "entry_order", "entry_axes", "frontier_axis",
                  "frontier_value")


def with_runs(df: pd.DataFrame, runs: pd.DataFrame, columns=RUN_ID_COLUMNS) -> pd.DataFrame:
    """``df`` with columns of ``runs`` joined on ``(run_id, seed)`` (status, axes, ...)."""
    wanted = ["run_id", "seed"] + [c for c in columns if c in runs and c not in df]
    return df.merge(runs[wanted], on=["run_id", "seed"], how="left", validate="many_to_one")


# ---------------------------------------------------------------------------- mean-field theory
# what the theory study's table and figures share (:mod:`vgbench.report.theory`)

ACTIVATION_ORDER = {"tanh": 0, "relu": 1, "sigmoid": 2, "selu": 3}   # tables and panels


def delta_profiles(runs: pd.DataFrame, grad: pd.DataFrame) -> pd.DataFrame:
    """log10 ``delta_norm`` at initialization for each run x seed x hidden layer (seeds that
    finished; a signal that underflowed to zero is left out)."""
    ok = runs.loc[runs["ok"].astype(bool), ["run_id", "seed", "depth"]]
    rows = grad[(grad["log_point"] == 0)].merge(ok, on=["run_id", "seed"])
    rows = rows[rows["layer"] < rows["depth"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_delta = np.log10(rows["delta_norm"].where(rows["delta_norm"] > 0))
    return rows.assign(log10_delta=log_delta)[["run_id", "seed", "layer", "log10_delta"]]


# ---------------------------------------------------------------------------- one record

def _task_targets(records: list[dict]) -> dict:
    """task -> the target its records state, for records that state none (a failed run)."""
    targets = {}
    for record in records:
        if isinstance(record.get("target"), dict) and record["target"].get("metric"):
            targets.setdefault(record["config"].get("task"), record["target"])
    return targets


def _run_rows(record: dict, study: str, design: StudyDesign, orders: dict,
              targets: dict, underflow_first: np.ndarray | None) -> list[dict]:
    seeds, status, config = record["seeds"], record["status"], record["config"]
    metrics, summary = record["metrics"], record["summary"]
    target = record.get("target") or targets.get(config.get("task")) or {}
    metric_name, metric = _final_metric(record, target)
    val_metric = metrics.get("final_val_" + metric_name.removeprefix("test_"))
    tuning = record.get("tuning") or {}
    higher = target.get("higher_is_better", metric_name.endswith("accuracy"))
    env, timing = record.get("env") or {}, record.get("timing") or {}
    axes = {a: axis_value(record, a) for a in record.get("grid_axes") or {}}
    entry_values = tuple(_hashable(axis_value(record, a)) for a in design.entry_axes)
    frontier = axis_value(record, design.frontier_axis) if design.frontier_axis else None
    rows = []
    for i, seed in enumerate(seeds):
        ok = status[i] == "ok"
        steps_to_target = _seed_value(metrics.get("steps_to_target"), i)
        row = {
            "study": study, "run_id": record["run_id"], "task": config.get("task"),
            "entry": entry_label(entry_values), "entry_order": orders[entry_values],
            "entry_axes": " / ".join(design.entry_axes),
            "frontier_axis": design.frontier_axis,
            "frontier_value": float(frontier) if frontier is not None else math.nan,
            "seed": seed, "status": status[i], "ok": ok, "role": record.get("role") or "study",
            "compare_within": " / ".join(record.get("compare_within") or []),
            "diverged_at_step": _seed_value(record.get("diverged_at_step"), i),
            "error": _seed_value(record.get("error"), i),
            "target_metric": metric_name, "target_value": _number(target.get("value")),
            "higher_is_better": bool(higher), "metric": _number(metric[i]),
            "val_metric": _number(_seed_value(val_metric, i)),
            "val_metric_init": _number(_first_point(record["diagnostics"].get("val_metric"), i)),
            "tuned_axes": " / ".join(tuning),
            "tuned_values": "; ".join(f"{k} in {{{', '.join(_text(v) for v in vals)}}}"
                                     for k, vals in tuning.items()),
            "reached": bool(ok and steps_to_target is not None),
        }
        row.update({k: _number(_seed_value(v, i)) for k, v in metrics.items()})
        row.update({k: _number(_seed_value(v, i)) for k, v in summary.items()})
        for key in ("verdict_init", "verdict_final"):   # words (vgbench.verdict), not numbers
            if key in summary:
                row[key] = _seed_value(summary[key], i)
        for key, point in (("log10_attenuation_init", 0), ("log10_attenuation_final", -1)):
            # a signal that underflowed to zero at the input end vanished completely
            if ok and math.isnan(row.get(key, math.nan)) and underflow_first is not None \
                    and underflow_first[i, point]:
                row[key] = -math.inf
        row.update({k: _scalar(v) for k, v in config.items() if k not in row and k != "target"})
        theory = record.get("theory") or {}   # the mean-field theory's inputs, where it applies
        row.update({f"theory_{k}": _number(theory.get(k)) for k in THEORY_COLUMNS if theory})
        row.update({k: _scalar(v) for k, v in axes.items() if k not in row})
        row.update({"grid_hash": record.get("grid_hash"),
                    "vgbench_version": record.get("vgbench_version"),
                    "created": record.get("created"),
                    "compile_s": _number(timing.get("compile_s")),
                    "run_s": _number(timing.get("run_s"))})
        row.update({f"env_{k}": _scalar(v) for k, v in env.items()})
        rows.append(row)
    return rows


def _final_metric(record: dict, target: dict) -> tuple[str, list]:
    """The target metric's name and its per-seed final values."""
    metrics, n_seed = record["metrics"], len(record["seeds"])
    name = target.get("metric")
    if not name:
        name = "test_accuracy" if "final_test_accuracy" in metrics else "test_loss"
    for key in (f"final_{name}", f"final_test_{name}"):
        if isinstance(metrics.get(key), list):
            return name, metrics[key]
    series = record["diagnostics"].get("test_metric")
    if isinstance(series, list):
        return name, [s[-1] if isinstance(s, list) and s else None for s in series]
    return name, [None] * n_seed


# ---------------------------------------------------------------------------- assembling

def _entry_orders(records: list[dict], design: StudyDesign) -> dict[tuple, int]:
    entries = {tuple(_hashable(axis_value(r, a)) for a in design.entry_axes) for r in records}
    ordered = sorted(entries, key=lambda values: tuple(_sort_key(v) for v in values))
    return {values: i for i, values in enumerate(ordered)}


def _runs_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=["study", "run_id", "seed", "status", "ok", "entry"])
    runs = pd.DataFrame(rows)
    return runs.sort_values(["study", "task", "entry_order", "frontier_value", "seed"],
                            kind="stable", ignore_index=True)


def _long_frame(parts: list, inner: str | None) -> pd.DataFrame:
    """Stack per-record ``[seed, point(, inner)]`` arrays into one long frame."""
    columns: dict[str, list] = {}
    studies, run_ids, names = [], [], []
    for part in parts:
        (study, run_id, seeds, steps), arrays = part[0], part[1]
        points = arrays.get("_points", np.arange(len(steps)))
        values = {k: v for k, v in arrays.items() if k != "_points"}
        shape = next(iter(values.values())).shape
        index = np.indices(shape).reshape(len(shape), -1)
        n = index.shape[1]
        studies.append(([study], np.zeros(n, dtype=np.int64)))
        run_ids.append(([run_id], np.zeros(n, dtype=np.int64)))
        columns.setdefault("seed", []).append(np.asarray(seeds)[index[0]])
        columns.setdefault("log_point", []).append(points[index[1]])
        columns.setdefault("step", []).append(np.asarray(steps)[points[index[1]]])
        if inner is not None:
            columns.setdefault(inner, []).append(index[2])
        if inner == "layer":
            names.append((part[2], index[2]))
        for key, array in values.items():
            columns.setdefault(key, []).append(array.reshape(-1))
    if not parts:
        return pd.DataFrame(columns=["study", "run_id", "seed", "log_point", "step"])
    frame = {"study": _categorical(studies), "run_id": _categorical(run_ids)}
    frame.update({k: np.concatenate(v) for k, v in columns.items()})
    if names:
        frame["layer_name"] = _categorical(names)
    for flag in ("delta_underflow", "time_delta_underflow"):
        if flag in frame:
            frame[flag] = frame[flag] == 1
    return pd.DataFrame(frame)


def _categorical(parts: list[tuple]) -> pd.Categorical:
    """One categorical column from parts ``(labels, rows)``: ``labels[i]`` for each i in
    ``rows``. Built from codes, which is as quick as the rows are many (an object array of
    every row, factorized, is not). The categories are sorted, as ``pd.Categorical`` sorts
    them."""
    categories = sorted({label for labels, _ in parts for label in labels})
    code = {label: i for i, label in enumerate(categories)}
    codes = [np.array([code[label] for label in labels], dtype=np.int64)[rows]
             for labels, rows in parts]
    return pd.Categorical.from_codes(np.concatenate(codes), categories)


# ---------------------------------------------------------------------------- small helpers

def _first_point(series, i):
    """A per-seed series' value at log point 0 (initialisation), or None."""
    row = _seed_value(series, i)
    return row[0] if isinstance(row, list) and row else None


def _seed_value(values, i):
    return values[i] if isinstance(values, list) and i < len(values) else None


def _number(value) -> float:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _scalar(value):
    """Config and env values as CSV cells: lists and dicts become their JSON-ish text."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _hashable(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_key(value):
    """Numbers before text, numbers numerically; None last."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))

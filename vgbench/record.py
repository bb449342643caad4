"""Turn a program's raw outputs into run records (the contract in RECORD.md) and write them.

Records are JSON: floats rounded to 6 significant digits, never NaN or Infinity (those become
null, with the status or flag that explains them). A backpropagated signal that is exactly zero
in float32 is recorded as 0 with ``delta_underflow`` set for that seed, log point and layer.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vgbench.fingerprint import program_fingerprint

from vgbench.spec import SCHEMA, RunSpec

PLATEAU_TOL = 0.01        # relative change of the test loss below which it "stops changing"
PLATEAU_WINDOW = 0.2      # window, as a fraction of the run's log points (at least 2)
BLOWUP_FACTOR = 100.0     # a loss risen above 100x the trivial baseline (and its start) has blown up
LAYER_FIELDS = ("grad_norm", "delta_norm", "weight_norm", "update_ratio", "act_rms",
                "saturation", "tail_saturation", "inactive_fraction", "dead_fraction")
UNIT_FRACTIONS = ("dead_fraction", "saturation", "tail_saturation", "inactive_fraction")


def version() -> str:
    try:
        return importlib.metadata.version("vgbench")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy -> python, floats to 6 significant digits, non-finite -> None."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return float(f"{v:.6g}") if math.isfinite(v) else None
    return value


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the source tree vgbench is imported from (with '+dirty' if modified), if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "vgbench"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def env_info() -> dict[str, Any]:
    """Versions, backend and device; deliberately hostname-free."""
    import jax

    def ver(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {"python": platform.python_version(), "vgbench": version(),
            **{p: ver(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy")},
            "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "platform": f"{platform.system()}-{platform.machine()}",
            "git_commit": git_commit(), "program_fingerprint": program_fingerprint()}


# ---------------------------------------------------------------------------- summaries

def _log10(x):
    return math.log10(x) if x is not None and math.isfinite(x) and x > 0 else None


def attenuation(delta_row: np.ndarray) -> float | None:
    """log10 of ||dL/dh|| at the layer nearest the input over the one nearest the output."""
    first, last = float(delta_row[0]), float(delta_row[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0 or last <= 0:
        return None
    return math.log10(first) - math.log10(last)


def decay_slope(values: np.ndarray) -> float | None:
    """Least-squares slope of log10(values) against their index, over positive finite values."""
    values = np.asarray(values, np.float64)
    idx = np.arange(len(values))
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(idx[ok], np.log10(values[ok]), 1)[0])


def reached(metric: float, target: float, higher_is_better: bool) -> bool:
    if metric is None or not math.isfinite(metric):
        return False
    return metric >= target if higher_is_better else metric <= target


def plateau(test_loss: np.ndarray, test_metric: np.ndarray, target: float,
            higher_is_better: bool) -> tuple[bool, int | None]:
    """First log point from which the test loss changes by < PLATEAU_TOL (relative) over a window
    while the target is still unreached: the loss has stopped changing before the task is learnt."""
    n = len(test_loss)
    window = max(2, int(round(PLATEAU_WINDOW * (n - 1))))
    for p in range(n - window):
        a, b = test_loss[p], test_loss[p + window]
        if not (math.isfinite(a) and math.isfinite(b)):
            return False, None
        if abs(b - a) <= PLATEAU_TOL * max(abs(a), 1e-12) and not reached(
                float(test_metric[p + window]), target, higher_is_better):
            return True, p
    return False, None


IMPROVING_FRACTION = 0.25   # the last quarter of training
IMPROVING_ACCURACY = 0.01    # an accuracy still gaining at least a point over it
IMPROVING_LOSS = 0.02        # a loss still falling by at least 2 % (relative) over it


def still_improving(val_metric: np.ndarray, steps, higher_is_better: bool) -> bool | None:
    """Whether the validation metric still improved over the last quarter of training: from
    the log point nearest 75 % of the steps to the last, by at least ``IMPROVING_ACCURACY``
    (higher-is-better metrics, accuracies) or ``IMPROVING_LOSS`` of its value (losses). A run
    that failed while still improving was limited by its step budget, not by its gradient.
    None without two log points after initialisation or with a non-finite value."""
    steps = np.asarray(steps, np.float64)
    if len(steps) < 3:
        return None
    start = int(np.argmin(np.abs(steps - (1 - IMPROVING_FRACTION) * steps[-1])))
    start = min(max(start, 1), len(steps) - 2)
    a, b = float(val_metric[start]), float(val_metric[-1])
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    if higher_is_better:
        return bool(b - a >= IMPROVING_ACCURACY)
    return bool(a - b >= IMPROVING_LOSS * max(abs(a), 1e-12))


def _mean_hidden(values: np.ndarray) -> float | None:
    hidden = np.asarray(values[:-1], np.float64)
    hidden = hidden[np.isfinite(hidden)]
    return float(hidden.mean()) if hidden.size else None


HORIZON_FRACTION = 1e-3  # a lag is within the horizon while ||dL/dh_t|| >= 1e-3 of the last step's


def effective_horizon(time_row: np.ndarray) -> int | None:
    """Largest lag k = T-1-t with ||dL/dh_t|| >= HORIZON_FRACTION * ||dL/dh_T|| (0: the last step only)."""
    row = np.asarray(time_row, np.float64)
    last = row[-1]
    if not (math.isfinite(last) and last > 0):
        return None
    lags = np.nonzero(np.isfinite(row) & (row >= HORIZON_FRACTION * last))[0]
    return int(len(row) - 1 - lags.min())


def add_recurrent_summary(diagnostics: dict, summary: dict, logs: dict) -> None:
    """Per-time-step summaries of a recurrent run, from ``time_delta_norm[seed][point][t]``.

    ``log10_attenuation_*`` become log10 ||dL/dh_1|| - log10 ||dL/dh_T|| (first step over last);
    ``temporal_decay[_final]`` is the fitted slope of log10 ||dL/dh_t|| against t (decades per
    step, positive when the signal shrinks towards the start); ``effective_horizon[_final]``
    is :func:`effective_horizon`; ``gate_mean_init/final`` the first layer's mean forget/update
    gate. A step whose signal is exactly 0 in float32 is flagged in ``time_delta_underflow``.
    """
    time_delta = np.asarray(logs["time_delta_norm"], np.float64)
    diagnostics["time_delta_underflow"] = time_delta == 0
    gate = np.asarray(logs.get("gate_mean", np.full(time_delta.shape[:2], np.nan)), np.float64)
    for when, point in (("init", 0), ("final", -1)):
        rows = time_delta[:, point]
        summary[f"log10_attenuation_{when}"] = [attenuation(r) for r in rows]
        suffix = "" if when == "init" else "_final"
        summary[f"temporal_decay{suffix}"] = [decay_slope(r) for r in rows]
        summary[f"effective_horizon{suffix}"] = [effective_horizon(r) for r in rows]
        summary[f"gate_mean_{when}"] = list(gate[:, point])


def blown_up_at(losses: np.ndarray, final_train_loss: float, steps: list[int], last_step: int,
                baseline: float) -> int | None:
    """First step after initialization whose training loss has risen above both BLOWUP_FACTOR x
    the task's trivial baseline and the loss at initialization (the logged minibatch losses,
    then the final loss on the training set); None if it never did.

    Such a run has exploded even if its numbers are still finite (a loss of 1e33 is not a
    result to average), so it counts as diverged, like a non-finite loss or gradient. A network
    whose forward pass is already exploded at initialization (a deep ReLU residual stack can
    start at a loss of 1e13) and whose loss comes down from there is training, not blowing up.
    """
    start = float(losses[0]) if len(losses) and np.isfinite(losses[0]) else -np.inf
    limit = max(BLOWUP_FACTOR * baseline, start)
    for step, loss in zip(steps[1:], losses[1:]):
        if not np.isfinite(loss) or loss > limit:
            return int(step)
    if not np.isfinite(final_train_loss) or final_train_loss > limit:
        return int(last_step)
    return None


def _first(*steps):
    known = [s for s in steps if s is not None]
    return min(known) if known else None


# ---------------------------------------------------------------------------- theory inputs

PHI_X_MAX, PHI_POINTS = 16.0, 641   # an activation theory has no closed form for, tabulated


def theory_inputs(spec: RunSpec, input_size: int) -> dict | None:
    """What mean-field theory needs of a run, from the registry entries it names; None for a
    model the theory does not describe (``register_model(..., mean_field=True)``).

    ``sigma_w2``, ``sigma_b2``: the initializer's effective variances
    (``Initializer.mean_field``) for a hidden layer, ``width`` x ``width``, and
    ``stem_sigma_w2``, ``stem_sigma_b2`` for the first layer (fan-in ``input_size``); null
    where the scheme has no Gaussian equivalent. ``initializers``: the same pair, for a hidden
    layer, of every built-in initializer and of the run's own (the phase diagram's markers;
    never those a plugin happens to have registered in this process, so that a record does
    not depend on which process wrote it). ``activation``:
    the activation's name, which :func:`vgbench.theory.as_activation` resolves; for one it has
    no closed form for (a plugin's), ``phi`` tabulates it at ``PHI_POINTS`` even points of
    [-``PHI_X_MAX``, ``PHI_X_MAX``] (:func:`vgbench.theory.from_table`).
    """
    from vgbench import activations, inits, models, theory

    if not models.facts(spec.model).mean_field:
        return None
    act = activations.get(spec.activation).bind(spec)
    hp = inits.InitHyper(sigma_w=spec.sigma_w, sigma_b=spec.sigma_b, he_gain2=act.he_gain2)

    def pair(init, fan_in):
        found = init.effective_sigma2(hp, fan_in, spec.width)
        return (None, None) if found is None else (float(found[0]), float(found[1]))

    init = inits.get(spec.init)
    (sw2, sb2), (stem_sw2, stem_sb2) = pair(init, spec.width), pair(init, int(input_size))
    out = {"activation": spec.activation, "sigma_w2": sw2, "sigma_b2": sb2,
           "stem_sigma_w2": stem_sw2, "stem_sigma_b2": stem_sb2,
           "initializers": {name: list(pair(entry, spec.width))
                            for name, entry in inits.INITIALIZERS.items()
                            if name == spec.init or inits.INITIALIZERS.origin(name) == "vgbench"}}
    if spec.activation not in theory.NUMPY_ACTIVATIONS:
        x = np.linspace(-PHI_X_MAX, PHI_X_MAX, PHI_POINTS, dtype=np.float32)
        values = np.asarray(act.apply(x, act.init_theta(PHI_POINTS)), np.float64)
        out["phi"] = {"x_max": PHI_X_MAX, "values": [float(v) for v in values]}
    return out


def with_theory_inputs(record: dict) -> dict | None:
    """``record`` with its ``theory`` field added where its model has one and the record
    (made before the field existed) lacks it; None where there is nothing to add."""
    from vgbench import models, tasks

    config = record.get("config") or {}
    if "theory" in record or config.get("model") not in models.MODELS \
            or not models.facts(config["model"]).mean_field:
        return None
    spec = RunSpec.from_record(record)
    inputs = theory_inputs(spec, int(np.prod(tasks.make(spec).input_shape)))
    return None if inputs is None else clean({**record, "theory": inputs})


# ---------------------------------------------------------------------------- the record

def build_record(spec: RunSpec, seeds, outputs: dict, *, task, layer_names, compile_s: float,
                 run_s: float, batch_split: int = 1, study: str = "adhoc",
                 grid_hash: str | None = None, grid_axes: dict | None = None,
                 errors: list | None = None,
                 extra_diagnostics: dict | None = None, extra_summary: dict | None = None) -> dict:
    """The run record of ``spec`` from program outputs whose leading axis matches ``seeds``.

    ``extra_diagnostics`` and ``extra_summary`` are merged into ``diagnostics`` and ``summary``
    (e.g. the Jacobian spectra of :func:`vgbench.jacobian.jacobian_diagnostics`).
    ``batch_split``: the CPU devices each batch was split over (``timing.batch_split``).
    """
    seeds = [int(s) for s in seeds]
    logs, final = outputs["logs"], outputs["final"]
    steps = spec.log_steps
    errors = errors or [None] * len(seeds)
    diverged_at = [int(d) if d >= 0 else None for d in np.asarray(outputs["diverged_at"])]
    diverged_at = [_first(d, blown_up_at(np.asarray(logs["loss"][i]), final["train"]["loss"][i],
                                         steps, spec.steps, task.baseline))
                   for i, d in enumerate(diverged_at)]
    status = ["failed" if e else "diverged" if d is not None else "ok"
              for e, d in zip(errors, diverged_at)]
    metric_key = task.target_metric

    delta = np.asarray(logs["delta_norm"], np.float64)
    diagnostics = {"steps": steps, "layer_names": list(layer_names)}
    for key, value in logs.items():
        diagnostics[key] = np.asarray(value)
    diagnostics["delta_underflow"] = (delta == 0)

    metrics = {"final_train_loss": final["train"]["loss"]}
    for split in ("val", "test"):
        for key, value in final[split].items():
            metrics[f"final_{split}_{key}"] = value
    # a diverged seed has no final metrics (an argmax of NaN logits is not an accuracy)
    alive = np.array([d is None for d in diverged_at])
    metrics = {k: np.where(alive, np.asarray(v, np.float64), np.nan) for k, v in metrics.items()}
    test_metric = np.asarray(logs["test_metric"], np.float64)
    test_loss = np.asarray(logs["test_loss"], np.float64)

    summary: dict[str, list] = {k: [] for k in (
        "log10_attenuation_init", "log10_attenuation_final", "decay_per_layer", "plateau",
        "plateau_step")} | {f"{name}_final": [] for name in UNIT_FRACTIONS}
    steps_to_target = []
    for i in range(len(seeds)):
        summary["log10_attenuation_init"].append(attenuation(delta[i, 0]))
        summary["log10_attenuation_final"].append(attenuation(delta[i, -1]))
        summary["decay_per_layer"].append(decay_slope(delta[i, 0, :-1]))
        is_plateau, at = plateau(test_loss[i], test_metric[i], task.target, task.higher_is_better)
        summary["plateau"].append(is_plateau)
        summary["plateau_step"].append(steps[at] if at is not None else None)
        for name in UNIT_FRACTIONS:  # hidden layers at the end of training; None if not logged
            summary[f"{name}_final"].append(
                _mean_hidden(np.asarray(logs[name][i, -1])) if name in logs else None)
        hit = [s for s, m in zip(steps, test_metric[i]) if reached(m, task.target, task.higher_is_better)]
        first_hit = hit[0] if hit else None
        if diverged_at[i] is not None and first_hit is not None and first_hit > diverged_at[i]:
            first_hit = None
        steps_to_target.append(first_hit)
    metrics["steps_to_target"] = steps_to_target
    summary["still_improving"] = [
        still_improving(np.asarray(logs["val_metric"][i], np.float64), steps,
                        task.higher_is_better) if "val_metric" in logs and status[i] == "ok"
        else None for i in range(len(seeds))]
    metrics["task_baseline"] = [task.baseline] * len(seeds)
    if "time_delta_norm" in logs:
        add_recurrent_summary(diagnostics, summary, logs)
    else:   # the verdict's thresholds are calibrated over layers, not time steps
        from vgbench import verdict

        verdict.add_verdicts(summary, logs, layer_names)
    diagnostics.update(extra_diagnostics or {})
    summary.update(extra_summary or {})

    record = {
        "schema": SCHEMA, "run_id": spec.run_id, "study": study, "grid_hash": grid_hash,
        "grid_axes": dict(grid_axes or {}), "vgbench_version": version(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": spec.to_dict(), "seeds": seeds, "status": status,
        "diverged_at_step": diverged_at, "error": errors,
        "target": {"metric": f"test_{metric_key}", "value": task.target,
                   "higher_is_better": task.higher_is_better},
        "metrics": metrics, "diagnostics": diagnostics, "summary": summary,
        "timing": {"compile_s": compile_s, "run_s": run_s, "batch_split": int(batch_split)},
        "env": env_info(),
    }
    inputs = theory_inputs(spec, int(np.prod(task.input_shape)))
    if inputs is not None:
        record["theory"] = inputs   # what the reporter's mean-field predictions start from
    if getattr(task, "info", None):
        record["task_info"] = task.info   # how the task's data were made (e.g. a generator's arguments)
    return clean(record)


def failed_record(spec: RunSpec, seeds, error: str, **meta) -> dict:
    """A record for a config whose program could not be built or run: every seed 'failed'."""
    n = len(seeds)
    return clean({
        "schema": SCHEMA, "run_id": spec.run_id, "study": meta.get("study", "adhoc"),
        "grid_hash": meta.get("grid_hash"), "grid_axes": dict(meta.get("grid_axes") or {}),
        "vgbench_version": version(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": spec.to_dict(), "seeds": list(seeds), "status": ["failed"] * n,
        "diverged_at_step": [None] * n, "error": [error] * n, "target": None,
        "metrics": {}, "diagnostics": {}, "summary": {}, "timing": {}, "env": env_info()})


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, record: dict) -> Path:
    """Write ``record`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(record)  # serialise first: a record that cannot be written writes nothing
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; a record is for everyone to read
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def slice_outputs(outputs: dict, index) -> dict:
    """The outputs of the runs at ``index`` (an int array) along the leading (run x seed) axis."""
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], outputs)

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

from vgbench import verdict
from vgbench.diagnostics import blown_up_at, summarize
from vgbench.fingerprint import program_fingerprint
from vgbench.spec import SCHEMA, RunSpec


def version() -> str:
    try:
        return importlib.metadata.version("vgbench")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def clean(value: Any, *, float_arrays=None) -> Any:
    """JSON-safe copy: numpy -> python, floats to 6 significant digits, non-finite -> None.

    ``float_arrays``: a function that makes a float array JSON-ready at once (nested lists),
    in place of the value-by-value rounding, for callers that write many records quickly
    (the synthetic records); the records of real runs round value by value.
    """
    if isinstance(value, dict):
        return {k: clean(v, float_arrays=float_arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, float_arrays=float_arrays) for v in value]
    if isinstance(value, np.ndarray):
        if float_arrays is not None and value.dtype.kind == "f":
            return float_arrays(value)
        return clean(value.tolist(), float_arrays=float_arrays)
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
                 extra_diagnostics: dict | None = None, extra_summary: dict | None = None,
                 model_info: dict | None = None) -> dict:
    """The run record of ``spec`` from program outputs whose leading axis matches ``seeds``.

    ``extra_diagnostics`` and ``extra_summary`` are merged into ``diagnostics`` and ``summary``
    (e.g. the Jacobian spectra of :func:`vgbench.jacobian.jacobian_diagnostics`).
    ``batch_split``: the CPU devices each batch was split over (``timing.batch_split``).
    ``model_info``: what an adapted (flax, NNX) model says of its probes (``Model.info``),
    recorded as ``probes``; the verdict reads the layers of its ``signal_path``.
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
    metrics = {"final_train_loss": final["train"]["loss"]}
    for split in ("val", "test"):
        for key, value in final[split].items():
            metrics[f"final_{split}_{key}"] = value
    # a diverged seed has no final metrics (an argmax of NaN logits is not an accuracy)
    alive = np.array([d is None for d in diverged_at])
    metrics = {k: np.where(alive, np.asarray(v, np.float64), np.nan) for k, v in metrics.items()}
    measured, summary, metrics["steps_to_target"] = summarize(
        logs, steps, task=task, status=status, diverged_at=diverged_at)
    metrics["task_baseline"] = [task.baseline] * len(seeds)
    if "time_delta_norm" not in logs:   # the verdict's thresholds are calibrated over layers
        verdict.add_verdicts(summary, logs, layer_names,
                             path=verdict.path_indices(layer_names, model_info))
    diagnostics = {"steps": steps, "layer_names": list(layer_names), **measured,
                   **(extra_diagnostics or {})}
    summary.update(extra_summary or {})
    record = {**header(spec, seeds, status=status, diverged_at=diverged_at, errors=errors,
                       study=study, grid_hash=grid_hash, grid_axes=grid_axes),
              "target": {"metric": f"test_{task.target_metric}", "value": task.target,
                         "higher_is_better": task.higher_is_better},
              "metrics": metrics, "diagnostics": diagnostics, "summary": summary,
              "timing": {"compile_s": compile_s, "run_s": run_s, "batch_split": int(batch_split)},
              "env": env_info()}
    inputs = theory_inputs(spec, int(np.prod(task.input_shape)))
    if inputs is not None:
        record["theory"] = inputs   # what the reporter's mean-field predictions start from
    if getattr(task, "info", None):
        record["task_info"] = task.info   # how the task's data were made (e.g. a generator's arguments)
    if model_info:
        record["probes"] = model_info     # what the probes of an adapted model cover
    return clean(record)


def header(spec: RunSpec, seeds, *, status, diverged_at, errors, study: str = "adhoc",
           grid_hash: str | None = None, grid_axes: dict | None = None) -> dict:
    """The fields every record starts with, finished or failed: identity, provenance, outcome."""
    return {"schema": SCHEMA, "run_id": spec.run_id, "study": study, "grid_hash": grid_hash,
            "grid_axes": dict(grid_axes or {}), "vgbench_version": version(),
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "config": spec.to_dict(), "seeds": [int(s) for s in seeds], "status": list(status),
            "diverged_at_step": list(diverged_at), "error": list(errors)}


def failed_record(spec: RunSpec, seeds, error: str, **meta) -> dict:
    """A record for a config whose program could not be built or run: every seed 'failed'."""
    n = len(seeds)
    return clean({**header(spec, seeds, status=["failed"] * n, diverged_at=[None] * n,
                           errors=[error] * n, study=meta.get("study", "adhoc"),
                           grid_hash=meta.get("grid_hash"), grid_axes=meta.get("grid_axes")),
                  "target": None, "metrics": {}, "diagnostics": {}, "summary": {}, "timing": {},
                  "env": env_info()})


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

"""A record's diagnostics (nested JSON lists, null where undefined) as numpy arrays.

Per-layer fields become ``[seed, log_point, layer]`` float arrays, per-log-point fields
``[seed, log_point]``; for recurrent records ``time_delta_norm`` is kept at the first and the
last log point only, ``[seed, 2, t]``. A null becomes NaN and a seed that is null altogether a
row of NaN; anything not shaped as the record's seeds, steps and layers say is a ValueError.
"""

from __future__ import annotations

import numpy as np

from vgbench import diagnostics as table
from vgbench.diagnostics import N_WEIGHT_SAMPLES

# the diagnostics of the reporter's long frames (vgbench.diagnostics.TABLE, ``frame``)
LAYER_FIELDS = tuple(n for n in table.names(shape="layer", frame=True)
                     if table.BY_NAME[n].source != "record")
CURVE_FIELDS = table.names(shape="point", frame=True)


def underflow_first(record: dict) -> np.ndarray | None:
    """``[seed, log_point]``: did the signal at the input end (layer 0 or t = 0) underflow?"""
    diagnostics = record["diagnostics"]
    flags = diagnostics.get("time_delta_underflow", diagnostics.get("delta_underflow"))
    if flags is None:
        return None
    shape = (len(record["seeds"]), len(diagnostics["steps"]), _last_dim(flags))
    return _array(flags, shape, "underflow")[:, :, 0] == 1


def record_arrays(record: dict) -> dict | None:
    """The diagnostics of one record as float arrays (None if it logged nothing)."""
    diagnostics = record["diagnostics"]
    if not diagnostics.get("steps"):
        return None
    n_seed, n_point = len(record["seeds"]), len(diagnostics["steps"])
    names = diagnostics.get("layer_names")
    n_layer = len(names) if isinstance(names, list) else _last_dim(diagnostics.get("delta_norm"))
    names = [str(n) for n in names] if isinstance(names, list) else [
        f"layer_{i}" for i in range(n_layer)]
    shape = (n_seed, n_point, n_layer)
    layer = {f: _array(diagnostics.get(f), shape, f) for f in LAYER_FIELDS}
    layer["delta_underflow"] = _array(diagnostics.get("delta_underflow"), shape, "delta_underflow")
    samples = _array(diagnostics.get("weight_samples"), shape + (N_WEIGHT_SAMPLES,), "weight_samples")
    layer.update({f"weight_sample_{k}": samples[..., k] for k in range(N_WEIGHT_SAMPLES)})
    curve = {f: _array(diagnostics.get(f), (n_seed, n_point), f) for f in CURVE_FIELDS}
    time = None
    if diagnostics.get("time_delta_norm") is not None:
        t_shape = (n_seed, n_point, _last_dim(diagnostics["time_delta_norm"]))
        keep = [0, n_point - 1] if n_point > 1 else [0]  # initialisation and end of training
        time = {"time_delta_norm": _array(diagnostics["time_delta_norm"], t_shape, "time_delta_norm"),
                "time_delta_underflow": _array(diagnostics.get("time_delta_underflow"), t_shape,
                                               "time_delta_underflow")}
        time = {k: v[:, keep] for k, v in time.items()} | {"_points": np.array(keep)}
    return {"layer": layer, "layer_names": names, "curve": curve, "time": time,
            "underflow_first": underflow_first(record)}


def _array(value, shape: tuple, name: str) -> np.ndarray:
    """A nested list as a float array of ``shape``; null -> NaN, a null seed -> all NaN."""
    if value is None:
        return np.full(shape, np.nan)
    try:
        out = np.asarray(value, dtype=float)
        if out.shape == shape:
            return out
    except (TypeError, ValueError):
        pass
    if not isinstance(value, list) or len(value) != shape[0]:
        raise ValueError(f"diagnostics.{name} is not shaped {list(shape)}")
    out = np.full(shape, np.nan)
    for i, per_seed in enumerate(value):
        if per_seed is None:
            continue
        try:
            row = np.asarray(per_seed, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"diagnostics.{name}[{i}] is ragged") from None
        if row.shape != shape[1:]:
            raise ValueError(f"diagnostics.{name}[{i}] is shaped {list(row.shape)}, "
                             f"expected {list(shape[1:])}")
        out[i] = row
    return out


def _last_dim(nested) -> int:
    """Length of the innermost list of the first non-null element of a nested list."""
    while isinstance(nested, list):
        inner = next((x for x in nested if x is not None), None)
        if not isinstance(inner, list):
            return len(nested)
        nested = inner
    raise ValueError("cannot find the length of a diagnostics array")

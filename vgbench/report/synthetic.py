"""Synthetic run records with realistic shapes, for the reporter's tests, benchmark and demos.

The numbers follow the textbook picture, not a simulation: the backpropagated signal shrinks
by a fixed factor per layer (or per time step) that depends on the activation, the init and
the mitigation; a run learns when the end-to-end attenuation stays within about three orders
of magnitude, and otherwise sits on a plateau at the trivial predictor's loss. Nothing here
imports JAX: a record is plain JSON-ready data in the layout of RECORD.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vgbench import diagnostics as table
from vgbench.record import clean
from vgbench.spec import SCHEMA, field_defaults, log_steps, run_id_of

CONFIG_DEFAULTS: dict[str, Any] = field_defaults()   # the run config's own (no model's)

ENV = {"python": "3.11.9", "jax": "0.4.35", "jaxlib": "0.4.35", "flax": "0.10.2",
       "optax": "0.2.4", "numpy": "2.1.3", "backend": "cpu", "device_kind": "cpu",
       "device_count": 1, "git_commit": "0123456789abcdef0123456789abcdef01234567"}

# per-layer gain of the backpropagated signal: the activation's mean squared slope times the
# init's weight variance, square-rooted (mean-field theory's chi_1 ** 0.5)
_ACTIVATION_GAIN = {"sigmoid": 0.25, "tanh": 0.8, "relu": 0.71, "leaky_relu": 0.72,
                    "elu": 0.8, "selu": 1.0, "gelu": 0.75, "silu": 0.7, "identity": 1.0}
_INIT_GAIN = {"naive": 1.0, "small_normal": 0.3, "xavier_normal": 1.0, "xavier_uniform": 1.0,
              "he_normal": 1.41, "he_uniform": 1.41, "lecun_normal": 1.0, "orthogonal": 1.05}
_CELL_GAIN = {"rnn": 0.85, "gru": 0.97, "lstm": 0.99}
# where an activation's flat units sit (vgbench.activations declares it for the real entries)
_TAIL = ("sigmoid", "tanh", "elu", "selu", "softsign", "hard_tanh")
_OFF = ("relu", "leaky_relu", "prelu", "gelu", "silu")
_TASKS = {  # trivial predictor's loss, target metric, target, higher is better, start metric
    "digits": (2.303, "test_accuracy", 0.9, True, 0.1),
    "adding": (0.167, "test_loss", 0.05, False, 0.167),
    "teacher": (1.0, "test_loss", 0.1, False, 1.0),
}


def _round6(value: np.ndarray) -> list:
    """A float array rounded to 6 significant digits at once, non-finite values as None:
    thousands of records must be quick (``record.clean`` rounds value by value)."""
    finite = np.isfinite(value)
    safe = np.where(finite & (value != 0), np.abs(value), 1.0)
    scale = 10.0 ** (5 - np.floor(np.log10(safe)))
    rounded = np.round(value * scale) / scale
    return np.where(finite, rounded, None).tolist()


def _clean(value):
    """JSON-ready: numpy to Python, 6 significant digits, non-finite floats to None."""
    return clean(value, float_arrays=_round6)


def _per_step_gain(config: dict) -> float:
    if config["model"] == "rnn":
        return _CELL_GAIN.get(config["cell"], 0.9)
    if config["skip"] != "none" or config["norm"] != "none":
        return 0.98
    return _ACTIVATION_GAIN.get(config["activation"], 0.8) * _INIT_GAIN.get(config["init"], 1.0)


def make_record(*, study: str = "adhoc", grid_axes: dict | None = None, seeds=(0, 1, 2),
                diverge: dict[int, int] | None = None, fail: dict[int, str] | None = None,
                grid_hash: str | None = "5eed0f00", created: str = "2025-01-15T12:00:00Z",
                weight_scale: float = 1.0, signal_boost: float = 0.0, legacy: bool = False,
                theory: bool = False, **config_changes) -> dict:
    """A realistic record for one config; ``diverge`` maps seed -> step, ``fail`` seed -> error.

    ``weight_scale`` multiplies how far the weights move; ``signal_boost`` adds that many
    decades to the backpropagated signal at the input end (an exploding entry); ``legacy``
    leaves out the fields that older records lack (``tail_saturation``, ``inactive_fraction``).
    ``theory``: add the mean-field theory's inputs a real record of this config carries
    (:func:`vgbench.record.theory_inputs`; this imports the registries, and so JAX).
    """
    config = {**CONFIG_DEFAULTS, **config_changes}
    diverge, fail, seeds = diverge or {}, fail or {}, list(seeds)
    recurrent = config["model"] == "rnn"
    baseline, metric, target, higher, start = _TASKS.get(config["task"], _TASKS["teacher"])
    if config["target"] is not None:
        target = float(config["target"])
    steps = np.array(log_steps(config["steps"], config["log_every"]))
    n_seed, n_point = len(seeds), len(steps)
    n_layer = 3 if recurrent else config["depth"]
    horizon = config["seq_len"] if recurrent else n_layer
    gain = _per_step_gain(config)
    rng = np.random.default_rng(int(run_id_of(config)[:8], 16))

    # backpropagated signal: gain per layer/time step, input-side entries smallest
    log_gain = math.log10(gain) + 0.3 / horizon * rng.standard_normal((n_seed, 1, 1))
    span = np.arange(horizon)[::-1]
    attenuation = -log_gain[:, 0, 0] * (horizon - 1)              # orders of magnitude lost
    learns = attenuation < 3.0 + 0.3 * rng.standard_normal(n_seed)
    # training that learns also halves the attenuation (the layers near the input wake up)
    healing = 1 - 0.5 * learns[:, None, None] * np.linspace(0, 1, n_point)[None, :, None]
    log_delta = (-1.0 + log_gain * span * healing + signal_boost * span / max(horizon - 1, 1)
                 + 0.05 * rng.standard_normal((n_seed, n_point, horizon)))
    delta = 10.0 ** log_delta
    underflow = log_delta < -38
    delta[underflow] = 0.0
    layer_delta = delta if not recurrent else 10.0 ** (-1.0 + 0.05 * rng.standard_normal(
        (n_seed, n_point, n_layer)))
    layer_underflow = underflow if not recurrent else np.zeros_like(layer_delta, bool)

    # loss: exponential decay towards a floor when the signal arrives, a plateau otherwise
    rate = np.where(learns, 3.0 + rng.random(n_seed), 0.02)[:, None]
    frac = steps[None, :] / max(config["steps"], 1)
    floor = 0.05 * baseline
    loss = floor + (baseline - floor) * np.exp(-rate * frac) + 0.01 * baseline * rng.random(
        (n_seed, n_point))
    test_loss = loss * (1.05 + 0.02 * rng.random((n_seed, 1)))
    if higher:
        test_metric = start + (1 - start) * np.clip(1 - test_loss / baseline, 0, 1) * 0.99
    else:
        test_metric = test_loss
    reached = (test_metric >= target) if higher else (test_metric <= target)
    # the validation split: as hard as the test split, measured on other examples
    val_loss = test_loss * 1.02
    val_metric = np.clip(test_metric - 0.01, 0, 1) if higher else val_loss

    weight0 = rng.standard_normal((n_seed, 1, n_layer, 4)) / math.sqrt(config["width"])
    mobility = np.clip(layer_delta.mean(axis=1, keepdims=True) * 10, 0, 1)[..., None]
    walk = np.cumsum(rng.standard_normal((n_seed, n_point, n_layer, 4)), axis=1) * 0.02
    walk[:, 0] = 0.0
    weight_samples = weight0 + weight_scale * mobility * walk

    # a rectifier is off on about half the examples (more in deep naive nets, as units die);
    # a bounded activation sits in its flat tails when its inputs are large
    off, tail = config["activation"] in _OFF, config["activation"] in _TAIL
    noise = rng.random((n_seed, n_point, n_layer))
    dead = np.clip(0.004 * n_layer * (config["activation"] in ("relu", "leaky_relu"))
                   + 0.01 * noise, 0, 1)
    inactive = np.clip(off * (0.5 + 0.2 * dead + 0.05 * noise), 0, 1)
    tail_saturation = np.clip(tail * (0.3 * (config["init"] == "naive") + 0.02 * noise), 0, 1)
    saturation = inactive + tail_saturation
    grad_norm = layer_delta * math.sqrt(config["width"]) * (0.5 + rng.random((n_seed, n_point, n_layer)))

    status = ["failed" if s in fail else "diverged" if s in diverge else "ok" for s in seeds]
    diverged_at = [diverge.get(s) if s not in fail else None for s in seeds]
    errors = [fail.get(s) for s in seeds]

    def per_seed(array):
        """Blank the seeds and log points that a failure or divergence left undefined."""
        out = np.array(array, dtype=float)
        for i, seed in enumerate(seeds):
            if seed in fail:
                out[i] = np.nan
            elif seed in diverge:
                out[i, steps >= diverge[seed]] = np.nan
        return out

    def first_step(hit):
        return [int(steps[np.argmax(row)]) if row.any() and status[i] == "ok" else None
                for i, row in enumerate(hit)]

    d_first, d_last = log_delta[:, :, 0], log_delta[:, :, -1]
    atten = np.where(underflow[:, :, 0], np.nan, d_first - d_last)
    slope = np.array([np.polyfit(np.arange(horizon), log_delta[i, 0], 1)[0] for i in range(n_seed)])
    ok = np.array([s == "ok" for s in status])
    summary = {
        "log10_attenuation_init": np.where(ok, atten[:, 0], np.nan),
        "log10_attenuation_final": np.where(ok, atten[:, -1], np.nan),
        "decay_per_layer": np.where(ok, slope, np.nan),
        "plateau": [bool(not learn) for learn in learns],
        "plateau_step": [int(steps[min(2, n_point - 1)]) if not learn else None for learn in learns],
        "dead_fraction_final": np.where(ok, dead[:, -1].mean(axis=1), np.nan),
        "saturation_final": np.where(ok, saturation[:, -1].mean(axis=1), np.nan),
        "tail_saturation_final": np.where(ok, tail_saturation[:, -1].mean(axis=1), np.nan),
        "inactive_fraction_final": np.where(ok, inactive[:, -1].mean(axis=1), np.nan),
    }
    metrics = {
        "final_train_loss": per_seed(loss)[:, -1],
        "final_val_loss": per_seed(val_loss)[:, -1],
        "final_test_loss": per_seed(test_loss)[:, -1],
        "steps_to_target": first_step(reached),
        "task_baseline": [baseline] * n_seed,
    }
    if higher:
        metrics["final_val_accuracy"] = per_seed(val_metric)[:, -1]
        metrics["final_test_accuracy"] = per_seed(test_metric)[:, -1]
    diagnostics = {
        "steps": steps, "layer_names": [f"dense_{i}" for i in range(n_layer)],
        "loss": per_seed(loss), "val_loss": per_seed(val_loss), "val_metric": per_seed(val_metric),
        "test_loss": per_seed(test_loss), "test_metric": per_seed(test_metric),
        "grad_global_norm": per_seed(np.sqrt((grad_norm ** 2).sum(axis=2))),
        "grad_norm": per_seed(grad_norm), "delta_norm": per_seed(layer_delta),
        "weight_norm": per_seed(np.full_like(grad_norm, 1.0) + 0.01 * np.arange(n_point)[:, None]),
        "update_ratio": per_seed(grad_norm * config["lr"] / 10),
        "act_rms": per_seed(np.full_like(grad_norm, 0.8)),
        "saturation": per_seed(saturation), "tail_saturation": per_seed(tail_saturation),
        "inactive_fraction": per_seed(inactive), "dead_fraction": per_seed(dead),
        "delta_underflow": layer_underflow.tolist(),
        "weight_samples": per_seed(weight_samples),
    }
    if recurrent:
        diagnostics.update(
            time_delta_norm=per_seed(delta), time_delta_underflow=underflow.tolist(),
            gate_mean=per_seed(np.full((n_seed, n_point), 0.7 if config["cell"] != "rnn" else np.nan)),
            spectral_radius=per_seed(np.full((n_seed, n_point), gain)))
        # the number of time steps over which the signal loses less than three decades
        horizon_steps = np.minimum(horizon, 3.0 / np.maximum(-log_gain[:, 0, 0], 1e-6))
        summary["effective_horizon"] = np.where(ok, horizon_steps, np.nan)
        summary["temporal_decay"] = summary["decay_per_layer"]
    for name in table.names(source="step"):   # a diagnostic not simulated here: NaN
        sizes = {"seed": n_seed, "log_point": n_point, "layer": n_layer, "t": horizon,
                 "k": table.N_WEIGHT_SAMPLES}
        diagnostics.setdefault(name, np.full([sizes[a] for a in table.SHAPES[
            table.BY_NAME[name].shape]], np.nan))
    if legacy:
        for name in ("tail_saturation", "inactive_fraction"):
            del diagnostics[name], summary[f"{name}_final"]
    record = {
        "schema": SCHEMA, "run_id": run_id_of(config), "study": study, "grid_hash": grid_hash,
        "grid_axes": grid_axes or {}, "vgbench_version": "0.1.0", "created": created,
        "config": config, "seeds": seeds, "status": status, "diverged_at_step": diverged_at,
        "error": errors,
        "target": {"metric": metric, "value": target, "higher_is_better": higher},
        "metrics": metrics, "diagnostics": diagnostics, "summary": summary,
        "timing": {"compile_s": 1.5, "run_s": 0.01 * config["steps"]}, "env": dict(ENV),
    }
    if theory:
        from vgbench.record import theory_inputs
        from vgbench.spec import RunSpec

        spec = RunSpec.from_dict(config)
        inputs = theory_inputs(spec, spec.input_dim if spec.task == "teacher" else 64)
        if inputs is not None:
            record["theory"] = inputs
    return _clean(record)


def make_study(study: str, axes: dict[str, list], *, seeds=(0, 1, 2), **config_changes) -> list[dict]:
    """One record per point of the grid ``axes`` (name -> values), like a study's grid file."""
    names = list(axes)
    grid_hash = hashlib.sha256(json.dumps([study, axes], sort_keys=True).encode()).hexdigest()[:12]
    records = []
    for values in np.array(np.meshgrid(*[np.arange(len(axes[n])) for n in names],
                                       indexing="ij")).reshape(len(names), -1).T:
        point = {n: axes[n][int(i)] for n, i in zip(names, values)}
        records.append(make_record(study=study, grid_axes=point, seeds=seeds,
                                   grid_hash=grid_hash, **{**config_changes, **point}))
    return records


def write_records(results_dir: str | Path, records: list[dict]) -> list[Path]:
    """Write each record to ``<results_dir>/runs/<run_id>.json``, as the runner does."""
    runs = Path(results_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in records:
        path = runs / f"{record['run_id']}.json"
        path.write_text(json.dumps(record, separators=(",", ":"), allow_nan=False))
        paths.append(path)
    return paths


GALLERY_SMALL = {"steps": 100, "log_every": 25, "width": 8}


def figure_gallery() -> list[dict]:
    """Records that draw every figure kind at its hardest: the cases a figure must survive.

    ``gallery_mlp`` (digits, depths 16 and 56, 12 entries of norm / skip / activation / init:
    long labels): at depth 56 one entry's weights move by about ±12 while the others move by 0.01,
    one entry's signal explodes by 12 decades at the input end, and one entry's seeds all
    diverge before the first log point after initialisation (no trajectory to draw).
    ``gallery_rnn`` (adding, T = 50, 100, 200, four cells): final losses between 0.6 and 1.6
    times the trivial predictor's, a log axis over less than one decade. Both have a legacy
    record without the tail-saturation and inactive-unit fields.
    """
    records = []
    axes = {"norm": ["none", "batchnorm"], "skip": ["none", "residual"],
            "activation": ["relu", "tanh", "sigmoid"]}
    grid_hash = hashlib.sha256(b"gallery_mlp").hexdigest()[:12]
    for depth in (16, 56):
        for norm in axes["norm"]:
            for skip in axes["skip"]:
                for activation in axes["activation"]:
                    point = {"depth": depth, "norm": norm, "skip": skip, "activation": activation,
                             "init": "he_normal" if activation == "relu" else "xavier_normal"}
                    deep = depth == 56
                    records.append(make_record(
                        study="gallery_mlp", grid_axes=point, grid_hash=grid_hash,
                        weight_scale=600.0 if deep and (norm, skip, activation) == (
                            "batchnorm", "none", "relu") else 1.0,
                        signal_boost=12.0 if (skip, norm, activation) == (
                            "residual", "none", "relu") else 0.0,
                        diverge={0: 10, 1: 10, 2: 10} if deep and (norm, skip, activation) == (
                            "none", "residual", "sigmoid") else None,
                        legacy=depth == 16 and activation == "tanh" and norm == "none"
                        and skip == "none",
                        **GALLERY_SMALL, **point))
    grid_hash = hashlib.sha256(b"gallery_rnn").hexdigest()[:12]
    ratios = np.random.default_rng(16).uniform(0.6, 1.6, (3, 4, 3))
    for i, seq_len in enumerate((50, 100, 200)):
        for j, cell in enumerate(("rnn", "irnn", "lstm", "gru")):
            point = {"seq_len": seq_len, "cell": cell}
            rec = make_record(study="gallery_rnn", grid_axes=point, grid_hash=grid_hash,
                              model="rnn", task="adding", legacy=(i, j) == (0, 0),
                              **GALLERY_SMALL, **point)
            baseline = rec["metrics"]["task_baseline"][0]
            rec["metrics"]["final_test_loss"] = _clean(baseline * ratios[i, j])
            records.append(rec)
    return records

"""What vgbench measures, in one place: the table of every recorded diagnostic, and the
summaries a run record makes of them.

:data:`TABLE` lists each field of a record's ``diagnostics``: its shape (:data:`SHAPES`), where
it is computed (:data:`SOURCES`), what it means, its unit and its label in figures. The
program (:mod:`vgbench.diagnostics.measure`, what a log point records), the record builder
(:func:`summarize`), the reporter's arrays and frames, the synthetic records and the figures
read this table; nothing else lists the fields.

Adding a diagnostic touches two files: a row here, and the line that computes it, in
:func:`vgbench.diagnostics.measure.measure` (a statistic of the step: gradients, parameters,
updates, the batch's backpropagated signal) or in ``vgbench.models.layers.layer_stats`` (a
forward statistic of a hidden layer). docs/adding-a-diagnostic.md works an example through.

This module imports numpy only: the reporter reads it without JAX.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

N_WEIGHT_SAMPLES = 4          # fixed entries of each layer's weight followed over training
SATURATION_FRACTION = 0.01    # a unit is flat on an example when |phi'| < 1 % of sup |phi'|
# a signal of exactly 0 among values this small underflowed on its way there; among larger ones
# it is exact: no gradient reaches the layer (a zero-initialised scale, an unused output)
UNDERFLOW_SCALE = 1e-20

SHAPES = {   # the axes of a diagnostic's array in a record, seeds first
    "point": ("seed", "log_point"),
    "layer": ("seed", "log_point", "layer"),
    "sample": ("seed", "log_point", "layer", "k"),
    "time": ("seed", "log_point", "t"),
    "quantile": ("seed", "q"),
    "one": (),
}
SOURCES = {
    "step": "the diagnostic step: losses, evaluation, gradients, parameters, the update",
    "probe": "the gradient of the loss with respect to zero probes on each pre-activation",
    "forward": "a model's forward statistics of each hidden layer (NaN where one does not apply)",
    "record": "derived from the others when the record is built",
    "jacobian": "the input-output Jacobian at initialization (vgbench.jacobian, on request)",
}


class Diagnostic(NamedTuple):
    """One field of a record's ``diagnostics``."""

    name: str
    shape: str        # a key of SHAPES
    source: str       # a key of SOURCES
    meaning: str
    unit: str = ""
    label: str = ""   # axis label in figures ("" : the name, spaced)
    frame: bool = False   # a column of the reporter's long frames (grad_stats, curves, time_stats)


GRAD_LABEL = r"$\Vert\partial L/\partial h_l\Vert$"
WEIGHT_GRAD_LABEL = r"$\Vert\partial L/\partial W_l\Vert$"
TIME_GRAD_LABEL = r"$\Vert\partial L/\partial h_t\Vert$"

TABLE = (
    Diagnostic("loss", "point", "step", "training loss on the step's minibatch", "task loss",
               "training loss", frame=True),
    Diagnostic("val_loss", "point", "step", "loss on the validation set", "task loss"),
    Diagnostic("val_metric", "point", "step", "the task's target metric on the validation set"),
    Diagnostic("test_loss", "point", "step", "loss on the test set", "task loss", "test loss",
               frame=True),
    Diagnostic("test_metric", "point", "step", "the task's target metric on the test set",
               label="test metric", frame=True),
    Diagnostic("grad_global_norm", "point", "step", "||dL/dθ|| over every parameter",
               label=r"$\Vert\partial L/\partial\theta\Vert$", frame=True),
    Diagnostic("grad_norm", "layer", "step", "||dL/dW_l||: norm of the layer's parameter gradient",
               label=WEIGHT_GRAD_LABEL, frame=True),
    Diagnostic("delta_norm", "layer", "probe", "RMS over the batch of ||dL/dh_l||, the "
               "backpropagated signal at the layer's pre-activation", label=GRAD_LABEL,
               frame=True),
    Diagnostic("weight_norm", "layer", "step", "||W_l||: norm of the layer's parameters",
               label=r"$\Vert W_l\Vert$", frame=True),
    Diagnostic("update_ratio", "layer", "step", "||ΔW_l|| / ||W_l|| of the step's update",
               "ratio", "update ratio", frame=True),
    Diagnostic("weight_samples", "sample", "step",
               f"{N_WEIGHT_SAMPLES} fixed entries of the layer's weight", frame=True),
    Diagnostic("time_delta_norm", "time", "probe", "RMS over the batch of ||dL/dh_t|| at each "
               "time step of the first recurrent layer", label=TIME_GRAD_LABEL),
    Diagnostic("act_rms", "layer", "forward", "RMS of the layer's output", label="RMS activation",
               frame=True),
    Diagnostic("saturation", "layer", "forward", "flat unit x example pairs, |phi'| < 1 % of "
               "its max, whatever the cause", "fraction", "flat units (tail or inactive)",
               frame=True),
    Diagnostic("tail_saturation", "layer", "forward", "flat pairs in a saturating tail "
               "(sigmoid, tanh, ELU)", "fraction", "tail-saturated units", frame=True),
    Diagnostic("inactive_fraction", "layer", "forward", "flat pairs on a rectifier's "
               "switched-off side (ReLU, GELU, SiLU)", "fraction", "inactive units", frame=True),
    Diagnostic("dead_fraction", "layer", "forward", "units that output 0 on every example of "
               "the batch", "fraction", "dead units", frame=True),
    Diagnostic("act_length_cv", "layer", "forward", "spread over the batch (and positions, "
               "time steps) of the pre-activation's length q = ||h||^2 / N: its standard "
               "deviation over its mean",
               "ratio", "CV of q over the batch", frame=True),
    Diagnostic("gate_mean", "point", "forward", "mean forget (LSTM) or update (GRU) gate of the "
               "first recurrent layer", label="mean gate", frame=True),
    Diagnostic("spectral_radius", "point", "forward", "spectral radius of the first recurrent "
               "layer's state-to-state weight", label="spectral radius", frame=True),
    Diagnostic("delta_underflow", "layer", "record", "the layer's signal is exactly 0 in float32",
               "flag", frame=True),
    Diagnostic("time_delta_underflow", "time", "record", "the time step's signal is exactly 0 "
               "in float32", "flag"),
    Diagnostic("jacobian_singular_values", "quantile", "jacobian", "quantiles of the singular "
               "values of the input-output Jacobian, pooled over inputs"),
    Diagnostic("jacobian_method", "one", "jacobian", "how the spectrum was found: exact or "
               "lanczos"),
    Diagnostic("jacobian_inputs", "one", "jacobian", "the number of inputs pooled", "count"),
)
BY_NAME = {d.name: d for d in TABLE}


def names(*, shape: str | None = None, source: str | None = None,
          frame: bool | None = None) -> tuple[str, ...]:
    """The diagnostics of a shape, a source, or in the reporter's frames, in table order."""
    return tuple(d.name for d in TABLE if (shape is None or d.shape == shape)
                 and (source is None or d.source == source) and (frame is None or d.frame == frame))


def label(name: str) -> str:
    """A diagnostic's (or a summary field's) axis label."""
    found = BY_NAME.get(name)
    return found.label if found is not None and found.label else name.replace("_", " ")


def nan_forward() -> dict[str, float]:
    """Every forward statistic as NaN: a model's value for a layer it does not describe."""
    return {name: math.nan for name in names(source="forward", shape="layer")}


# ---------------------------------------------------------------------------- one slope

def log10_or_nan(values) -> np.ndarray:
    """log10 of positive finite values, NaN elsewhere (None counts as NaN)."""
    values = np.asarray([np.nan if v is None else v for v in values], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(values) & (values > 0), np.log10(values), np.nan)


def exact_zeros(profile) -> np.ndarray:
    """Which layers of one ``‖∂L/∂h_l‖`` profile (one seed, one log point) are exactly 0 with
    no value below :data:`UNDERFLOW_SCALE` anywhere in the profile: no gradient reaches them
    (a zero-initialised scale such as SkipInit's gain or a ResNet's last BatchNorm scale, an
    output the loss does not read). A zero in a profile that falls through tiny values is an
    underflow: vanishing, not this."""
    values = np.asarray(profile, np.float64)
    positive = values[values > 0]
    if not positive.size or positive.min() < UNDERFLOW_SCALE:
        return np.zeros(values.shape, bool)
    return values == 0


def slope(log10_values) -> float | None:
    """Least-squares slope of ``log10_values`` against their index, over the finite entries
    (None with fewer than 2). Every fitted decay of the suite (per layer, per time step, the
    verdict's profile, the theory comparison) is this function over its own window."""
    values = np.asarray(log10_values, np.float64)
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.arange(len(values))[ok], values[ok], 1)[0])


def decay_slope(values) -> float | None:
    """:func:`slope` of log10(values), over positive finite values (decades per index)."""
    return slope(log10_or_nan(values))


def attenuation(delta_row) -> float | None:
    """log10 of ||dL/dh|| at the layer nearest the input over the one nearest the output."""
    first, last = float(delta_row[0]), float(delta_row[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0 or last <= 0:
        return None
    return math.log10(first) - math.log10(last)


def hidden_mean(values) -> float | None:
    """Mean over the hidden layers (all but the last) of one log point's per-layer values."""
    row = np.asarray([np.nan if v is None else v for v in values], np.float64)[:-1]
    row = row[np.isfinite(row)]
    return float(row.mean()) if row.size else None


def profile(delta_row) -> dict:
    """Slope (decades per layer) and fall (decades) of one ``delta_norm`` row over the hidden
    layers (the output layer, whose width is the task's, left out): what the verdict reads.

    A hidden layer whose signal is exactly 0 (underflow) counts as far below any threshold.
    """
    row = np.asarray([np.nan if v is None else v for v in delta_row], np.float64)[:-1]
    if len(row) < 2:
        return {"slope": None, "fall": None, "log10": []}
    logs = log10_or_nan(row)
    logs = np.where(row == 0, np.nanmin(logs, initial=0.0) - 40.0, logs)  # below float32's range
    ok = np.isfinite(logs)
    if ok.sum() < 2 or not (ok[0] and ok[-1]):
        return {"slope": None, "fall": None, "log10": list(logs)}
    return {"slope": slope(logs), "fall": float(logs[-1] - logs[0]), "log10": list(logs)}


# ---------------------------------------------------------------------------- run summaries

PLATEAU_TOL = 0.01        # relative change of the test loss below which it "stops changing"
PLATEAU_WINDOW = 0.2      # window, as a fraction of the run's log points (at least 2)
BLOWUP_FACTOR = 100.0     # a loss risen above 100x the trivial baseline (and its start) has blown up
IMPROVING_FRACTION = 0.25   # the last quarter of training
IMPROVING_ACCURACY = 0.01    # an accuracy still gaining at least a point over it
IMPROVING_LOSS = 0.02        # a loss still falling by at least 2 % (relative) over it
HORIZON_FRACTION = 1e-3  # a lag is within the horizon while ||dL/dh_t|| >= 1e-3 of the last step's
UNIT_FRACTIONS = ("dead_fraction", "saturation", "tail_saturation", "inactive_fraction")


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


def effective_horizon(time_row: np.ndarray) -> int | None:
    """Largest lag k = T-1-t with ||dL/dh_t|| >= HORIZON_FRACTION * ||dL/dh_T|| (0: the last step only)."""
    row = np.asarray(time_row, np.float64)
    last = row[-1]
    if not (math.isfinite(last) and last > 0):
        return None
    lags = np.nonzero(np.isfinite(row) & (row >= HORIZON_FRACTION * last))[0]
    return int(len(row) - 1 - lags.min())


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


def summarize(logs: dict, steps: list[int], *, task, status: list[str],
              diverged_at: list[int | None]) -> tuple[dict, dict, list]:
    """``(diagnostics, summary, steps_to_target)`` of a run from its program's ``logs``
    (arrays with leading axes [seed, log_point]).

    ``diagnostics`` holds every logged array and the flags derived from them
    (``delta_underflow``; recurrent runs, :func:`add_recurrent_summary`). ``summary``, per
    seed: ``log10_attenuation_init/final`` (:func:`attenuation`), ``decay_per_layer`` (the
    fitted slope over the hidden layers at initialization), ``plateau`` and ``plateau_step``
    (:func:`plateau`), each of ``UNIT_FRACTIONS`` over the hidden layers at the end,
    ``still_improving`` (:func:`still_improving`, seeds that finished). ``steps_to_target``:
    the first log step at which the test metric reached the task's target before any
    divergence.
    """
    n_seed = len(status)
    delta = np.asarray(logs["delta_norm"], np.float64)
    test_metric = np.asarray(logs["test_metric"], np.float64)
    test_loss = np.asarray(logs["test_loss"], np.float64)
    diagnostics = {key: np.asarray(value) for key, value in logs.items()}
    diagnostics["delta_underflow"] = (delta == 0)
    summary: dict[str, list] = {k: [] for k in (
        "log10_attenuation_init", "log10_attenuation_final", "decay_per_layer", "plateau",
        "plateau_step")} | {f"{name}_final": [] for name in UNIT_FRACTIONS}
    steps_to_target = []
    for i in range(n_seed):
        summary["log10_attenuation_init"].append(attenuation(delta[i, 0]))
        summary["log10_attenuation_final"].append(attenuation(delta[i, -1]))
        summary["decay_per_layer"].append(decay_slope(delta[i, 0, :-1]))
        is_plateau, at = plateau(test_loss[i], test_metric[i], task.target, task.higher_is_better)
        summary["plateau"].append(is_plateau)
        summary["plateau_step"].append(steps[at] if at is not None else None)
        for name in UNIT_FRACTIONS:  # hidden layers at the end of training; None if not logged
            summary[f"{name}_final"].append(
                hidden_mean(np.asarray(logs[name][i, -1])) if name in logs else None)
        hit = [s for s, m in zip(steps, test_metric[i]) if reached(m, task.target, task.higher_is_better)]
        first_hit = hit[0] if hit else None
        if diverged_at[i] is not None and first_hit is not None and first_hit > diverged_at[i]:
            first_hit = None
        steps_to_target.append(first_hit)
    summary["still_improving"] = [
        still_improving(np.asarray(logs["val_metric"][i], np.float64), steps,
                        task.higher_is_better) if "val_metric" in logs and status[i] == "ok"
        else None for i in range(n_seed)]
    if "time_delta_norm" in logs:
        add_recurrent_summary(diagnostics, summary, logs)
    return diagnostics, summary, steps_to_target

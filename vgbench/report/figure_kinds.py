"""Which figure kinds a study gets: each kind declares the study shape it serves.

Plain data (no matplotlib): the report's drawing (:mod:`vgbench.report.figure_files`) asks
:func:`skip_reason` for each kind of :data:`KINDS` and draws the ones that apply; the others
are listed, with the reason, in the report's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

MIN_HEATMAP_ROWS = 4    # fewer depths: grad_vs_layer's lines show them better than stripes


def unit_fractions(runs: pd.DataFrame) -> list[str]:
    """The unit fractions a study's records hold: dead, inactive and tail-saturated units;
    for records older than the last two, the flat fraction that mixes them."""
    split = [v for v in ("inactive_fraction_final", "tail_saturation_final")
             if v in runs and runs[v].notna().any()]
    return ["dead_fraction_final"] + (split or ["saturation_final"])


@dataclass(frozen=True)
class Shape:
    """What one study's records hold, as far as the figure kinds care."""

    axis: str | None          # the swept (frontier) axis
    per_entry: int            # the most values of that axis any one entry ran (1 without one)
    layers: int               # the most layers with a ∂L/∂h profile (feed-forward records)
    steps: int                # the most log points of a run
    recurrent: bool           # ∂L/∂h_t per time step
    weights: bool             # sample weights logged
    target: bool              # a target value to reach
    reached: bool             # some seed reached it
    curves: bool              # losses logged over training
    units: bool               # unit fractions (dead, inactive, saturated) in the summaries


def study_shape(runs: pd.DataFrame, grad: pd.DataFrame, time: pd.DataFrame,
                curves: pd.DataFrame) -> Shape:
    axis = runs["frontier_axis"].iloc[0]
    axis = axis if isinstance(axis, str) else None
    per_entry = int(runs.groupby("entry")["frontier_value"].nunique().max()) if axis else 1
    return Shape(axis=axis, per_entry=per_entry,
                 layers=int(grad["layer"].max()) + 1 if len(grad) else 0,
                 steps=int(grad["log_point"].max()) + 1 if len(grad) else 0,
                 recurrent=len(time) > 0,
                 weights=bool(len(grad) and grad["weight_sample_0"].notna().any()),
                 target=bool(runs["target_value"].notna().any()), curves=len(curves) > 0,
                 reached=bool(runs["reached"].fillna(False).astype(bool).any()),
                 units=any(v in runs and runs[v].notna().any() for v in unit_fractions(runs)))


@dataclass(frozen=True)
class Kind:
    """A figure kind: the study shape it serves (for the report's index) and the test of it."""

    serves: str
    missing: Callable[[Shape], str | None]   # why a study of that shape gets none, or None


def _swept(shape: Shape) -> str | None:
    if shape.axis is None:
        return "the study sweeps no axis"
    if shape.per_entry < 2:
        return (f"each entry ran one {shape.axis}: a line needs two values of it "
                "(the outcomes figure shows these runs)")
    return None


KINDS = {
    "grad_vs_layer": Kind("a per-layer ∂L/∂h profile at initialisation (feed-forward records)",
                          lambda s: None if s.layers >= 2 and not s.recurrent else
                          "recurrent records: time_grad shows the profile over time steps"
                          if s.recurrent else "fewer than two layers"),
    "grad_heatmap": Kind(f"a per-layer profile over at least {MIN_HEATMAP_ROWS} depths per entry",
                         lambda s: None if s.axis == "depth" and s.per_entry >= MIN_HEATMAP_ROWS
                         and not s.recurrent and s.layers >= 2 else
                         f"fewer than {MIN_HEATMAP_ROWS} depths per entry (grad_vs_layer shows "
                         "them better)"),
    "loss_curves": Kind("losses logged over training",
                        lambda s: None if s.curves else "no loss curve logged"),
    "grad_over_steps": Kind("per-layer ∂L/∂W at two or more log points",
                            lambda s: None if s.steps >= 2 else "one log point per run"),
    "weight_trajectories": Kind("sample weights at two or more log points",
                                lambda s: None if s.weights and s.steps >= 2 else
                                "no weight samples over training"),
    "time_grad": Kind("a per-time-step ∂L/∂h_t profile (recurrent records)",
                      lambda s: None if s.recurrent else "feed-forward records"),
    "loss_vs_baseline": Kind("recurrent runs over a swept sequence length, two or more per entry",
                             lambda s: _swept(s) if s.recurrent else "feed-forward records"),
    "frontier": Kind("a swept axis with two or more values per entry, and a target some seed "
                     "reached", lambda s: _swept(s) or ("no target to reach" if not s.target else
                                                        None if s.reached else
                                                        "no seed reached the target anywhere: "
                                                        "every line would lie at 0")),
    "dead_saturation": Kind("unit fractions over a swept axis with two or more values per entry",
                            lambda s: _swept(s) or (None if s.units else
                                                    "no unit fractions in these records")),
    "outcomes": Kind("entries at one value of the swept axis each, or no swept axis",
                     lambda s: None if _swept(s) else "the entries sweep an axis: frontier and "
                     "dead_saturation draw them as lines"),
}


def skip_reason(name: str, shape: Shape) -> str | None:
    """Why a study of ``shape`` gets no figure of kind ``name`` (None: it gets one)."""
    return KINDS[name].missing(shape)



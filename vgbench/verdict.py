"""A verdict per seed: vanishing, exploding or healthy, at initialization and at the end.

The backpropagated signal ||dL/dh_l|| over the hidden layers (the output layer, whose width is
the task's, is left out) is summarised by two numbers (``vgbench.diagnostics.profile``): its
fitted slope, in decades per layer (positive when the signal shrinks towards the input), and
its *fall*, log10 ||dL/dh|| at the
last hidden layer minus at the first (decades; positive when the first layer gets less). A
profile is **vanishing** when the slope exceeds ``SLOPE`` *and* the fall exceeds ``FALL``,
**exploding** when both are past their negatives, and **healthy** otherwise. The range of
layers named in the verdict is where the signal is more than ``FALL`` decades away from the
last hidden layer's.

Symptoms the suite already measures are added when they pass their own thresholds: a loss
plateau (the record's ``plateau``), frozen early layers (the first layer's mean update ratio
more than ``FROZEN`` decades below the most-updated hidden layer's), dead units
(``dead_fraction_final`` above ``DEAD``) and tail-saturated units (``tail_saturation`` at the
end above ``TAIL_SATURATION``).

Every threshold is the envelope of healthy runs, not a guess: the largest value seen in
matched-initialization MLPs on digits (ReLU and GELU with He, tanh with Xavier; depths
4-64; 5 seeds each; ``benchmarks/verdict_calibration.toml``), at initialization for every
depth and at the end for the runs that reached the target. ``python -m vgbench.verdict
calibrate RESULTS`` recomputes them; docs/verdict.md gives the table.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from vgbench.diagnostics import hidden_mean, profile

# envelope of the healthy calibration runs (docs/verdict.md), rounded up to two digits
SLOPE = 0.14              # decades per layer (measured 0.1346)
FALL = 1.2                # decades across the hidden stack (measured 1.117)
FROZEN = 0.25             # decades from the first layer's update ratio to the largest (0.2445)
DEAD = 0.042              # fraction of hidden units dead at the end (0.04102)
TAIL_SATURATION = 0.0047  # fraction of unit x example pairs in a saturating tail (0.004669)

VERDICTS = ("vanishing", "exploding", "healthy")


def classify(delta_row) -> tuple[str | None, str | None, dict]:
    """(verdict, layer range as ``"a-b"`` 1-based, profile) of one ``delta_norm`` row."""
    prof = profile(delta_row)
    slope, fall = prof["slope"], prof["fall"]
    if slope is None:
        return None, None, prof
    if slope > SLOPE and fall > FALL:
        verdict = "vanishing"
    elif slope < -SLOPE and fall < -FALL:
        verdict = "exploding"
    else:
        return "healthy", None, prof
    logs = np.asarray(prof["log10"])
    away = np.abs(logs - logs[-1]) > FALL
    layers = np.nonzero(away)[0]
    span = f"{layers.min() + 1}-{layers.max() + 1}" if len(layers) else None
    return verdict, span, prof


def frozen_decades(update_ratio) -> float | None:
    """log10 of the first hidden layer's mean update ratio over the largest hidden layer's."""
    u = np.asarray([[np.nan if v is None else v for v in row] for row in update_ratio], np.float64)
    if u.ndim != 2 or u.shape[1] < 3:
        return None
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(u[:, :-1], axis=0) if np.isfinite(u[:, :-1]).any() else None
    if mean is None or not np.isfinite(mean[0]) or not np.isfinite(np.nanmax(mean)):
        return None
    top = np.nanmax(mean)
    if mean[0] <= 0 or top <= 0:
        return None
    return float(math.log10(mean[0] / top))


def symptoms(*, plateau: bool | None = None, plateau_step=None, frozen: float | None = None,
             dead: float | None = None, tail_saturation: float | None = None) -> list[str]:
    """The measured symptoms past their thresholds, in words."""
    found = []
    if plateau:
        found.append("loss plateau" + (f" from step {plateau_step}" if plateau_step is not None else ""))
    if frozen is not None and frozen < -FROZEN:
        found.append(f"frozen early layers (layer 1 updates {10 ** frozen:.2g}x the most-updated layer)")
    if dead is not None and dead > DEAD:
        found.append(f"{100 * dead:.0f}% dead units")
    if tail_saturation is not None and tail_saturation > TAIL_SATURATION:
        found.append(f"{100 * tail_saturation:.0f}% saturated units")
    return found


def phrase(when: str, verdict: str | None, span: str | None, prof: dict, names) -> str:
    """One verdict in words, e.g. "at init: vanishing, ||dL/dh|| is 10^6.1 times smaller ..."."""
    if verdict is None:
        return f"{when}: no signal measured"
    if verdict == "healthy":
        return f"{when}: healthy"
    fall = prof["fall"]
    first, last = 1, len(prof["log10"])
    direction = "smaller" if verdict == "vanishing" else "larger"
    where = f", more than 10^{FALL:g} off in layers {span}" if span else ""
    label = f" ({names[0]})" if names else ""
    return (f"{when}: {verdict}, ||dL/dh|| is 10^{abs(fall):.1f} times {direction} at layer "
            f"{first}{label} than at layer {last}{where}")


def seed_verdict(delta_init, delta_final, *, update_ratio=None, plateau=None, plateau_step=None,
                 dead=None, tail_saturation=None, layer_names=()) -> dict[str, Any]:
    """The verdict of one seed: fields for the record's summary, and the one-line text."""
    v_init, span_init, prof_init = classify(delta_init)
    v_final, span_final, prof_final = classify(delta_final)
    found = symptoms(plateau=plateau, plateau_step=plateau_step,
                     frozen=frozen_decades(update_ratio) if update_ratio is not None else None,
                     dead=dead, tail_saturation=tail_saturation)
    text = "; ".join([phrase("at init", v_init, span_init, prof_init, layer_names),
                      phrase("at the end", v_final, span_final, prof_final, layer_names)])
    text += "; symptoms: " + (", ".join(found) if found else "none")
    return {"verdict_init": v_init, "verdict_final": v_final, "verdict_layers_init": span_init,
            "verdict_layers_final": span_final, "signal_fall_init": prof_init["fall"],
            "signal_fall_final": prof_final["fall"], "symptoms": found, "verdict": text}


def path_indices(layer_names, probes: dict | None) -> list[int] | None:
    """The positions of the layers on an adapted model's signal path (``probes`` of its
    record, :attr:`vgbench.models.Model.info`), which its verdict reads; None: every layer."""
    path = (probes or {}).get("signal_path")
    if not path:
        return None
    names = list(layer_names)
    return [names.index(n) for n in path if n in names] or None


def add_verdicts(summary: dict, logs: dict, layer_names, *, path: list[int] | None = None) -> None:
    """Add each seed's :func:`seed_verdict` fields to a record's ``summary`` (lists per seed),
    from the program's per-layer ``logs`` ``[seed][log_point][layer]`` and the summary's
    ``plateau``, ``plateau_step`` and ``dead_fraction_final``. ``path``: the layers the
    verdict reads (an adapted model's signal path, :func:`path_indices`), else all."""
    delta = np.asarray(logs["delta_norm"], np.float64)
    if path is not None:
        delta, layer_names = delta[..., path], [layer_names[j] for j in path]
    tail = logs.get("tail_saturation")
    per_seed = [seed_verdict(
        delta[i, 0], delta[i, -1], update_ratio=np.asarray(logs["update_ratio"][i], np.float64),
        plateau=summary["plateau"][i], plateau_step=summary["plateau_step"][i],
        dead=summary["dead_fraction_final"][i],
        tail_saturation=hidden_mean(np.asarray(tail[i][-1])) if tail is not None else None,
        layer_names=tuple(layer_names)) for i in range(delta.shape[0])]
    for key in per_seed[0] if per_seed else ():
        summary[key] = [v[key] for v in per_seed]


def record_verdicts(record: dict) -> list[dict]:
    """:func:`seed_verdict` of every seed of a run record (its diagnostics and summary)."""
    d, s = record["diagnostics"], record["summary"]
    names = d.get("layer_names", ())
    path = path_indices(names, record.get("probes"))
    if path is not None:
        names = [names[j] for j in path]
    out = []
    for i in range(len(record["seeds"])):
        delta = d["delta_norm"][i]
        if path is not None:
            delta = [[row[j] for j in path] for row in delta]
        tail = d.get("tail_saturation")
        out.append(seed_verdict(
            delta[0], delta[-1], update_ratio=d.get("update_ratio", [None] * (i + 1))[i],
            plateau=s.get("plateau", [None] * (i + 1))[i],
            plateau_step=s.get("plateau_step", [None] * (i + 1))[i],
            dead=s.get("dead_fraction_final", [None] * (i + 1))[i],
            tail_saturation=hidden_mean(tail[i][-1]) if tail else None,
            layer_names=names))
    return out


# ---------------------------------------------------------------------------- calibration

def calibration_rows(records) -> list[dict]:
    """One row per healthy-study seed and point: the numbers the thresholds are the envelope of."""
    rows = []
    for rec in records:
        d, s, m = rec["diagnostics"], rec["summary"], rec["metrics"]
        label = (rec.get("grid_axes") or {}).get("activation_init", "")
        cfg = rec["config"]
        for i, seed in enumerate(rec["seeds"]):
            reached = m.get("steps_to_target", [None] * (i + 1))[i] is not None
            tail = d.get("tail_saturation")
            for when, point in (("init", 0), ("final", -1)):
                prof = profile(d["delta_norm"][i][point])
                rows.append({"label": label, "activation": cfg["activation"], "init": cfg["init"],
                             "depth": cfg["depth"], "seed": seed, "when": when,
                             "reached": reached, "slope": prof["slope"], "fall": prof["fall"],
                             "frozen": frozen_decades(d["update_ratio"][i]),
                             "dead": s["dead_fraction_final"][i],
                             "tail_saturation": hidden_mean(tail[i][-1]) if tail else None})
    return rows


def calibrate(records) -> dict[str, float]:
    """Envelope of the healthy runs: the largest |slope| and |fall| at init (every depth) and at
    the end (runs that reached the target); the most negative frozen measure, the largest dead
    and tail-saturated fractions at the end of the runs that reached the target."""
    rows = [r for r in calibration_rows(records) if r["label"] == "healthy"]
    use = [r for r in rows if r["when"] == "init" or r["reached"]]
    ended = [r for r in rows if r["when"] == "final" and r["reached"]]

    def top(values, sign=1):
        values = [sign * v for v in values if v is not None and math.isfinite(v)]
        return max(values) if values else float("nan")

    return {"SLOPE": top(abs(r["slope"]) for r in use if r["slope"] is not None),
            "FALL": top(abs(r["fall"]) for r in use if r["fall"] is not None),
            "FROZEN": top((r["frozen"] for r in ended), sign=-1),
            "DEAD": top(r["dead"] for r in ended),
            "TAIL_SATURATION": top(r["tail_saturation"] for r in ended),
            "n_healthy_seeds": len({(r["activation"], r["depth"], r["seed"]) for r in rows}),
            "n_reached": len(ended)}


def main(argv=None) -> int:
    import argparse

    import pandas as pd

    from vgbench.report.records import read_record, record_paths

    parser = argparse.ArgumentParser(prog="python -m vgbench.verdict")
    parser.add_argument("command", choices=["calibrate"])
    parser.add_argument("results", help="results directory of benchmarks/verdict_calibration.toml")
    args = parser.parse_args(argv)
    records = [r for r, problem in map(read_record, record_paths(args.results)) if problem is None]
    rows = pd.DataFrame(calibration_rows(records))
    table = rows.groupby(["label", "activation", "init", "when", "depth"]).agg(
        slope_min=("slope", "min"), slope_max=("slope", "max"), fall_min=("fall", "min"),
        fall_max=("fall", "max"), frozen_min=("frozen", "min"), dead_max=("dead", "max"),
        tail_saturation_max=("tail_saturation", "max"), reached=("reached", "sum"))
    print(table.round(3).to_string())
    for key, value in calibrate(records).items():
        print(f"{key} = {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

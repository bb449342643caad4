"""Theory against measurement: the ``theory`` study's analysis and report (numpy, never JAX).

Mean-field theory (:mod:`vgbench.theory`) predicts, per hidden layer, the change of the
backpropagated signal, ``log10(|delta^l| / |delta^{l+1}|) = (1/2) log10 chi_1(q^l)``; a record
holds the measured ``delta_norm`` per layer at initialization. This module sets them side by
side:

* :func:`agreement_table`: per run, the measured per-layer change (minus the fitted slope of
  log10 ``delta_norm`` against the layer index, over the hidden layers less
  :data:`FIT_SKIP_INPUT` at the input end and :data:`FIT_SKIP_OUTPUT` at the output end), its
  mean and 95 % Student-t interval over seeds, against the prediction over the same layers.
  The prediction follows the length map from the first layer's actual length
  ``q^1 = sigma_w^2 input_scale^2 + sigma_b^2``, so a run not started at ``q*`` is predicted
  too; at ``q*`` it is ``(1/2) log10 chi_1``. A run agrees when the error is within 10 % of
  the prediction, or within 0.01 in ``(1/2) ln chi_1`` (near criticality, where the
  prediction is close to 0).
* :func:`profile_frame`, :func:`spectra_frame`, :func:`frontier_frame`: the tidy frames the
  figures draw: measured and predicted log10 ``|delta^l|`` against l; the input-output
  Jacobian's singular value distribution (records annotated by :mod:`vgbench.jacobian`); the
  trainability frontier of each depth study's entries against 6 xi_c (Schoenholz et al. 2017).

:func:`theory_report` writes the table and the figures. The drawing lives with the rest of
the report's: the axes-level functions (``plot_delta_profiles``, ``plot_phase_diagram``,
``plot_jacobian_spectra``, ``plot_frontier_vs_xi``) in :mod:`vgbench.report.figures`, the
figure-level layouts (``theory_*_figure``) in :mod:`vgbench.report.figure_files`, both under
"mean-field theory", imported only when figures are written; the table's Markdown and LaTeX
(:func:`~vgbench.report.tables.theory_table_text`) in :mod:`vgbench.report.tables`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vgbench import theory
from vgbench.activations import LEAKY_SLOPE
from vgbench.diagnostics import slope
from vgbench.report.frames import ACTIVATION_ORDER, build_frames, delta_profiles
from vgbench.report.stats import t_interval

STUDY = "theory"
FIT_SKIP_INPUT = 2    # the first layer's fan-in is the input's, not the width
FIT_SKIP_OUTPUT = 2   # the signal enters through the readout's few outputs
REL_TOL = 0.10
LN_TOL = 0.01         # absolute tolerance in (1/2) ln chi_1 per layer
REL_MIN = 1e-4        # no relative error for predictions smaller than this (decades/layer)
LEVEL = 0.95
JACOBIAN_FIELD = "jacobian_singular_values"
XI_MULTIPLE = 6       # trainable up to about 6 xi_c (Schoenholz et al. 2017)


# ---------------------------------------------------------------------------- predictions

def fit_window(depth: int) -> slice:
    """Hidden layers (0-based, input first) the slopes are fitted over; all if too few."""
    if depth - FIT_SKIP_INPUT - FIT_SKIP_OUTPUT >= 3:
        return slice(FIT_SKIP_INPUT, depth - FIT_SKIP_OUTPUT)
    return slice(0, depth)


def _slope(log10_values: np.ndarray) -> float:
    """:func:`vgbench.diagnostics.slope` of log10 values, NaN where it has none."""
    found = slope(log10_values)
    return math.nan if found is None else found


def theory_inputs(records) -> dict[str, dict]:
    """Run id -> the theory inputs its record carries (``record["theory"]``, written by
    :func:`vgbench.record.theory_inputs` for the models mean-field theory describes)."""
    return {r["run_id"]: r["theory"] for r in records if isinstance(r.get("theory"), dict)}


def activation_of(inputs: dict, leaky_slope: float = LEAKY_SLOPE) -> theory.Phi | None:
    """The activation of a record's theory inputs: its tabulated ``phi`` where the record
    carries one (a plugin's activation), else its name resolved by
    :func:`vgbench.theory.as_activation`; None where neither is there."""
    if isinstance(inputs.get("phi"), dict):
        return theory.from_table(inputs["phi"]["x_max"], inputs["phi"]["values"])
    try:
        return theory.as_activation(str(inputs.get("activation")), leaky_slope=leaky_slope)
    except ValueError:
        return None


def predict(config: dict, inputs: dict | None) -> dict | None:
    """Mean-field predictions for a feed-forward config at initialization, from the theory
    inputs of its record (``inputs``: the initializer's effective variances and the
    activation, see :func:`vgbench.record.theory_inputs`).

    Returns ``sigma_w2``, ``sigma_b2``, ``q_star``, ``q1``, ``chi1`` (at q*),
    ``log10_ratio`` ((1/2) log10 chi_1 at q*), ``profile`` (predicted log10 |delta^l| -
    log10 |delta^L| for the hidden layers, from q^1), ``log10_ratio_fit`` (minus the slope of
    the profile over :func:`fit_window`) and ``jacobian_log10_mean_sq`` (sum over the hidden
    layers of log10 chi_1(q^l), the log of the Jacobian's mean squared singular value), or
    None where the record has no theory inputs, the initializer has no Gaussian equivalent or
    the activation is unknown.
    """
    if not inputs or inputs.get("sigma_w2") is None or inputs.get("stem_sigma_w2") is None:
        return None
    slope = float(config.get("leaky_slope", LEAKY_SLOPE))
    activation, depth = activation_of(inputs, slope), int(config["depth"])
    if activation is None:
        return None
    sw2, sb2 = float(inputs["sigma_w2"]), float(inputs["sigma_b2"])
    scale = float(config.get("input_scale", 1.0))
    q1 = float(inputs["stem_sigma_w2"]) * scale ** 2 + float(inputs["stem_sigma_b2"])
    lengths = [q1]
    for _ in range(depth - 1):
        lengths.append(float(theory.length_map(activation, lengths[-1], sw2, sb2,
                                               leaky_slope=slope)))
    chi_per_layer = np.atleast_1d(theory.chi1(activation, sw2, sb2, q=np.array(lengths),
                                              leaky_slope=slope))
    with np.errstate(divide="ignore"):
        log_chi = np.log10(chi_per_layer)
        chi_star = float(theory.chi1(activation, sw2, sb2, leaky_slope=slope))
    profile = np.append(0.5 * np.cumsum(log_chi[:-1][::-1])[::-1], 0.0)
    return {"sigma_w2": sw2, "sigma_b2": sb2,
            "q_star": float(theory.q_star(activation, sw2, sb2, leaky_slope=slope)),
            "q1": q1, "chi1": chi_star, "log10_ratio": 0.5 * math.log10(chi_star),
            "profile": profile, "log10_ratio_fit": -_slope(profile[fit_window(depth)]),
            "jacobian_log10_mean_sq": float(np.sum(log_chi))}


# ---------------------------------------------------------------------------- measurement

CONFIG_COLUMNS = ("activation", "init", "width", "depth", "input_dim", "input_scale", "sigma_w",
                  "sigma_b", "leaky_slope")
LABEL_AXIS = "point"  # the theory grid's zipped axis: its labels name the runs


def run_label(row) -> str:
    """A short name for a run: its ``point`` label in the theory grid, else activation and init."""
    label = row.get(LABEL_AXIS) if hasattr(row, "get") else None
    if isinstance(label, str) and label:
        return label
    return f"{row['activation']} {row['init']}"


def _predicted(runs: pd.DataFrame, grad: pd.DataFrame, inputs: dict):
    """``(run_id, its profile rows, config, prediction, its runs row)`` of each run the theory
    predicts (:func:`predict`), in the order of the profiles."""
    profiles = delta_profiles(runs, grad)
    first = runs.drop_duplicates("run_id").set_index("run_id")
    for run_id, group in profiles.groupby("run_id", sort=False):
        config = {c: first.at[run_id, c] for c in CONFIG_COLUMNS if c in first.columns}
        found = predict(config, inputs.get(run_id)) if config.get("activation") else None
        if found is not None:
            yield run_id, group, config, found, first.loc[run_id]


def agreement_table(runs: pd.DataFrame, grad: pd.DataFrame, inputs: dict) -> pd.DataFrame:
    """Measured against predicted per-layer change of log10 |delta|, one row per run.

    ``runs`` and ``grad`` are the ``runs`` and ``grad_stats`` frames of the study (steps = 0
    or not: log point 0 is initialization); ``inputs``: run id -> its record's theory inputs
    (:func:`theory_inputs`). Columns: the config, ``sigma_w2``, ``sigma_b2``,
    ``q_star``, ``q1``, ``chi1``, ``predicted`` ((1/2) log10 chi_1 at q*), ``predicted_fit``
    (over the fitted layers, from q^1), ``measured`` (mean over seeds), ``ci_low``,
    ``ci_high``, ``n_seeds``, ``error`` (measured - predicted_fit), ``rel_error``,
    ``ln_error`` (the error in (1/2) ln chi_1), ``agrees``; and, where the records carry
    Jacobian spectra, ``jacobian_log10_mean_sq`` (mean over seeds) and its prediction.
    """
    rows = []
    for run_id, group, config, found, run in _predicted(runs, grad, inputs):
        window = fit_window(int(config["depth"]))
        per_seed = [-_slope(g.sort_values("layer")["log10_delta"].to_numpy()[window])
                    for _, g in group.groupby("seed")]
        mean, low, high, n = t_interval(per_seed, level=LEVEL)
        error = mean - found["log10_ratio_fit"]
        scale = abs(found["log10_ratio_fit"])
        row = {"run_id": run_id, "label": run_label(run), **config,
               **{k: v for k, v in found.items() if k != "profile"},
               "predicted": found["log10_ratio"], "predicted_fit": found["log10_ratio_fit"],
               "measured": mean, "ci_low": low, "ci_high": high, "n_seeds": n, "error": error,
               "rel_error": error / scale if scale >= REL_MIN else math.nan,
               "ln_error": error * math.log(10)}
        row["agrees"] = bool(abs(error) <= REL_TOL * scale or abs(row["ln_error"]) <= LN_TOL)
        if "jacobian_log10_mean_sq" in runs:
            measured = runs.loc[runs["run_id"] == run_id, "jacobian_log10_mean_sq"]
            row["jacobian_measured"] = float(measured.mean()) if measured.notna().any() else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.drop(columns=["log10_ratio", "log10_ratio_fit"]).rename(
        columns={"jacobian_log10_mean_sq": "jacobian_predicted"})
    order = table["activation"].map(ACTIVATION_ORDER).fillna(len(ACTIVATION_ORDER))
    return (table.assign(_order=order, _width=-table["width"])
            .sort_values(["_width", "_order", "activation", "init", "sigma_w2", "sigma_b2"],
                         kind="stable", ignore_index=True).drop(columns=["_order", "_width"]))


# ---------------------------------------------------------------------------- tidy frames

def profile_frame(runs: pd.DataFrame, grad: pd.DataFrame, inputs: dict) -> pd.DataFrame:
    """Measured log10 |delta^l| per run x seed x hidden layer, with the predicted profile.

    The prediction fixes the shape, not the overall scale (the loss at the output sets that):
    ``predicted`` is the profile shifted to the measured seed-median over the fitted layers.
    ``inputs``: run id -> its record's theory inputs (:func:`theory_inputs`).
    """
    parts = []
    for run_id, group, config, found, run in _predicted(runs, grad, inputs):
        median = group.groupby("layer")["log10_delta"].median()
        profile = pd.Series(found["profile"], index=np.arange(int(config["depth"])))
        window = profile.index[fit_window(int(config["depth"]))]
        offset = np.nanmean((median.reindex(window) - profile.reindex(window)).to_numpy(float))
        parts.append(group.assign(
            label=run_label(run), activation=config["activation"],
            width=config["width"], sigma_w2=found["sigma_w2"],
            predicted=(profile + offset).reindex(group["layer"]).to_numpy()))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["run_id", "seed", "layer", "log10_delta", "label", "activation", "width",
                 "sigma_w2", "predicted"])


def spectra_frame(records: list[dict]) -> pd.DataFrame:
    """Jacobian singular-value quantiles of the records that carry them: one row per run x
    seed x quantile (``probability``, ``singular_value``), with the run's study and config.
    ``jacobian_singular_values[seed][k]`` is the ``k / (K - 1)`` quantile (vgbench.jacobian)."""
    rows = []
    for record in records:
        diagnostics = record.get("diagnostics") or {}
        values = diagnostics.get(JACOBIAN_FIELD)
        if not isinstance(values, list) or not values:
            continue
        size = max((len(v) for v in values if isinstance(v, list)), default=0)
        probabilities = np.linspace(0.0, 1.0, size)   # entry k is the k/(K-1) quantile
        config, axes = record["config"], record.get("grid_axes") or {}
        label = run_label({**config, **axes})
        for seed, per_seed in zip(record["seeds"], values):
            if not isinstance(per_seed, list) or len(per_seed) != len(probabilities):
                continue
            for p, value in zip(probabilities, per_seed):
                rows.append({"study": record.get("study"), "run_id": record["run_id"], "seed": seed,
                             "label": label, "activation": config["activation"],
                             "init": config["init"], "width": config["width"],
                             "method": diagnostics.get("jacobian_method"),
                             "probability": p, "singular_value": value})
    columns = ["study", "run_id", "seed", "label", "activation", "init", "width", "method",
               "probability", "singular_value"]
    return pd.DataFrame(rows, columns=columns).astype({"singular_value": float})


def frontier_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Per entry of every trained plain-MLP study with a depth axis: its trainability frontier
    (largest depth where >= 2/3 of seeds reach the target) and 6 xi_c at its initializer
    (the ``theory_sigma_w2``, ``theory_sigma_b2`` its records carry; the activation by name).

    ``xi_c`` is the correlation depth scale at the entry's (sigma_w^2, sigma_b^2): +inf at
    the edge of chaos (or where the theory has no scale), NaN where the initializer has no
    Gaussian equivalent. ``xi_grad`` = |-1/ln chi_1| is the gradient's depth scale; where q*
    is 0 (ReLU below He, tanh at Xavier) xi_c is infinite while the gradient still vanishes
    over ``xi_grad`` layers, so ``gradient_depth`` = 6 xi_grad is given beside it.
    """
    from vgbench.report.leaderboard import by_setting, frontier

    def column(name, default):
        return runs[name] if name in runs else pd.Series(default, index=runs.index)

    # the models the theory describes (their records carry its inputs), without
    # normalization, skip connections or clipping, which the theory does not have
    keep = runs[(runs["frontier_axis"] == "depth") & (runs["study"] != STUDY)
                & column("theory_sigma_w2", math.nan).notna() & (column("norm", "none") == "none")
                & (column("skip", "none") == "none") & (column("clip", "none") == "none")
                & runs["target_value"].notna() & (column("steps", 1) > 0)]
    rows = []
    for (study, task), study_runs in keep.groupby(["study", "task"], sort=True):
        settings = by_setting(study_runs)
        for entry, entry_settings in settings.groupby("entry", sort=False):
            if entry_settings["frontier_value"].nunique() < 2:
                continue   # one depth: no frontier to speak of
            first = study_runs[study_runs["entry"] == entry].iloc[0]
            config = {c: first[c] for c in CONFIG_COLUMNS if c in first.index}
            pair = (float(first["theory_sigma_w2"]), float(first["theory_sigma_b2"]))
            slope = float(config.get("leaky_slope", LEAKY_SLOPE))
            activation = activation_of({"activation": config.get("activation")}, slope)
            xi = xi_grad = math.nan
            if activation is not None:
                field = theory.mean_field(activation, *pair)
                xi = field.xi_c if field.xi_c > 0 else math.inf
                xi_grad = abs(field.xi_grad)
            depth, censored = frontier(entry_settings)
            rows.append({"study": study, "task": task, "entry": entry,
                         "entry_order": int(entry_settings["entry_order"].iloc[0]),
                         "activation": config.get("activation"), "init": config.get("init"),
                         "sigma_w2": pair[0], "sigma_b2": pair[1], "xi_c": xi,
                         "predicted_depth": XI_MULTIPLE * xi, "xi_grad": xi_grad,
                         "gradient_depth": XI_MULTIPLE * xi_grad, "frontier": depth,
                         "frontier_censored": censored,
                         "min_depth": float(entry_settings["frontier_value"].min()),
                         "max_depth": float(entry_settings["frontier_value"].max())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- the report

CAPTIONS = {
    "agreement": "measured vs mean-field per-layer change of log10 ‖∂L/∂h_l‖ at initialization, "
                 "95 % t-interval over seeds (CSV, Markdown, LaTeX)",
    "delta_profiles": "log10 ‖∂L/∂h_l‖ against layer at initialization (dots: median over seeds, "
                      "band: range) and the mean-field prediction (dashed), width {width}",
    "phase_diagram": "χ1 over (σw², σb²) with the order/chaos boundary (black), the built-in "
                     "initializers (white markers) and the study's points filled with their measured χ1",
    "jacobian_spectra": "distribution of the input-output Jacobian's singular values at "
                        "initialization, per activation × initializer",
    "frontier_vs_xi": "trainability frontier of each depth study's entries (circles) against "
                      "6 ξc (bars) and 6 |ξ∇| (diamonds) of their initializer",
    "frontier_vs_xi_table": "trainability frontier against 6 ξc, per entry (CSV)",
}


def theory_outputs(records, out_dir, *, frames=None, formats=("png", "pdf")) -> list:
    """Write the theory table and figures under ``out_dir``; one ``index.Output`` per item.

    Args:
      records: run records (dicts), or a results directory to load them from (with
        ``frames`` given, only the theory study's records are read).
      out_dir: where the files go (created).
      frames: the records' :class:`~vgbench.report.frames.Frames`, if already built.
    """
    from vgbench.report.figure_files import save
    from vgbench.report.index import Output
    from vgbench.report.style import style
    from vgbench.report.tables import LATEX, MARKDOWN, theory_table_text
    from vgbench.report.theory_figures import (
        theory_frontier_figure,
        theory_phase_figure,
        theory_profiles_figure,
        theory_spectra_figure,
    )

    if isinstance(records, (str, Path)):
        records = _theory_records(Path(records), frames)
    frames = frames if frames is not None else build_frames(records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = frames.runs[frames.runs["study"] == STUDY]
    grad = frames.grad_stats[frames.grad_stats["study"] == STUDY]
    outputs = []
    inputs = theory_inputs(records)
    table = agreement_table(runs, grad, inputs) if len(runs) else pd.DataFrame()
    if len(table):
        paths = (out_dir / "theory_agreement.csv", out_dir / "theory_agreement.md",
                 out_dir / "theory_agreement.tex")
        table.to_csv(paths[0], index=False, float_format="%.6g")
        window = fit_window(int(table["depth"].max()))
        for path, dialect in ((paths[1], MARKDOWN), (paths[2], LATEX)):
            path.write_text(theory_table_text(table, runs, dialect, window=window, study=STUDY),
                            encoding="utf-8")
        outputs.append(Output("table", STUDY, "theory_agreement", CAPTIONS["agreement"], paths))
    plans = []
    profiles = profile_frame(runs, grad, inputs) if len(runs) else pd.DataFrame()
    if len(profiles):
        widest = profiles["width"].max()
        plans.append(("delta_profiles", CAPTIONS["delta_profiles"].format(width=int(widest)),
                      lambda: theory_profiles_figure(profiles[profiles["width"] == widest])))
    if len(table):
        plans.append(("phase_diagram", CAPTIONS["phase_diagram"], lambda: theory_phase_figure(
            table, inputs, activation_of=activation_of)))
    theory_runs = set(runs["run_id"])   # a record may belong to the study by its manifest
    spectra = spectra_frame([r for r in records if r.get("run_id") in theory_runs])
    if len(spectra):
        plans.append(("jacobian_spectra", CAPTIONS["jacobian_spectra"],
                      lambda: theory_spectra_figure(spectra)))
    frontiers = frontier_frame(frames.runs)
    if len(frontiers):
        path = out_dir / "frontier_vs_xi.csv"
        frontiers.to_csv(path, index=False, float_format="%.6g")
        outputs.append(Output("table", STUDY, "frontier_vs_xi", CAPTIONS["frontier_vs_xi_table"],
                              (path,)))
        plans.append(("frontier_vs_xi", CAPTIONS["frontier_vs_xi"],
                      lambda: theory_frontier_figure(frontiers, xi_multiple=XI_MULTIPLE)))
    with style():
        for name, caption, build in plans:
            paths = save(build(), out_dir / f"theory_{name}", formats)
            outputs.append(Output("figure", STUDY, f"theory_{name}", caption, tuple(paths)))
    return outputs


def _theory_records(results_dir: Path, frames) -> list[dict]:
    """The records to read from a results directory: all of them without frames, else only
    the theory study's (the frames hold everything else the report needs)."""
    from vgbench.report.records import load_records, read_record

    if frames is None:
        return load_records(results_dir)[0]
    runs = frames.runs
    run_ids = runs.loc[runs["study"] == STUDY, "run_id"].unique() if len(runs) else []
    found = [read_record(results_dir / "runs" / f"{run_id}.json") for run_id in run_ids]
    return [record for record, problem in found if problem is None]


def theory_report(records, out_dir, *, frames=None, formats=("png", "pdf")) -> list[Path]:
    """Write the theory table and figures under ``out_dir`` (see :func:`theory_outputs`);
    returns the paths written."""
    outputs = theory_outputs(records, out_dir, frames=frames, formats=formats)
    return [p for o in outputs for p in o.paths]

"""Theory against measurement: the ``theory`` study's table and figures (numpy, never JAX).

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
* :func:`plot_delta_profiles`: measured log10 ``|delta^l|`` against l, predicted lines.
* :func:`plot_phase_diagram`: chi_1 over (sigma_w^2, sigma_b^2), the order/chaos boundary,
  every built-in initializer and the study's points coloured by their measured chi_1.
* :func:`plot_jacobian_spectra`: the input-output Jacobian's singular value distribution
  (records annotated by :mod:`vgbench.jacobian`).
* :func:`plot_frontier_vs_xi`: the trainability frontier of each depth study's entries against
  6 xi_c (Schoenholz et al. 2017).

:func:`theory_report` writes all of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vgbench import theory
from vgbench.report.stats import t_interval

STUDY = "theory"
FIT_SKIP_INPUT = 2    # the first layer's fan-in is the input's, not the width
FIT_SKIP_OUTPUT = 2   # the signal enters through the readout's few outputs
REL_TOL = 0.10
LN_TOL = 0.01         # absolute tolerance in (1/2) ln chi_1 per layer
REL_MIN = 1e-4        # no relative error for predictions smaller than this (decades/layer)
LEVEL = 0.95
JACOBIAN_FIELD = "jacobian_singular_values"
JACOBIAN_FLOOR = 1e-6  # singular values below this x the largest are not resolved (float32)
INIT_MARKERS = {"naive": "v", "small_normal": "s", "xavier": "D", "xavier_uniform": "D",
                "xavier_normal": "D", "lecun_normal": "D", "orthogonal": "D", "he": "^",
                "he_uniform": "^", "he_normal": "^"}
PHASE_LIMIT = 0.5     # the phase diagram's colours saturate at chi_1 = 10^(+-0.5)
ACTIVATION_ORDER = {"tanh": 0, "relu": 1, "sigmoid": 2, "selu": 3}   # tables and panels
XI_MULTIPLE = 6       # trainable up to about 6 xi_c (Schoenholz et al. 2017)


# ---------------------------------------------------------------------------- predictions

def fit_window(depth: int) -> slice:
    """Hidden layers (0-based, input first) the slopes are fitted over; all if too few."""
    if depth - FIT_SKIP_INPUT - FIT_SKIP_OUTPUT >= 3:
        return slice(FIT_SKIP_INPUT, depth - FIT_SKIP_OUTPUT)
    return slice(0, depth)


def _slope(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.arange(len(values))[ok], values[ok], 1)[0])


def theory_inputs(records) -> dict[str, dict]:
    """Run id -> the theory inputs its record carries (``record["theory"]``, written by
    :func:`vgbench.record.theory_inputs` for the models mean-field theory describes)."""
    return {r["run_id"]: r["theory"] for r in records if isinstance(r.get("theory"), dict)}


def activation_of(inputs: dict, leaky_slope: float = 0.01) -> theory.Phi | None:
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
    slope = float(config.get("leaky_slope", 0.01))
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

def delta_profiles(runs: pd.DataFrame, grad: pd.DataFrame) -> pd.DataFrame:
    """log10 ``delta_norm`` at initialization for each run x seed x hidden layer (seeds that
    finished; a signal that underflowed to zero is left out)."""
    ok = runs.loc[runs["ok"].astype(bool), ["run_id", "seed", "depth"]]
    rows = grad[(grad["log_point"] == 0)].merge(ok, on=["run_id", "seed"])
    rows = rows[rows["layer"] < rows["depth"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_delta = np.log10(rows["delta_norm"].where(rows["delta_norm"] > 0))
    return rows.assign(log10_delta=log_delta)[["run_id", "seed", "layer", "log10_delta"]]


CONFIG_COLUMNS = ("activation", "init", "width", "depth", "input_dim", "input_scale", "sigma_w",
                  "sigma_b", "leaky_slope")
LABEL_AXIS = "point"  # the theory grid's zipped axis: its labels name the runs


def run_label(row) -> str:
    """A short name for a run: its ``point`` label in the theory grid, else activation and init."""
    label = row.get(LABEL_AXIS) if hasattr(row, "get") else None
    if isinstance(label, str) and label:
        return label
    return f"{row['activation']} {row['init']}"


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
    profiles = delta_profiles(runs, grad)
    first = runs.drop_duplicates("run_id").set_index("run_id")
    rows = []
    for run_id, group in profiles.groupby("run_id", sort=False):
        config = {c: first.at[run_id, c] for c in CONFIG_COLUMNS if c in first.columns}
        found = predict(config, inputs.get(run_id)) if config.get("activation") else None
        if found is None:
            continue
        window = fit_window(int(config["depth"]))
        per_seed = [-_slope(g.sort_values("layer")["log10_delta"].to_numpy()[window])
                    for _, g in group.groupby("seed")]
        mean, low, high, n = t_interval(per_seed, level=LEVEL)
        error = mean - found["log10_ratio_fit"]
        scale = abs(found["log10_ratio_fit"])
        row = {"run_id": run_id, "label": run_label(first.loc[run_id]), **config,
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


# ---------------------------------------------------------------------------- tables

TABLE_CAPTION = ("Per-layer change of log10 |dL/dh_l| at initialization: mean-field prediction "
                 "(1/2) log10 chi_1 against measurement (mean and 95 % t-interval over seeds; "
                 "fitted over hidden layers {first}..L-{last}).")


def table_text(table: pd.DataFrame, runs: pd.DataFrame, dialect) -> str:
    """The agreement table as Markdown or booktabs LaTeX (``tables.MARKDOWN``/``LATEX``)."""
    from vgbench.report.tables import (LATEX, LATEX_PREAMBLE, Table, latex_float, markdown_block,
                                       number, provenance_text)

    header = ["activation", "init", "width", "σw²", "σb²", "q*", "χ1", "predicted",
              "measured (95% CI)", "rel. error", "agrees"]
    if dialect is LATEX:
        header = ["activation", "init", "width", r"$\sigma_w^2$", r"$\sigma_b^2$", r"$q^*$",
                  r"$\chi_1$", "predicted", r"measured (95\% CI)", "rel. error", "agrees"]
    lines = []
    for row in table.itertuples():
        interval = (f"{number(row.measured, dialect, 5)} [{number(row.ci_low, dialect, 5)}, "
                    f"{number(row.ci_high, dialect, 5)}]")
        rel = (dialect.missing if math.isnan(row.rel_error)
               else f"{number(100 * row.rel_error, dialect, 1)}{dialect.percent}")
        lines.append([dialect.escape(row.activation), dialect.escape(row.init), str(int(row.width)),
                      f"{row.sigma_w2:.3g}", f"{row.sigma_b2:.3g}", _q_text(row.q_star, dialect),
                      f"{row.chi1:.4f}", number(row.predicted_fit, dialect, 5), interval, rel,
                      "yes" if row.agrees else dialect.bold("no")])
    window = fit_window(int(table["depth"].max())) if len(table) else slice(0, 0)
    caption = TABLE_CAPTION.format(first=window.start + 1,
                                   last=FIT_SKIP_OUTPUT if window.start else 0)
    footer = provenance_text(runs, dialect)
    table = Table(caption=dialect.escape(caption), header=header, rows=lines,
                  label="theory_agreement", groups=[])
    if dialect is LATEX:
        return "\n".join(LATEX_PREAMBLE + [latex_float(table, footer, text_columns=2)])
    return "\n".join([f"# Study `{STUDY}`: theory against measurement", ""]
                     + markdown_block(table, text_columns=2) + [f"_Provenance: {footer}_", ""])


def _q_text(q: float, dialect) -> str:
    if math.isinf(q):
        return dialect.infinity
    return "0" if q == 0 else f"{q:.3g}"


# ---------------------------------------------------------------------------- tidy frames

def profile_frame(runs: pd.DataFrame, grad: pd.DataFrame, inputs: dict) -> pd.DataFrame:
    """Measured log10 |delta^l| per run x seed x hidden layer, with the predicted profile.

    The prediction fixes the shape, not the overall scale (the loss at the output sets that):
    ``predicted`` is the profile shifted to the measured seed-median over the fitted layers.
    ``inputs``: run id -> its record's theory inputs (:func:`theory_inputs`).
    """
    profiles = delta_profiles(runs, grad)
    first = runs.drop_duplicates("run_id").set_index("run_id")
    parts = []
    for run_id, group in profiles.groupby("run_id", sort=False):
        config = {c: first.at[run_id, c] for c in CONFIG_COLUMNS if c in first.columns}
        found = predict(config, inputs.get(run_id))
        if found is None:
            continue
        median = group.groupby("layer")["log10_delta"].median()
        profile = pd.Series(found["profile"], index=np.arange(int(config["depth"])))
        window = profile.index[fit_window(int(config["depth"]))]
        offset = np.nanmean((median.reindex(window) - profile.reindex(window)).to_numpy(float))
        parts.append(group.assign(
            label=run_label(first.loc[run_id]), activation=config["activation"],
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
            slope = float(config.get("leaky_slope", 0.01))
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


# ---------------------------------------------------------------------------- axes-level figures

def plot_delta_profiles(df: pd.DataFrame, *, ax=None, legend: bool = True):
    """Measured log10 |dL/dh_l| against layer l (median over seeds, band: range) and the
    mean-field prediction (dashed), one line per run coloured by its sigma_w^2 (dark: small).
    ``df``: :func:`profile_frame` rows, typically of one activation."""
    import matplotlib as mpl
    from matplotlib import pyplot as plt

    from vgbench.report.figures import GRAD_LABEL
    from vgbench.report.style import SEQUENTIAL

    ax = ax if ax is not None else plt.gca()
    runs = df.drop_duplicates("run_id").sort_values("sigma_w2")
    shades = mpl.colormaps[SEQUENTIAL](np.linspace(0.0, 0.85, max(len(runs), 2)))
    for color, run in zip(shades, runs.itertuples()):
        group = df[df["run_id"] == run.run_id]
        stats = group.groupby("layer")["log10_delta"].agg(["median", "min", "max"])
        layers = stats.index.to_numpy(float) + 1
        ax.plot(layers, stats["median"], color=color, marker="o", markersize=2, linewidth=0,
                label=f"σw² = {run.sigma_w2:.3g}")
        ax.fill_between(layers, stats["min"], stats["max"], color=color, alpha=0.2, linewidth=0)
        predicted = group.drop_duplicates("layer").sort_values("layer")
        ax.plot(predicted["layer"] + 1, predicted["predicted"], color=color, linestyle="--",
                linewidth=0.9, label="_predicted")
    if legend:
        ax.plot([], [], color="0.3", linestyle="--", label="mean field")
        ax.legend(fontsize=5, handlelength=1.2, loc="best")
    ax.set(xlabel="layer l (input → output)", ylabel="log10 " + GRAD_LABEL)
    return ax


def plot_phase_diagram(activation, *, ax=None, points: pd.DataFrame | None = None,
                       sigma_w2_range=(0.05, 4.0), sigma_b2_range=(0.0, 0.25),
                       initializers: dict | None = None, title: str | None = None,
                       resolution=(41, 26), limit: float = PHASE_LIMIT, colorbar: bool = True):
    """chi_1 over (sigma_w^2, sigma_b^2) for one activation (Schoenholz et al. 2017, Fig. 1).

    ``activation``: anything :func:`vgbench.theory.as_activation` takes (a name, a Phi).
    Colour: log10 chi_1 (blue: gradients vanish, red: they explode), clipped to +-``limit``;
    black line: the order/chaos boundary chi_1 = 1; white markers (labelled for a legend):
    each of ``initializers`` (name -> (sigma_w^2, sigma_b^2) or None, as a record's theory
    inputs list them), the initializers at one point sharing a marker; circles: ``points`` (columns
    ``sigma_w2``, ``sigma_b2`` and, if present, ``measured`` = (1/2) log10 chi_1 measured),
    filled with the measured chi_1 on the same colour scale.
    """
    import matplotlib as mpl
    from matplotlib import pyplot as plt

    ax = ax if ax is not None else plt.gca()
    sw2 = np.linspace(*sigma_w2_range, resolution[0])
    sb2 = np.linspace(*sigma_b2_range, resolution[1])
    with np.errstate(divide="ignore"):
        log_chi = np.log10(theory.chi1_grid(activation, sw2, sb2, n_points=50)).T
    norm = mpl.colors.Normalize(-limit, limit)
    cmap = mpl.colormaps["RdBu_r"]
    mesh = ax.pcolormesh(sw2, sb2, np.clip(log_chi, -limit, limit), cmap=cmap, norm=norm,
                         shading="nearest", rasterized=True)
    if np.nanmin(log_chi) < 0 < np.nanmax(log_chi):
        ax.contour(sw2, sb2, log_chi, levels=[0.0], colors="k", linewidths=1.0)
    for (x, y), names in _initializer_points(initializers or {}).items():
        if sigma_w2_range[0] <= x <= sigma_w2_range[1] and sigma_b2_range[0] <= y <= sigma_b2_range[1]:
            ax.scatter([x], [y], marker=INIT_MARKERS.get(names[0], "P"), s=22, color="white",
                       edgecolor="k", linewidth=0.6, zorder=4, clip_on=False,
                       label=", ".join(names))
    if points is not None and len(points):
        measured = points["measured"] if "measured" in points else pd.Series(np.nan, points.index)
        fill = [cmap(norm(np.clip(2 * m, -limit, limit))) if np.isfinite(m) else "none"
                for m in measured]
        ax.scatter(points["sigma_w2"], points["sigma_b2"], s=22, c=fill, edgecolor="k",
                   linewidth=0.7, zorder=5, clip_on=False, label="study point (measured χ1)")
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label="log10 χ1", pad=0.02)
    ax.set(xlim=sigma_w2_range, ylim=sigma_b2_range, xlabel="σw²", ylabel="σb²",
           title=title if title is not None else activation if isinstance(activation, str) else "")
    return ax


def label_colors(df: pd.DataFrame) -> dict:
    """Colour of each ``label``, in order of first appearance (colour-blind palette)."""
    import seaborn as sns

    labels = list(dict.fromkeys(df["label"]))
    return dict(zip(labels, sns.color_palette("colorblind" if len(labels) <= 10 else "husl",
                                              len(labels))))


def _initializer_points(initializers: dict) -> dict:
    """(sigma_w^2, sigma_b^2) -> names of the initializers there ('gaussian' aside: it is any
    point), from a record's theory inputs (name -> pair or None)."""
    found: dict[tuple, list] = {}
    for name, pair in initializers.items():
        if name == "gaussian":
            continue
        if pair is not None and None not in pair:
            found.setdefault((round(pair[0], 6), round(pair[1], 6)), []).append(name)
    for names in found.values():   # xavier_uniform and xavier_normal -> xavier
        for stem in {n.rsplit("_", 1)[0] for n in names}:
            if {f"{stem}_uniform", f"{stem}_normal"} <= set(names):
                names[:] = [stem if n == f"{stem}_uniform" else n for n in names
                            if n != f"{stem}_normal"]
    return found


def plot_jacobian_spectra(df: pd.DataFrame, *, ax=None, colors: dict | None = None,
                          floor: float = 1e-6):
    """Distribution function of the Jacobian's singular values (median over seeds of each
    quantile) on a log axis, one line per run. A run's values below ``floor`` x its largest
    are not resolved in float32 (zero included) and sit at that floor, the left end of its
    line; a dotted line marks 1, where dynamical isometry puts every singular value."""
    import matplotlib as mpl
    from matplotlib import pyplot as plt

    ax = ax if ax is not None else plt.gca()
    colors = colors or label_colors(df)
    lows, highs = [], []
    for label, group in df.groupby("label", sort=False):
        curve = group.groupby("probability")["singular_value"].median()
        top = max(float(curve.max()), 1e-300)
        values = np.maximum(curve.to_numpy(float), floor * top)
        ax.plot(values, curve.index, color=colors.get(label), label=str(label))
        lows.append(values.min())
        highs.append(top)
    if lows:  # at least two decades, centred on the data
        low, high = min(lows), max(highs)
        pad = max(1.5, math.sqrt(100 * low / high))
        ax.set_xlim(low / pad, high * pad)
        if low / pad <= 1.0 <= high * pad:
            ax.axvline(1.0, color="0.4", linestyle=":", linewidth=0.8)
    ax.set(xscale="log", xlabel="singular value of ∂h_L/∂x", ylabel="fraction below",
           ylim=(0, 1))
    ax.xaxis.set_major_locator(mpl.ticker.LogLocator(numticks=5))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
    return ax


def plot_frontier_vs_xi(df: pd.DataFrame, *, ax=None):
    """Per entry (rows): the trainability frontier (filled circle; an arrow where every depth
    tried trained, a cross where none did), 6 xi_c (vertical bar; an arrow at infinity) and
    6 xi_grad (open diamond). ``df``: :func:`frontier_frame` rows of one study."""
    from matplotlib import pyplot as plt

    ax = ax if ax is not None else plt.gca()
    df = df.sort_values("entry_order").reset_index(drop=True)
    lo = max(min(df["min_depth"].min(), np.nanmin(df["predicted_depth"].replace(np.inf, np.nan)
                                                    .to_numpy(float), initial=np.inf)) / 2, 0.5)
    hi = df["max_depth"].max() * 2
    y = np.arange(len(df))
    for i, row in df.iterrows():
        if np.isnan(row["frontier"]):
            ax.scatter([row["min_depth"]], [i], marker="x", color="C3", s=18, zorder=3)
        else:
            ax.scatter([row["frontier"]], [i], marker=">" if row["frontier_censored"] else "o",
                       color="C0", s=18, zorder=3)
        if np.isfinite(row.get("gradient_depth", np.nan)):
            ax.scatter([min(max(row["gradient_depth"], lo), hi)], [i], marker="d", s=14,
                       facecolor="none", edgecolor="0.4", linewidth=0.7, zorder=2)
        predicted = row["predicted_depth"]
        if np.isfinite(predicted):
            ax.scatter([min(max(predicted, lo), hi)], [i], marker="|", color="k", s=60, zorder=2)
        elif not np.isnan(predicted):
            ax.annotate("", (hi, i), xytext=(hi / 1.6, i),
                        arrowprops={"arrowstyle": "->", "color": "k", "linewidth": 0.8})
    ax.set_xscale("log", base=2)
    ax.set(xlim=(lo, hi), ylim=(len(df) - 0.5, -0.5), xlabel="depth")
    ax.set_yticks(y, df["entry"].tolist())
    return ax


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
    from vgbench.report.frames import build_frames
    from vgbench.report.index import Output
    from vgbench.report.tables import LATEX, MARKDOWN

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
        paths[1].write_text(table_text(table, runs, MARKDOWN), encoding="utf-8")
        paths[2].write_text(table_text(table, runs, LATEX), encoding="utf-8")
        outputs.append(Output("table", STUDY, "theory_agreement", CAPTIONS["agreement"], paths))
    plans = []
    profiles = profile_frame(runs, grad, inputs) if len(runs) else pd.DataFrame()
    if len(profiles):
        widest = profiles["width"].max()
        plans.append(("delta_profiles", CAPTIONS["delta_profiles"].format(width=int(widest)),
                      lambda: _profiles_figure(profiles[profiles["width"] == widest])))
    if len(table):
        plans.append(("phase_diagram", CAPTIONS["phase_diagram"], lambda: _phase_figure(table, inputs)))
    theory_runs = set(runs["run_id"])   # a record may belong to the study by its manifest
    spectra = spectra_frame([r for r in records if r.get("run_id") in theory_runs])
    if len(spectra):
        plans.append(("jacobian_spectra", CAPTIONS["jacobian_spectra"],
                      lambda: _spectra_figure(spectra)))
    frontiers = frontier_frame(frames.runs)
    if len(frontiers):
        path = out_dir / "frontier_vs_xi.csv"
        frontiers.to_csv(path, index=False, float_format="%.6g")
        outputs.append(Output("table", STUDY, "frontier_vs_xi", CAPTIONS["frontier_vs_xi_table"],
                              (path,)))
        plans.append(("frontier_vs_xi", CAPTIONS["frontier_vs_xi"],
                      lambda: _frontier_figure(frontiers)))
    from vgbench.report.figure_files import save
    from vgbench.report.style import style

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


# ---------------------------------------------------------------------------- figure-level

def _by_activation(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return sorted(df.groupby("activation", sort=False),
                  key=lambda kv: (ACTIVATION_ORDER.get(kv[0], len(ACTIVATION_ORDER)), kv[0]))


def _profiles_figure(profiles: pd.DataFrame):
    from vgbench.report.figure_files import facets, outer_labels

    panels = _by_activation(profiles)
    fig, axes = facets(len(panels), ncols=2, panel=(2.6, 2.0), sharey=False)
    for ax, (activation, rows) in zip(axes, panels):
        plot_delta_profiles(rows, ax=ax)
        ax.set_title(activation)
    outer_labels(axes)
    return fig


def _phase_figure(table: pd.DataFrame, inputs: dict):
    from vgbench.report.figure_files import (COLORBAR, facets, fit_legends, legend_width,
                                             outer_labels)

    gaussian = table[table["init"] == "gaussian"]
    activations = [a for a, _ in _by_activation(table) if a != "identity"]
    widest = table[table["width"] == table["width"].max()]
    legend = ["xavier, lecun_normal, orthogonal", "study point (measured χ1)"]
    fig, axes = facets(len(activations), ncols=2, panel=(2.4, 1.9), sharey=False,
                       legend=COLORBAR + legend_width(legend))
    for ax, activation in zip(axes, activations):
        points = gaussian[gaussian["activation"] == activation]
        top = max(4.0, 1.1 * float(points["sigma_w2"].max())) if len(points) else 4.0
        rows = widest[widest["activation"] == activation]
        rows = rows if len(rows) else table[table["activation"] == activation]
        run = rows.iloc[0]
        found = inputs[run["run_id"]]   # the run's own activation
        markers = {}   # the built-in initializers and every one these runs used
        for run_id in rows["run_id"]:
            markers.update(inputs.get(run_id, {}).get("initializers", {}))
        plot_phase_diagram(activation_of(found, float(run.get("leaky_slope", 0.01))), ax=ax,
                           points=points, sigma_w2_range=(0.05, top), title=activation,
                           initializers=markers, colorbar=False)
    outer_labels(axes)
    import matplotlib as mpl

    from vgbench.report.figure_files import colorbar_axes

    mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-PHASE_LIMIT, PHASE_LIMIT),
                                     cmap="RdBu_r")
    cax = colorbar_axes(fig, axes)
    fig.colorbar(mappable, cax=cax, label="log10 χ1")
    handles = {}
    for ax in axes:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels())})
    fig.legend(list(handles.values()), list(handles), loc="upper left", fontsize=6,
               bbox_to_anchor=(cax.get_position().x1 + COLORBAR / fig.get_figwidth(), 0.98))
    fit_legends(fig)
    return fig


def _spectra_figure(spectra: pd.DataFrame):
    from vgbench.report.figure_files import facets, fit_legends, legend_width, outer_labels

    panels = _by_activation(spectra)
    colors = label_colors(spectra)
    fig, axes = facets(len(panels), ncols=4, panel=(1.7, 1.6), sharey=True,
                       legend=legend_width(list(colors)))
    for ax, (activation, rows) in zip(axes, panels):
        plot_jacobian_spectra(rows, ax=ax, colors=colors, floor=JACOBIAN_FLOOR)
        ax.set_title(activation)
    outer_labels(axes)
    handles = {}
    for ax in axes:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels())})
    right = max(ax.get_position().x1 for ax in axes)
    fig.legend(list(handles.values()), list(handles), loc="upper left", fontsize=7,
               bbox_to_anchor=(right + 0.01, 0.98))
    fit_legends(fig)
    return fig


def _frontier_figure(frontiers: pd.DataFrame):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = list(frontiers.groupby(["study", "task"], sort=True))
    rows = [len(g) for _, g in panels]
    longest = max(len(str(e)) for e in frontiers["entry"])
    fig = Figure(figsize=(0.055 * longest + 4.6, 0.16 * sum(rows) + 0.75 * len(panels)),
                 layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=rows).ravel()
    for ax, ((study, task), group) in zip(axes, panels):
        plot_frontier_vs_xi(group, ax=ax)
        ax.set_title(f"{study} ({task})")
    handles = [Line2D([], [], marker="o", color="C0", linestyle=""),
               Line2D([], [], marker=">", color="C0", linestyle=""),
               Line2D([], [], marker="x", color="C3", linestyle=""),
               Line2D([], [], marker="|", color="k", linestyle="", markersize=8),
               Line2D([], [], marker="d", markerfacecolor="none", color="0.4", linestyle="")]
    labels = ["frontier", "every depth trains", "no depth trains", f"{XI_MULTIPLE} ξc",
              f"{XI_MULTIPLE} |ξ∇|"]
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    return fig

"""The finite-width figure, tables and page: measured spread of the log lengths at
initialization against the exact law (``results/finite_width/init.csv``, made by
``vgbench finite-width``), and where the study's trained records exist, their outcome over β.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vgbench.report.figure_files import save

CAPTION = ("spread of ln q_L (forward) and ln‖δ_1‖² (backward) at initialization against "
           "β = depth/width, measured (seed-bootstrap 95 % bars) and the exact finite-width law "
           "(×); the typical example's attenuation against the batch RMS; the trained "
           "outcome over β (page: finite_width/README.md)")
DEPTH_COLORS = {4: "#9ecae1", 8: "#6baed6", 16: "#3182bd", 32: "#08519c", 64: "#08306b"}
NETWORK_LABEL = {"relu": "ReLU, He (law: exact)", "tanh": "tanh, critical (law: linear)"}


def load(results: Path) -> pd.DataFrame | None:
    path = Path(results) / "finite_width" / "init.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    missing = {"network", "depth", "width", "beta", "forward_var", "forward_var_law",
               "backward_var", "backward_var_independent"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a finite-width table (no column {sorted(missing)[0]!r}); "
                         "re-make it with `vgbench finite-width`")
    return frame


def trained_outcomes(runs: pd.DataFrame | None, study: str = "finite_width") -> pd.DataFrame | None:
    """Per (depth, width) of the trained finite-width study: β, the mean final test accuracy
    over the seeds that finished, its range, seeds at target and seeds lost."""
    if runs is None or "study" not in runs or not (runs["study"] == study).any():
        return None
    rows = runs[(runs["study"] == study) & (runs.get("role", "study") != "tune")]
    out = []
    for (depth, width), group in rows.groupby(["depth", "width"]):
        ok = group[group["status"] == "ok"]
        acc = ok["final_test_accuracy"].to_numpy(float)
        out.append({"depth": int(depth), "width": int(width), "beta": depth / width,
                    "accuracy": float(np.mean(acc)) if len(acc) else np.nan,
                    "accuracy_min": float(np.min(acc)) if len(acc) else np.nan,
                    "accuracy_max": float(np.max(acc)) if len(acc) else np.nan,
                    "at_target": int(ok["steps_to_target"].notna().sum()),
                    "seeds": len(group), "lost": int((group["status"] != "ok").sum())})
    return pd.DataFrame(out).sort_values(["beta", "depth"]) if out else None


def figure(frame: pd.DataFrame, trained: pd.DataFrame | None, stem: Path) -> list[Path]:
    """Spread against β, measured (dots, seed-bootstrap 95 % bars) and the law (×); the
    typical example's attenuation against the RMS one; the trained outcome over β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if trained is not None else 3
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 3.3))
    for ax, (value, law, title) in zip(axes[:2], (
            ("forward_var", "forward_var_law", "forward: Var[ln q_L − ln q_0]"),
            ("backward_var", "backward_var_independent", "backward: Var[ln‖δ_1‖² − ln‖δ_L‖²]"))):
        for network, marker in (("relu", "o"), ("tanh", "s")):
            rows = frame[frame["network"] == network]
            for depth, group in rows.groupby("depth"):
                color = DEPTH_COLORS.get(int(depth), "grey")
                ax.errorbar(group["beta"], group[value],
                            yerr=[group[value] - group[f"{value}_lo"],
                                  group[f"{value}_hi"] - group[value]],
                            fmt=marker, ms=4, color=color, mfc=color if network == "relu" else "white",
                            lw=0.8, capsize=1.5)
            ax.plot(rows["beta"], rows[law], "x", color="black" if network == "relu" else "#b2182b",
                    ms=5, mew=1.0)
        beta = np.geomspace(frame["beta"].min(), frame["beta"].max(), 50)
        ax.plot(beta, 5 * beta, ":", color="black", lw=0.8)
        ax.plot(beta, 2 * beta, ":", color="#b2182b", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("β = depth / width")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("variance over inputs and weights")
    ax = axes[2]
    rows = frame[frame["network"] == "relu"]
    for depth, group in rows.groupby("depth"):
        color = DEPTH_COLORS.get(int(depth), "grey")
        ax.plot(group["beta"], group["log10_median_ratio"], "o", color=color, ms=4)
        ax.plot(group["beta"], group["log10_rms_ratio"], "^", color=color, mfc="white", ms=4)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("β = depth / width")
    ax.set_ylabel("log10 ‖δ_1‖ / ‖δ_L‖")
    ax.set_title("ReLU/He: typical example (●), batch RMS (△)", fontsize=9)
    if trained is not None:
        ax = axes[3]
        for depth, group in trained.groupby("depth"):
            color = DEPTH_COLORS.get(int(depth), "grey")
            ax.errorbar(group["beta"], group["accuracy"],
                        yerr=[group["accuracy"] - group["accuracy_min"],
                              group["accuracy_max"] - group["accuracy"]],
                        fmt="o-", ms=4, color=color, lw=0.8, capsize=1.5)
        ax.set_xscale("log")
        ax.set_xlabel("β = depth / width")
        ax.set_ylabel("final test accuracy (mean, range)")
        ax.set_title("trained (ReLU/He, digits, tuned lr)", fontsize=9)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=f"depth {d}")
               for d, c in DEPTH_COLORS.items() if d in set(frame["depth"])]
    handles += [plt.Line2D([], [], color="black", marker="o", ls="", label=NETWORK_LABEL["relu"]),
                plt.Line2D([], [], color="black", marker="s", mfc="white", ls="",
                           label=NETWORK_LABEL["tanh"]),
                plt.Line2D([], [], color="black", marker="x", ls="", label="the law, each network"),
                plt.Line2D([], [], color="black", ls=":", label="5β (ReLU), 2β (linear): wide limit")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.88, bottom=0.3, wspace=0.32)
    paths = save(fig, stem)
    plt.close(fig)
    return paths


def _interval(row, name) -> str:
    return f"{row[name]:.2f} [{row[name + '_lo']:.2f}, {row[name + '_hi']:.2f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| network | depth | width | β | Var fwd, measured [95 %] | law | "
             "Var bwd, measured [95 %] | law if independent | log10 RMS ratio | "
             "log10 median ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in frame.sort_values(["network", "beta", "depth"]).iterrows():
        lines.append(f"| {r['network']} | {r['depth']} | {r['width']} | {r['beta']:.3g} | "
                     f"{_interval(r, 'forward_var')} | {r['forward_var_law']:.2f} | "
                     f"{_interval(r, 'backward_var')} | {r['backward_var_independent']:.2f} | "
                     f"{r['log10_rms_ratio']:+.2f} | {r['log10_median_ratio']:+.2f} |")
    return "\n".join(lines)


def trained_table(trained: pd.DataFrame) -> str:
    lines = ["| depth | width | β | test accuracy, mean [range] | seeds at target | lost |",
             "|---:|---:|---:|---:|---:|---:|"]
    for _, r in trained.iterrows():
        lines.append(f"| {r['depth']} | {r['width']} | {r['beta']:.3g} | {r['accuracy']:.3f} "
                     f"[{r['accuracy_min']:.3f}, {r['accuracy_max']:.3f}] | "
                     f"{r['at_target']}/{r['seeds']} | {r['lost']} |")
    return "\n".join(lines)


def agreement(frame: pd.DataFrame) -> dict:
    """How often the law falls in the measured interval, per network and direction."""
    out = {}
    for network, rows in frame.groupby("network"):
        for value, law in (("forward_var", "forward_var_law"),
                           ("backward_var", "backward_var_independent")):
            inside = (rows[law] >= rows[f"{value}_lo"]) & (rows[law] <= rows[f"{value}_hi"])
            ratio = rows[value] / rows[law]
            out[(network, value)] = (int(inside.sum()), len(rows), float(ratio.min()),
                                     float(ratio.max()))
    return out


def write(results: Path, runs: pd.DataFrame | None = None) -> list[Path]:
    """The figure, a Markdown page with the tables; nothing when no measurement exists."""
    frame = load(results)
    if frame is None:
        return []
    trained = trained_outcomes(runs)
    folder = Path(results) / "finite_width"
    paths = figure(frame, trained, Path(results) / "figures" / "finite_width" / "spread_vs_beta")
    agree = agreement(frame)
    text = ["# Finite width: fluctuations at initialization against β = depth / width", "",
            "Made by `vgbench finite-width` (the measurement, `init.csv`, `provenance.json`) and "
            "`vgbench report` (this page and the figure). Each row: the suite's MLP on digits at "
            "initialization, every (seed, example) pair of 256 weight draws × 32 training examples; the "
            "variance is over both (weights and inputs), its interval a 95 % bootstrap over "
            "seeds. The law: `vgbench.finite_width` (docs/theory.md, \"Finite width\").", "",
            "![spread against beta](../figures/finite_width/spread_vs_beta.png)", ""]
    for (network, value), (inside, n, lo, hi) in agree.items():
        text.append(f"- {network}, {value.replace('_', ' ')}: the law inside the measured "
                    f"interval in {inside} of {n} networks; measured / law from {lo:.2f} to {hi:.2f}.")
    text += ["", markdown_table(frame), ""]
    if trained is not None:
        text += ["## Trained (study `finite_width`)", "", trained_table(trained), ""]
    (folder / "README.md").write_text("\n".join(text))
    return [*paths, folder / "README.md"]

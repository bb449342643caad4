"""Every figure function draws what it should: lines, bands, markers, meshes (not pixels)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, QuadMesh

from fixtures_records import SMALL, record, recurrent_study, toy_study
from vgbench.report.synthetic import make_record
from vgbench.report import build_frames, with_runs
from vgbench.report import figures as fg
from vgbench.report.figure_files import study_figures
from vgbench.report.style import entry_styles


@pytest.fixture(scope="module")
def toy():
    frames = build_frames(toy_study())
    return frames, with_runs(frames.grad_stats, frames.runs)


@pytest.fixture(scope="module")
def memory():
    frames = build_frames(recurrent_study())
    return frames, with_runs(frames.time_stats, frames.runs)


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_grad_vs_layer_draws_the_median_over_seeds_per_entry(toy):
    frames, grad = toy
    depth4 = grad[grad["frontier_value"] == 4]
    ax = fg.plot_grad_vs_layer(depth4)
    lines = lines_by_label(ax)
    assert set(lines) == {"relu", "sigmoid"}
    x, y = lines["sigmoid"].get_data()
    assert list(x) == [1, 2, 3, 4]
    at_init = depth4[(depth4["entry"] == "sigmoid") & (depth4["log_point"] == 0)]
    assert np.allclose(y, at_init.groupby("layer")["delta_norm"].median())
    assert ax.get_yscale() == "log"
    bands = [c for c in ax.collections if c.get_label() == "_seed range"]
    assert len(bands) == 1 and len(bands[0].get_paths()) == 2    # a seed band per entry
    upper = bands[0].get_paths()[1].vertices[:, 1].max()
    assert upper == pytest.approx(at_init.groupby("layer")["delta_norm"].max().max())


def test_grad_vs_layer_marks_layers_whose_signal_underflowed(toy):
    _, grad = toy
    depth4 = grad[grad["frontier_value"] == 4].copy()
    vanished = (depth4["entry"] == "sigmoid") & (depth4["layer"] == 0) & (depth4["seed"] == 0)
    depth4.loc[vanished, ["delta_norm", "delta_underflow"]] = [0.0, True]
    ax = fg.plot_grad_vs_layer(depth4)
    markers = [c for c in ax.collections if c.get_label() == "_underflow"]
    assert len(markers) == 1 and markers[0].get_offsets()[0][0] == 1


def test_grad_heatmap_is_a_depth_by_layer_mesh(toy):
    _, grad = toy
    ax = fg.plot_grad_heatmap(grad[grad["entry"] == "relu"])
    meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    values = meshes[0].get_array()
    assert values.shape == (2, 4)                     # depths 2 and 4, up to 4 layers
    assert values.mask[0, 2:].all() and not values.mask[1].any()   # depth 2 has 2 layers
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4"]


def test_loss_curves_draw_bands_plateaus_and_the_trivial_predictor(toy):
    frames, _ = toy
    curves = with_runs(frames.curves, frames.runs, ("entry", "entry_order", "frontier_value",
                                                    "plateau_step", "task_baseline"))
    curves = curves[curves["frontier_value"] == 4]
    ax = fg.plot_loss_curves(curves)
    lines = lines_by_label(ax)
    assert {"relu", "sigmoid", "trivial predictor"} <= set(lines)
    assert lines["trivial predictor"].get_ydata()[0] == pytest.approx(2.303)
    plateaus = frames.runs[(frames.runs["frontier_value"] == 4)]["plateau_step"].notna().sum()
    drawn = sum(len(c.get_offsets()) for c in ax.collections if "plateau" in c.get_label())
    assert drawn == plateaus


def test_grad_over_steps_draws_one_line_per_layer(toy):
    _, grad = toy
    run = grad[(grad["entry"] == "sigmoid") & (grad["frontier_value"] == 4)]
    ax = fg.plot_grad_over_steps(run, colorbar=False)
    collection = next(c for c in ax.collections if isinstance(c, LineCollection))
    segments = collection.get_segments()
    assert len(segments) == 4
    first_layer = run[run["layer"] == 0].groupby("step")["grad_norm"].median()
    assert np.allclose(segments[0][:, 1], first_layer.to_numpy())


def test_weight_trajectories_show_change_from_initialisation(toy):
    _, grad = toy
    run = grad[(grad["entry"] == "relu") & (grad["frontier_value"] == 4)]
    ax = fg.plot_weight_trajectories(run, colorbar=False)
    segments = next(c for c in ax.collections if isinstance(c, LineCollection)).get_segments()
    assert len(segments) == 4 * 4                     # layers x sample weights
    assert all(s[0, 1] == 0 for s in segments)
    ax2 = plt.figure().gca()
    deep = record(study="deep", depth=12, activation="relu")
    deep_grad = build_frames([deep]).grad_stats
    fg.plot_weight_trajectories(deep_grad, ax=ax2, max_layers=5, colorbar=False)
    assert len(next(c for c in ax2.collections if isinstance(c, LineCollection)).get_segments()) == 20


def test_time_grad_draws_one_line_per_cell(memory):
    _, time = memory
    ax = fg.plot_time_grad(time[time["frontier_value"] == 20])
    lines = lines_by_label(ax)
    assert set(lines) == {"rnn", "lstm"}
    assert list(lines["rnn"].get_xdata()) == list(range(1, 21))
    assert ax.get_yscale() == "log"


def test_frontier_plots_success_rate_against_depth(toy):
    frames, _ = toy
    ax = fg.plot_frontier(frames.runs)
    lines = lines_by_label(ax)
    assert list(lines["relu"].get_ydata()) == pytest.approx([1.0, 2 / 3])
    assert list(lines["sigmoid"].get_ydata()) == pytest.approx([1 / 3, 0.0])
    assert lines["2/3 of seeds"].get_ydata()[0] == pytest.approx(2 / 3)


def test_dead_saturation_and_loss_vs_baseline(toy, memory):
    frames, _ = toy
    ax = fg.plot_dead_saturation(frames.runs, value="saturation_final")
    assert set(lines_by_label(ax)) == {"relu", "sigmoid"}
    runs = memory[0].runs
    ax2 = plt.figure().gca()
    fg.plot_loss_vs_baseline(runs, ax=ax2)
    lines = lines_by_label(ax2)
    ok = runs[runs["ok"] & (runs["entry"] == "lstm")]
    ratio = (ok["final_test_loss"] / ok["task_baseline"]).groupby(ok["frontier_value"]).median()
    assert np.allclose(lines["lstm"].get_ydata(), ratio)
    assert lines["trivial predictor"].get_ydata()[0] == 1.0


def test_many_entries_are_drawn_with_colour_for_one_axis_and_dashes_for_another():
    entries = [f"{a} / {i}" for a in ("sigmoid", "tanh", "relu", "gelu") for i in ("naive", "he", "lecun")]
    runs = pd.DataFrame({"entry": entries, "entry_order": range(12),
                         "entry_axes": "activation / init"})
    styles = entry_styles(runs)
    assert styles.colors["tanh / naive"] == styles.colors["tanh / he"]
    assert styles.colors["tanh / naive"] != styles.colors["relu / naive"]
    assert styles.dashes["tanh / naive"] == styles.dashes["relu / naive"]
    assert styles.dashes["tanh / naive"] != styles.dashes["tanh / he"]
    labels = [label for _, label in styles.legend]
    assert labels == ["activation:", "sigmoid", "tanh", "relu", "gelu", "init:", "naive", "he",
                      "lecun"]
    few = entry_styles(runs.iloc[:5])
    assert not few.dashes and len(set(few.colors.values())) == 5


def test_study_figures_writes_every_applicable_figure(toy, memory, tmp_path):
    frames, _ = toy
    written = study_figures(frames.runs, frames.grad_stats, frames.time_stats, frames.curves,
                            tmp_path / "toy", ("png",))
    names = [name for name, _, _ in written]
    assert names == ["grad_vs_layer", "grad_heatmap", "loss_curves", "grad_over_steps",
                     "weight_trajectories", "frontier", "dead_saturation"]
    assert all(paths[0].stat().st_size > 5000 for _, _, paths in written)
    rec = memory[0]
    written = study_figures(rec.runs, rec.grad_stats, rec.time_stats, rec.curves,
                            tmp_path / "memory", ("png",))
    names = [name for name, _, _ in written]
    assert {"time_grad", "loss_vs_baseline", "frontier", "loss_curves"} <= set(names)
    assert "grad_heatmap" not in names


def test_a_study_of_two_tasks_gets_each_figure_per_task(tmp_path):
    # adding and copy losses are not on one scale: one figure per task, not bands pooled
    # over both
    records = [make_record(study="two_tasks", grid_axes={"task": task, "cell": cell}, seeds=(0,),
                           model="rnn", task=task, seq_len=5, cell=cell, **SMALL)
               for task in ("adding", "copy") for cell in ("rnn", "lstm")]
    frames = build_frames(records)
    outdir = tmp_path / "two_tasks"
    outdir.mkdir()
    for name in ("time_grad.png", "time_grad.pdf", "notes.png", "time_grad.csv"):
        (outdir / name).write_text("x")   # an earlier report's figure, and files of the user
    written = study_figures(frames.runs, frames.grad_stats, frames.time_stats, frames.curves,
                            outdir, ("png",))
    # the pooled figure of an earlier report is gone; what vgbench did not write stays
    assert not (outdir / "time_grad.png").exists() and not (outdir / "time_grad.pdf").exists()
    assert (outdir / "notes.png").exists() and (outdir / "time_grad.csv").exists()
    names = {name for name, _, _ in written}
    assert {"time_grad_adding", "time_grad_copy", "loss_curves_adding", "loss_curves_copy"} <= names
    assert not any(name in names for name in ("time_grad", "loss_curves"))
    for name, caption, paths in written:
        task = name.rsplit("_", 1)[1]
        assert caption.endswith(f"({task} task)") and paths[0].name == f"{name}.png"
        assert paths[0].stat().st_size > 5000


def test_entries_of_several_axes_are_coloured_by_a_group_of_axes_when_no_single_one_fits():
    # 3 x 2 x 2 x 3 = 36 entries: no one axis leaves <= 6 combinations of the others for dashes
    entries = [f"{arch} / {norm} / {skip} / {act}" for arch in ("mlp_12", "mlp_56", "cnn_57")
               for norm in ("none", "batchnorm") for skip in ("none", "residual")
               for act in ("sigmoid", "tanh", "relu")]
    runs = pd.DataFrame({"entry": entries, "entry_order": range(36),
                         "entry_axes": "architecture / norm / skip / activation"})
    styles = entry_styles(runs)
    combos = {(styles.colors[e], styles.dashes[e]) for e in entries}
    assert len(combos) == 36                        # every entry drawn distinctly
    assert len(set(styles.colors.values())) == 9     # architecture x activation: most colours
    assert len(set(styles.dashes.values())) == 4     # norm x skip
    labels = [label for _, label in styles.legend]
    assert labels[0] == "architecture / activation:" and "norm / skip:" in labels
    assert len(labels) == 9 + 4 + 2

"""Every figure function draws what it should: lines, bands, markers, meshes (not pixels)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from fixtures_records import SMALL, record, recurrent_study, toy_study
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, QuadMesh

from vgbench.report import build_frames, with_runs
from vgbench.report import figures as fg
from vgbench.report.figure_files import study_figures
from vgbench.report.style import entry_styles
from vgbench.report.synthetic import figure_gallery, make_record


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


def test_grad_vs_layer_draws_the_geometric_mean_over_seeds_per_entry(toy):
    frames, grad = toy
    depth4 = grad[grad["frontier_value"] == 4]
    ax = fg.plot_grad_vs_layer(depth4)
    lines = lines_by_label(ax)
    assert set(lines) == {"relu", "sigmoid"}
    x, y = lines["sigmoid"].get_data()
    assert list(x) == [1, 2, 3, 4]
    at_init = depth4[(depth4["entry"] == "sigmoid") & (depth4["log_point"] == 0)]
    # the tables average log10 a over seeds: the figure's centre is the same mean of logs
    assert np.allclose(y, 10 ** np.log10(at_init["delta_norm"]).groupby(at_init["layer"]).mean())
    assert ax.get_yscale() == "log"
    bands = [c for c in ax.collections if c.get_label() == "_seed range"]
    assert len(bands) == 1 and len(bands[0].get_paths()) == 2    # a seed band per entry
    upper = bands[0].get_paths()[1].vertices[:, 1].max()
    assert upper == pytest.approx(at_init.groupby("layer")["delta_norm"].max().max())


def test_grad_vs_layer_marks_layers_whose_signal_underflowed(toy):
    _, grad = toy
    depth4 = grad[grad["frontier_value"] == 4].copy()
    seed0 = (depth4["entry"] == "sigmoid") & (depth4["seed"] == 0) & (depth4["log_point"] == 0)
    # a profile that decays through 1e-30 to exactly 0 at the input end: an underflow
    depth4.loc[seed0 & (depth4["layer"] == 1), "delta_norm"] = 1e-30
    depth4.loc[seed0 & (depth4["layer"] == 0), ["delta_norm", "delta_underflow"]] = [0.0, True]
    ax = fg.plot_grad_vs_layer(depth4)
    markers = [c for c in ax.collections if c.get_label() == "_underflow"]
    assert len(markers) == 1 and markers[0].get_offsets()[0][0] == 1
    assert not [c for c in ax.collections if c.get_label() == "_exact zero"]
    x, y = lines_by_label(ax)["sigmoid"].get_data()
    assert np.isnan(y[0]) and np.isfinite(y[1:]).all()   # no centre where a seed is 0


def test_an_exact_zero_from_a_zero_gain_is_not_drawn_as_underflow(toy):
    _, grad = toy
    depth4 = grad[grad["frontier_value"] == 4].copy()
    # SkipInit: every hidden layer's branch signal is exactly 0 in every seed, the output's
    # is healthy: no gradient reaches the branch, nothing vanished on the way
    hidden = (depth4["entry"] == "relu") & (depth4["layer"] < 3) & (depth4["log_point"] == 0)
    depth4.loc[hidden, ["delta_norm", "delta_underflow"]] = [0.0, True]
    ax = fg.plot_grad_vs_layer(depth4)
    assert not [c for c in ax.collections if c.get_label() == "_underflow"]
    zeros = [c for c in ax.collections if c.get_label() == "_exact zero"]
    assert len(zeros) == 1 and sorted(zeros[0].get_offsets()[:, 0]) == [1, 2, 3]
    underflow, exact = fg.zero_kinds(depth4, "delta_norm", "delta_underflow")
    assert exact.sum() == hidden.sum() and not underflow.any()


def test_grad_heatmap_is_a_depth_by_layer_image(toy):
    _, grad = toy
    ax = fg.plot_grad_heatmap(grad[grad["entry"] == "relu"])
    assert len(ax.images) == 1
    values = ax.images[0].get_array()
    assert values.shape == (2, 4)                     # depths 2 and 4, up to 4 layers
    assert values.mask[0, 2:].all() and not values.mask[1].any()   # depth 2 has 2 layers
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4"]
    # a cell per layer (1 to 4) and depth, the shallowest network at the top
    assert list(ax.images[0].get_extent()) == [0.5, 4.5, 2, 0] and ax.get_ylim() == (2, 0)


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
    first = run[run["layer"] == 0]
    first_layer = 10 ** np.log10(first["grad_norm"]).groupby(first["step"]).mean()   # geometric
    assert np.allclose(segments[0][:, 1], first_layer.to_numpy())


def test_weight_trajectories_show_change_from_initialisation(toy):
    _, grad = toy
    run = grad[(grad["entry"] == "relu") & (grad["frontier_value"] == 4)]
    ax = fg.plot_weight_trajectories(run, relative=False, colorbar=False)
    segments = next(c for c in ax.collections if isinstance(c, LineCollection)).get_segments()
    assert len(segments) == 4 * 4                     # layers x sample weights
    assert all(s[0, 1] == 0 for s in segments)
    ax2 = plt.figure().gca()
    deep = record(study="deep", depth=12, activation="relu")
    deep_grad = build_frames([deep]).grad_stats
    fg.plot_weight_trajectories(deep_grad, ax=ax2, relative=False, max_layers=5, colorbar=False)
    assert len(next(c for c in ax2.collections if isinstance(c, LineCollection)).get_segments()) == 20


def test_weight_trajectories_show_the_relative_change_of_each_layer(toy):
    _, grad = toy
    run = grad[(grad["entry"] == "relu") & (grad["frontier_value"] == 4)]
    ax = fg.plot_weight_trajectories(run, colorbar=False)
    segments = next(c for c in ax.collections if isinstance(c, LineCollection)).get_segments()
    assert len(segments) == 4 and ax.get_yscale() == "log"       # a line per layer
    columns = [f"weight_sample_{k}" for k in range(4)]
    layer2 = run[run["layer"] == 2].sort_values("step")
    expected = {}
    for seed, rows in layer2.groupby("seed"):
        w = rows[columns].to_numpy(float)
        change = np.sqrt(((w - w[0]) ** 2).mean(axis=1)) / np.sqrt((w[0] ** 2).mean())
        expected[seed] = change[1:]                   # the initial step (0) is left out
    assert np.allclose(segments[2][:, 0], np.sort(layer2["step"].unique())[1:])
    assert np.allclose(segments[2][:, 1], np.nanmean(np.array(list(expected.values())), axis=0))


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
    # two depths: grad_vs_layer shows them; a heatmap of two stripes would not
    assert names == ["grad_vs_layer", "loss_curves", "grad_over_steps",
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


# ---------------------------------------------------------------------------- readability
# Every figure kind, drawn from records shaped like the cases that once made figures
# unreadable (vgbench.report.synthetic.figure_gallery): long entry labels, one entry whose
# weights move 1000x more than the others', an exploding entry, an entry whose seeds all
# diverged, a heatmap over two depths, a log axis over less than one decade.

@pytest.fixture(scope="module")
def gallery():
    from vgbench.report import figure_files

    frames = build_frames(figure_gallery())
    drawn = {}

    def keep(fig, stem, formats=("png",)):
        drawn[f"{stem.parent.name}/{stem.name}"] = fig
        return []

    original = figure_files.save
    figure_files.save = keep
    try:
        for study in ("gallery_mlp", "gallery_rnn"):
            runs = frames.runs[frames.runs["study"] == study]
            parts = [f[f["study"] == study] for f in (frames.grad_stats, frames.time_stats,
                                                       frames.curves)]
            study_figures(runs, *parts, Path("/nonexistent") / study, ("png",))
    finally:
        figure_files.save = original
    for fig in drawn.values():
        FigureCanvasAgg(fig).draw()
    return frames, drawn


def panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and getattr(ax, "_colorbar", None) is None]


def drawn_ticks(axis):
    """The tick labels drawn on ``axis``: visible, non-empty and inside the view."""
    return [label for t in axis._update_ticks() for label in (t.label1, t.label2)
            if label.get_visible() and label.get_text().strip()]


def texts(fig):
    found = list(fig.texts)
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        found += list(legend.get_texts()) + [legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        found += list(ax.texts) + drawn_ticks(ax.xaxis) + drawn_ticks(ax.yaxis)
    return [t for t in found if t.get_visible() and t.get_text().strip()]


def finite_points(ax) -> np.ndarray:
    """The data points drawn in data coordinates (lines, line collections, meshes)."""
    points = [np.column_stack(line.get_data()).astype(float) for line in ax.get_lines()
              if line.get_transform() == ax.transData]
    for c in ax.collections:
        if isinstance(c, LineCollection):
            segments = [np.reshape(s, (-1, 2)) for s in c.get_segments()]
            points += [s for s in segments if np.isfinite(s).all(axis=1).sum() >= 2]
        elif isinstance(c, QuadMesh):
            values = np.ma.masked_invalid(c.get_array())
            points += [np.ones((int(values.count()), 2))]
    for image in ax.images:
        points += [np.ones((int(np.ma.masked_invalid(image.get_array()).count()), 2))]
    points = [p[np.isfinite(p).all(axis=1)] for p in points if len(p)]
    return np.concatenate(points) if points else np.zeros((0, 2))


def figure_names(gallery):
    return sorted(gallery[1])


GALLERY_NAMES = ["gallery_mlp/grad_vs_layer", "gallery_mlp/loss_curves",
                 "gallery_mlp/grad_over_steps", "gallery_mlp/weight_trajectories",
                 "gallery_mlp/frontier", "gallery_mlp/dead_saturation",
                 "gallery_rnn/loss_curves", "gallery_rnn/time_grad",
                 "gallery_rnn/loss_vs_baseline", "gallery_rnn/dead_saturation",
                 "gallery_rnn/weight_trajectories"]


def test_the_gallery_draws_every_figure_kind(gallery):
    _, drawn = gallery
    assert set(GALLERY_NAMES) <= set(drawn)
    assert "gallery_mlp/grad_heatmap" not in drawn     # two depths: stripes, not a heatmap
    kinds = {name.split("/")[1] for name in drawn}
    assert kinds >= {"grad_vs_layer", "loss_curves", "grad_over_steps", "weight_trajectories",
                     "time_grad", "loss_vs_baseline", "frontier", "dead_saturation"}


@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_no_two_texts_overlap(gallery, name):
    fig = gallery[1][name]
    renderer = fig.canvas.get_renderer()
    found = texts(fig)
    boxes = np.array([t.get_window_extent(renderer).extents for t in found])
    boxes += [1, 1, -1, -1]          # texts that only touch do not overlap
    for i in range(len(boxes)):
        hit = ((boxes[i, 0] < boxes[i + 1:, 2]) & (boxes[i + 1:, 0] < boxes[i, 2])
               & (boxes[i, 1] < boxes[i + 1:, 3]) & (boxes[i + 1:, 1] < boxes[i, 3]))
        clash = [found[i + 1 + j].get_text() for j in np.flatnonzero(hit)]
        assert not clash, f"{name}: {found[i].get_text()!r} overlaps {clash}"


@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_every_text_and_legend_lies_inside_the_figure(gallery, name):
    # figures are saved as laid out (no tight bounding box): what sticks out is cut off
    fig = gallery[1][name]
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    for artist in texts(fig) + fig.legends:
        x0, y0, x1, y1 = artist.get_window_extent(renderer).extents
        assert x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height, (
            f"{name}: {getattr(artist, 'get_text', lambda: 'the legend')()!r} lies at "
            f"{[round(v) for v in (x0, y0, x1, y1)]}, outside the figure's {width:.0f} x {height:.0f}")


def test_a_legend_taller_than_its_panel_grows_the_figure_downwards():
    from vgbench.report.figure_files import facets, fit_legends

    fig, axes = facets(1, panel=(2.0, 1.0), legend=0.2)     # far too little room
    for i in range(30):
        axes[0].plot([0, 1], [i, i], label=f"entry number {i}")
    fig.legend(loc="upper left", bbox_to_anchor=(axes[0].get_position().x1 + 0.01, 0.98))
    size = fig.get_size_inches().copy()

    def inches(ax):
        (x0, y0), (x1, y1) = ax.get_position().get_points() * fig.get_size_inches()
        return x0, y0, x1 - x0, y1 - y0

    x0, y0, w, h = inches(axes[0])
    top = size[1] - (y0 + h)
    fit_legends(fig)
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert legend.y0 >= 0 and legend.x1 <= fig.bbox.width
    assert legend.height > fig.bbox.height * 0.8                      # a tall legend, kept whole
    assert (fig.get_size_inches() > size).all()
    # the panel keeps its size and its place from the top left corner
    assert inches(axes[0])[0] == pytest.approx(x0) and inches(axes[0])[2:] == pytest.approx((w, h))
    assert fig.get_size_inches()[1] - sum(inches(axes[0])[1::2]) == pytest.approx(top)


@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_every_panel_has_data_or_says_why_not(gallery, name):
    for ax in panels(gallery[1][name]):
        notes = [t.get_text() for t in ax.texts if t.get_text().strip()]
        assert len(finite_points(ax)) or notes, f"{name}: panel {ax.get_title()!r} is empty"


@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_every_numeric_axis_shows_two_tick_labels(gallery, name):
    for ax in gallery[1][name].axes:
        if not ax.get_visible() or (ax in panels(gallery[1][name]) and not len(finite_points(ax))):
            continue
        colorbar = getattr(ax, "_colorbar", None)
        axes = [colorbar.long_axis] if colorbar is not None else [ax.xaxis, ax.yaxis]
        for axis in axes:
            shown = drawn_ticks(axis)
            siblings = (ax.get_shared_y_axes() if axis is ax.yaxis else ax.get_shared_x_axes())
            if not shown and len(siblings.get_siblings(ax)) > 1:
                continue                 # labelled on a neighbouring panel of the same scale
            assert len(shown) >= 2, (f"{name}: panel {ax.get_title()!r} shows "
                                     f"{[t.get_text() for t in shown]} on its {axis.axis_name} axis")


@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_panels_of_very_different_size_do_not_share_a_linear_y_axis(gallery, name):
    seen = set()
    for ax in panels(gallery[1][name]):
        group = [a for a in ax.get_shared_y_axes().get_siblings(ax) if a.get_visible()]
        if len(group) < 2 or ax.get_yscale() != "linear" or id(ax) in seen:
            continue
        seen |= {id(a) for a in group}
        sizes = [np.abs(finite_points(a)[:, 1]).max() for a in group if len(finite_points(a))]
        sizes = [s for s in sizes if s > 0]
        assert not sizes or max(sizes) <= 10 * min(sizes), f"{name}: shared y over {sizes}"


def test_one_exploding_entry_does_not_set_the_heatmap_colour_scale():
    # four depths, so a heatmap; relu / residual explodes by 12 decades at the input end
    records = [make_record(study="heat", grid_axes={"depth": d, "activation": a, "skip": k},
                           depth=d, activation=a, skip=k, seeds=(0, 1),
                           signal_boost=12.0 if (a, k) == ("relu", "residual") else 0.0, **SMALL)
               for d in (4, 8, 16, 32) for a in ("relu", "tanh", "sigmoid")
               for k in ("none", "residual")]
    frames = build_frames(records)
    grad = with_runs(frames.grad_stats, frames.runs)
    from vgbench.report.figure_files import grad_heatmap_figure

    fig = grad_heatmap_figure(grad)
    meshes = {ax.get_title().replace("\n", " "): ax.images[0]
              for ax in fig.axes if ax.get_title()}
    low, high = next(iter(meshes.values())).norm.vmin, next(iter(meshes.values())).norm.vmax
    at_init = grad[grad["log_point"] == 0]
    logs = np.log10(at_init.groupby(["entry", "frontier_value", "layer"])["delta_norm"].median())
    # sigmoid / none loses 14 decades over 32 layers, relu / residual gains 12: the scale
    # spans the other four entries and marks those two as beyond it
    calm = logs.drop(["relu / residual", "sigmoid / none"], level="entry")
    assert logs.max() > 10 and logs.min() < -10 and 0 < high - low < 5
    assert high >= calm.max() - 1e-9 and low <= calm.min() + 1e-9
    assert (meshes["relu / residual"].get_array().compressed() > high).any()
    assert (meshes["sigmoid / none"].get_array().compressed() < low).any()
    cmap = meshes["relu / residual"].get_cmap()          # clipped cells in their own colours
    assert tuple(cmap.get_over()) != tuple(cmap(1.0)) and tuple(cmap.get_under()) != tuple(cmap(0.0))
    colorbar = next(ax for ax in fig.axes if getattr(ax, "_colorbar", None))._colorbar
    assert colorbar.extend == "both"


def test_robust_limits_ignore_one_outlying_group():
    calm = [np.linspace(-1, 1, 20) + 0.1 * i for i in range(11)]
    low, high = fg.robust_limits(calm + [np.linspace(0, 12, 20)])
    assert low == pytest.approx(-1.0) and 2.0 <= high < 3.0      # the 12 is beyond the fence
    assert fg.robust_limits(calm) == pytest.approx((-1.0, 2.0))   # nothing to clip: the range
    assert fg.robust_limits([np.array([0.5, 0.6])]) == pytest.approx((0.05, 1.05))  # >= 1 decade


def test_a_log_axis_over_less_than_a_decade_gets_round_ticks():
    ticks = fg._LogTicks().tick_values(0.6, 1.6)
    shown = [t for t in ticks if 0.6 <= t <= 1.6]
    assert len(shown) >= 2 and all(t > 0 for t in ticks)
    assert [fg._decade(t) for t in shown][:2] in (["0.6", "0.8"], ["0.75", "1"], ["1", "1.5"],
                                                   ["0.8", "1"])
    assert list(fg._LogTicks().tick_values(1e-6, 1e2)) == [1e-8, 1e-6, 1e-4, 1e-2, 1, 1e2, 1e4]


def test_locators_return_only_the_ticks_in_view():
    # ticks beyond the view are never drawn, but matplotlib would make and lay out each one
    fig = plt.figure()
    ax = fig.gca()
    ax.plot([1, 97], [3e-7, 20])
    fg._log_y(ax)
    fg._few_ticks(ax)
    ax.set_xlim(1, 97)
    ax.set_ylim(3e-7, 20)
    assert list(ax.yaxis.get_major_locator()()) == [1e-6, 1e-4, 1e-2, 1]
    assert list(ax.xaxis.get_major_locator()()) == [25, 50, 75]
    assert list(fg._LogTicks().tick_values(3e-7, 20))[0] < 3e-7      # tick_values as before
    ax.set_ylim(0.6, 1.6)
    assert list(ax.yaxis.get_major_locator()()) == pytest.approx([0.6, 0.8, 1.0, 1.2, 1.4, 1.6])
    empty = fg._LogTicks()                     # an empty panel keeping its row's log axis
    empty.create_dummy_axis()
    empty.axis.set_view_interval(-0.055, 0.055)
    assert list(empty()) == []


def test_an_entry_whose_seeds_all_diverged_says_so(gallery):
    ax = next(a for a in gallery[1]["gallery_mlp/weight_trajectories"].axes
              if a.get_title().replace("\n", " ") == "none / residual / sigmoid / xavier_normal")
    assert " ".join(t.get_text() for t in ax.texts).replace("\n", " ") == (
        "all 3 seeds diverged at step 10, nothing logged after")


def test_unit_fractions_are_dead_inactive_and_tail_saturated(gallery):
    frames, drawn = gallery
    fig = drawn["gallery_mlp/dead_saturation"]
    titles = [ax.get_title().replace("\n", " ") for ax in panels(fig)]
    assert titles == ["dead: output 0 on every example", "inactive: rectifier off",
                      "tail-saturated: sigmoid/tanh flat"]
    inactive = lines_by_label(panels(fig)[1])
    runs = frames.runs[frames.runs["study"] == "gallery_mlp"]
    relu = runs[runs["ok"] & (runs["entry"] == "none / none / relu / he_normal")]
    assert np.allclose(inactive["none / none / relu / he_normal"].get_ydata(),
                       relu.groupby("frontier_value")["inactive_fraction_final"].mean())
    assert 0.4 < relu["inactive_fraction_final"].min() and relu["tail_saturation_final"].max() == 0
    # records older than the split hold only the mixed flat fraction: that is what is drawn
    old = runs.drop(columns=["inactive_fraction_final", "tail_saturation_final"])
    fig = figure_files_module().dead_saturation_figure(old, entry_styles(old))
    assert [ax.get_title() for ax in panels(fig)][1] == "flat: φ′ < 1 % of its max"


def figure_files_module():
    from vgbench.report import figure_files

    return figure_files

"""Each figure kind is drawn only for the study shapes it serves, and says what it draws:
legends of drawn things only, its own scale where magnitudes differ by orders, titles that
read, the tables' statistic, a resolution fit for a page."""

from pathlib import Path

import numpy as np
import pytest
from fixtures_records import SMALL, record, toy_study
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vgbench.report import build_frames, with_runs
from vgbench.report import figure_files as ff
from vgbench.report import figures as fg
from vgbench.report.leaderboard import by_setting, leaderboard
from vgbench.report.synthetic import make_record
from vgbench.report.tables import LATEX, comparison_table


def drawn_figures(records, study, monkeypatch=None):
    """{figure name: Figure} of ``study_figures`` over ``records``, and the skipped kinds."""
    frames = build_frames(records)
    drawn, skipped = {}, []

    def keep(fig, stem, formats=("png",)):
        drawn[stem.name] = fig
        return []

    original = ff.save
    ff.save = keep
    try:
        runs = frames.runs[frames.runs["study"] == study]
        parts = [f[f["study"] == study] for f in (frames.grad_stats, frames.time_stats,
                                                   frames.curves)]
        ff.study_figures(runs, *parts, Path("/nonexistent"), ("png",), skipped=skipped)
    finally:
        ff.save = original
    for fig in drawn.values():
        FigureCanvasAgg(fig).draw()
    return frames, drawn, dict(skipped)


def one_depth_each():
    """relu ran only at depth 2 and sigmoid only at depth 4 (an architecture that fixes its
    depth, as ``mlp_12`` and ``mlp_56`` do)."""
    return [r for r in toy_study() if (r["config"]["depth"], r["config"]["activation"])
            in ((2, "relu"), (4, "sigmoid"))]


def test_a_kind_that_needs_two_values_per_entry_is_skipped_where_each_entry_ran_one():
    _, drawn, skipped = drawn_figures(one_depth_each(), "toy")
    assert "frontier" in skipped and "dead_saturation" in skipped
    assert "each entry ran one depth" in skipped["frontier"]
    assert "frontier" not in drawn and "dead_saturation" not in drawn
    assert "outcomes" in drawn            # the kind that serves this shape: a dot per entry
    # a swept study gets the lines, and the dot plot is the one skipped
    _, drawn, skipped = drawn_figures(toy_study(), "toy")
    assert {"frontier", "dead_saturation"} <= set(drawn) and "outcomes" in skipped


def test_every_kind_declares_the_shape_it_serves():
    assert set(ff.KINDS) <= set(ff.CAPTIONS)
    assert all(kind.serves for kind in ff.KINDS.values())


def legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_a_legend_lists_only_entries_some_panel_drew():
    # every seed of sigmoid diverged before its first log point after initialisation
    records = [make_record(study="lost", grid_axes={"depth": d, "activation": a},
                           diverge={0: 1, 1: 1, 2: 1} if a == "sigmoid" else None,
                           depth=d, activation=a, **SMALL)
               for d in (2, 4) for a in ("relu", "sigmoid")]
    _, drawn, _ = drawn_figures(records, "lost")
    fig = drawn["loss_curves"]
    drawn_entries = ff.drawn_labels(fig.axes)
    labels = legend_labels(fig)
    assert "relu" in labels and "relu" in drawn_entries
    assert "sigmoid" not in labels       # no artist: not an entry of the legend ...
    assert any(t.startswith("sigmoid: not drawn, all 6 seeds diverged") for t in labels)  # ... said why
    for name, fig in drawn.items():
        shown = set(legend_labels(fig))
        entries = {"relu", "sigmoid"} & shown
        assert entries <= ff.drawn_labels(fig.axes), f"{name}: legend without an artist"


def test_panels_whose_magnitudes_differ_by_orders_get_their_own_scale():
    # sigmoid / naive loses about 0.6 decades a layer: 13 decades at depth 24, 1 at depth 2
    def study(depths):
        return [make_record(study="deep", grid_axes={"depth": d, "activation": "sigmoid",
                                                     "init": "naive"},
                            depth=d, activation="sigmoid", init="naive", **SMALL)
                for d in depths]

    def shared(records):
        frames = build_frames(records)
        grad = with_runs(frames.grad_stats, frames.runs)
        fig = ff.faceted_figure(grad, ff.entry_styles(frames.runs), fg.plot_grad_vs_layer,
                                runs=frames.runs, value="delta_norm")
        axes = [ax for ax in fig.axes if ax.get_visible()]
        spans = [np.log10(ax.get_ylim()[1] / ax.get_ylim()[0]) for ax in axes]
        return len(axes[0].get_shared_y_axes().get_siblings(axes[0])) > 1, spans

    together, spans = shared(study((2, 24)))
    assert not together and max(spans) > 10 and min(spans) < 3
    together, _ = shared(study((2, 3)))
    assert together                  # comparable magnitudes: one scale to compare them on


def test_no_panel_has_an_empty_or_dangling_title():
    # one sequence length: no frontier axis to name the panels by
    records = [make_record(study="short", grid_axes={"cell": c}, model="rnn", task="adding",
                           seq_len=10, cell=c, **SMALL) for c in ("rnn", "lstm")]
    _, drawn, _ = drawn_figures(records, "short")
    titles = [ax.get_title() for ax in drawn["time_grad"].axes if ax.get_visible()]
    assert titles == ["at initialisation", "end of training"]
    for name, fig in drawn.items():
        for ax in fig.axes:
            if ax.get_visible() and getattr(ax, "_colorbar", None) is None:
                title = ax.get_title().strip()
                assert title and title[0] not in ",;:", f"{name}: title {title!r}"


def test_the_figure_and_the_table_report_the_same_centre():
    # toy: relu at depth 4 has seeds 0.91, (diverged), 0.93: the tables' 0.92, not a median
    frames = build_frames(one_depth_each())
    runs = frames.runs
    settings = by_setting(runs)
    board = leaderboard(runs, settings=settings)
    fig = Figure()
    ax = fig.subplots()
    fg.plot_outcomes(runs.sort_values(["frontier_value", "entry_order"]), ax=ax,
                     value="final_test_accuracy")
    dots = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()
            if not line.get_label().startswith("_")}
    for entry, dot in dots.items():
        row = board[board["entry"] == entry].iloc[0]
        assert dot == pytest.approx(row["mean"])
        assert f"{row['mean']:.3f}" in " ".join(" ".join(r) for r in
                                                comparison_table(board, LATEX).rows)
    # the line of a swept study's unit-fraction figure: the mean of the seeds that finished
    frames = build_frames(toy_study())
    runs = frames.runs
    ax = Figure().subplots()
    fg.plot_dead_saturation(runs, ax=ax, value="dead_fraction_final")
    relu = runs[(runs["entry"] == "relu") & runs["ok"]]
    line = next(line for line in ax.get_lines() if line.get_label() == "relu")
    assert np.allclose(line.get_ydata(), relu.groupby("frontier_value")["dead_fraction_final"].mean())


def test_pngs_are_fit_for_a_page(tmp_path):
    with ff.style():
        fig, axes = ff.facets(1, panel=(2.2, 1.8))
        axes[0].plot([0, 1], [0, 1])
        path = ff.save(fig, tmp_path / "one", ("png",))[0]
    from PIL import Image

    image = Image.open(path)
    assert image.info["dpi"][0] >= 150 and image.size[0] >= 1000


def test_a_recurrent_cell_and_its_output_are_named_in_a_legend_not_on_a_colour_scale():
    records = [make_record(study="mem", grid_axes={"seq_len": t, "cell": "rnn"}, model="rnn",
                           task="adding", seq_len=t, cell="rnn", **SMALL) for t in (5, 20)]
    _, drawn, _ = drawn_figures(records, "mem")
    fig = drawn["grad_over_steps"]
    assert not [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert any(t.startswith("layer 1") for t in legend_labels(fig))


def test_a_layer_whose_weights_start_at_zero_is_drawn_as_an_absolute_change():
    frames = build_frames([record(depth=3, activation="relu")])
    grad = frames.grad_stats.copy()
    first = grad["layer"] == 0
    columns = [f"weight_sample_{k}" for k in range(4)]
    start = grad.loc[first & (grad["log_point"] == 0), ["seed"] + columns].set_index("seed")
    # an identity init off the diagonal: the samples start at 0 and move by what they moved
    for seed, row in start.iterrows():
        rows = first & (grad["seed"] == seed)
        grad.loc[rows, columns] = grad.loc[rows, columns].to_numpy() - row.to_numpy()
    ax = Figure().subplots()
    fg.plot_weight_trajectories(grad, ax=ax, colorbar=False)
    segments = ax.collections[0].get_segments()
    assert np.isfinite(segments[0][:, 1]).any()      # drawn, not dropped
    assert ax.collections[0].get_linestyles()[0][1] is not None   # dashed
    assert any("absolute change" in line.get_label() for line in ax.get_lines())


def test_records_without_unit_fractions_get_no_unit_fraction_figure():
    # a model that does not measure its units (a Flax plugin): no "no seed finished" panels
    missing = {k: [None] * 3 for k in ("dead_fraction_final", "saturation_final",
                                       "tail_saturation_final", "inactive_fraction_final")}
    records = [record(study="plain", depth=d, activation=a, summary=missing)
               for d in (2, 4) for a in ("relu", "tanh")]
    _, drawn, skipped = drawn_figures(records, "plain")
    assert skipped["dead_saturation"] == "no unit fractions in these records"
    assert "frontier" in drawn


def test_a_study_where_no_seed_reached_the_target_gets_no_frontier_lines_at_zero():
    records = [record(study="hard", depth=d, activation=a, steps_to_target=[None] * 3)
               for d in (2, 4) for a in ("relu", "tanh")]
    _, drawn, skipped = drawn_figures(records, "hard")
    assert "frontier" not in drawn and "no seed reached the target" in skipped["frontier"]


def test_the_sensitivity_legend_names_lost_seeds_only_where_some_were_lost(tmp_path):
    from vgbench.report.sensitivity import sensitivity_figures

    def legend(records):
        frames = build_frames(records)
        runs = frames.runs.assign(tuned_axes="lr", lr_grid="{0.01, 0.1}")
        with ff.style():
            drawn = {}
            original = ff.save
            ff.save = lambda fig, stem, formats=("png",): drawn.setdefault(stem.name, fig) and []
            try:
                sensitivity_figures(runs, set(runs["run_id"]), tmp_path, ("png",))
            finally:
                ff.save = original
        return [t for fig in drawn.values() for t in legend_labels(fig)]

    clean = [record(study="t", depth=2, activation="relu", lr=lr, grid_axes={"depth": 2,
                    "activation": "relu", "lr": lr}) for lr in (0.01, 0.1)]
    lost = clean[:1] + [record(study="t", depth=2, activation="relu", lr=0.1,
                               status=["diverged"] * 3,
                               grid_axes={"depth": 2, "activation": "relu", "lr": 0.1})]
    shown = legend(clean)
    assert "chosen" in shown and "diverged / failed" not in shown
    assert "diverged / failed" in legend(lost)

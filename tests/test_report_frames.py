"""Records -> tidy frames: shapes, values, and records that must be reported, not crash."""

import json
import math

import numpy as np
import pytest
from fixtures_records import SMALL, record, recurrent_study, toy_study, write_results

from vgbench.report import build_frames, load_frames, load_records, with_runs
from vgbench.report.frames import study_design
from vgbench.report.synthetic import make_record


def test_corrupt_and_old_schema_files_are_reported_and_skipped(tmp_path):
    results = write_results(tmp_path, toy_study(), corrupt=True)
    records, problems = load_records(results)
    assert len(records) == 4
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in problems}
    assert set(reasons) == {"broken.json", "old.json"}
    assert "JSON" in reasons["broken.json"]
    assert "vgbench.run/0" in reasons["old.json"]
    frames = load_frames(results)
    assert len(frames.problems) == 2 and len(frames.runs) == 12


def test_records_read_as_the_standard_json_library_reads_them(tmp_path):
    from vgbench.report.records import read_record

    rec = record(depth=2)
    rec["metrics"]["final_test_loss"][0] = float("nan")    # not strict JSON, but readable
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(rec))
    loaded, problem = read_record(path)
    assert problem is None and math.isnan(loaded["metrics"]["final_test_loss"][0])
    rec["metrics"]["final_test_loss"][0] = 0.25
    path.write_text(json.dumps(rec, separators=(",", ":")))
    loaded, _ = read_record(path)
    assert loaded == {**json.loads(path.read_text()), "_source": str(path)}
    path.write_text(json.dumps(rec)[:-40])                 # cut short
    assert read_record(path)[0] is None and "not readable as JSON" in read_record(path)[1].reason


def test_parallel_loading_gives_the_same_frames(tmp_path):
    results = write_results(tmp_path, toy_study() + recurrent_study(), corrupt=True)
    serial, parallel = load_frames(results), load_frames(results, workers=2)
    assert [str(p) for p in serial.problems] == [str(p) for p in parallel.problems]
    for name in ("runs", "grad_stats", "time_stats", "curves"):
        a, b = getattr(serial, name), getattr(parallel, name)
        assert a.shape == b.shape
        assert a.astype(str).equals(b.astype(str)), name


def test_runs_frame_one_row_per_run_and_seed_with_statuses():
    frames = build_frames(toy_study())
    runs = frames.runs
    assert len(runs) == 12 and not frames.problems
    assert {"study", "run_id", "seed", "status", "entry", "frontier_value", "metric", "reached",
            "steps_to_target", "log10_attenuation_init", "decay_per_layer", "env_backend",
            "grid_hash", "depth", "activation"} <= set(runs.columns)
    relu4 = runs[(runs["entry"] == "relu") & (runs["frontier_value"] == 4)].sort_values("seed")
    assert relu4["status"].tolist() == ["ok", "diverged", "ok"]
    assert relu4["reached"].tolist() == [True, False, True]
    assert relu4["metric"].iloc[0] == pytest.approx(0.91) and math.isnan(relu4["metric"].iloc[1])
    assert set(runs["frontier_axis"]) == {"depth"}
    assert set(runs["entry_axes"]) == {"activation"}


def test_grad_stats_rows_and_values_match_the_record():
    rec = record(depth=3, activation="tanh")
    frames = build_frames([rec])
    grad = frames.grad_stats
    n_seed, n_point = len(rec["seeds"]), len(rec["diagnostics"]["steps"])
    n_layer = len(rec["diagnostics"]["layer_names"])
    assert len(grad) == n_seed * n_point * n_layer
    row = grad[(grad["seed"] == 2) & (grad["log_point"] == 3) & (grad["layer"] == 1)].iloc[0]
    assert row["delta_norm"] == pytest.approx(rec["diagnostics"]["delta_norm"][2][3][1])
    assert row["weight_sample_2"] == pytest.approx(rec["diagnostics"]["weight_samples"][2][3][1][2])
    assert row["step"] == rec["diagnostics"]["steps"][3]
    assert row["layer_name"] == rec["diagnostics"]["layer_names"][1]
    assert grad["delta_underflow"].dtype == bool
    curves = frames.curves
    assert len(curves) == n_seed * n_point
    assert curves["loss"].iloc[-1] == pytest.approx(rec["diagnostics"]["loss"][-1][-1])


def test_time_stats_keep_initialisation_and_end_for_recurrent_runs():
    records = recurrent_study(seq_lens=(6,), cells=("rnn",))
    frames = build_frames(records)
    time = frames.time_stats
    n_point = len(records[0]["diagnostics"]["steps"])
    assert sorted(time["log_point"].unique()) == [0, n_point - 1]
    assert len(time) == 2 * 2 * 6      # seeds x (first, last) x time steps
    first = time[(time["seed"] == 1) & (time["log_point"] == 0)].sort_values("t")
    assert np.allclose(first["time_delta_norm"], records[0]["diagnostics"]["time_delta_norm"][1][0])
    assert set(frames.runs["frontier_axis"]) == {"seq_len"}


def test_underflowed_signal_reads_as_infinite_attenuation():
    rec = record(depth=3, activation="sigmoid")
    rec["summary"]["log10_attenuation_init"][0] = None
    rec["diagnostics"]["delta_underflow"][0][0][0] = True
    rec["summary"]["log10_attenuation_final"][1] = None     # no underflow flag: unknown
    runs = build_frames([rec]).runs.set_index("seed")
    assert runs.loc[0, "log10_attenuation_init"] == -math.inf
    assert math.isnan(runs.loc[1, "log10_attenuation_final"])


def test_record_of_a_failed_run_counts_its_seeds_as_failed():
    failed = make_record(study="toy", grid_axes={"depth": 4, "activation": "tanh"}, depth=4,
                         activation="tanh", **SMALL)
    failed.update(status=["failed"] * 3, target=None, metrics={}, diagnostics={}, summary={},
                  timing={}, error=["out of memory"] * 3, diverged_at_step=[None] * 3)
    frames = build_frames(toy_study() + [json.loads(json.dumps(failed))])
    assert not frames.problems
    tanh = frames.runs[frames.runs["entry"] == "tanh"]
    assert tanh["status"].tolist() == ["failed"] * 3
    # the target comes from the study's other records of the same task
    assert set(tanh["target_metric"]) == {"test_accuracy"} and tanh["higher_is_better"].all()
    assert not (frames.grad_stats["run_id"] == failed["run_id"]).any()


def test_malformed_arrays_are_reported_not_raised():
    good, bad = toy_study()[:2]
    bad["diagnostics"]["delta_norm"][0] = [[1.0, 2.0]]      # wrong shape for seed 0
    frames = build_frames([good, bad])
    assert len(frames.problems) == 1 and "delta_norm" in frames.problems[0].reason
    assert set(frames.runs["run_id"]) == {good["run_id"]}


def test_adhoc_runs_take_their_axes_from_the_config_fields_that_differ():
    records = [make_record(study="adhoc", grid_axes={}, depth=d, lr=lr, **SMALL)
               for d in (2, 5) for lr in (0.1, 0.01)]
    design = study_design(records)
    assert design.frontier_axis == "depth" and design.entry_axes == ("lr",)
    runs = build_frames(records).runs
    assert sorted(runs["entry"].unique()) == ["0.01", "0.1"]


def test_with_runs_joins_the_entry_columns():
    frames = build_frames(toy_study())
    grad = with_runs(frames.grad_stats, frames.runs)
    assert len(grad) == len(frames.grad_stats)
    assert {"entry", "frontier_value", "entry_order"} <= set(grad.columns)
    assert grad["entry"].notna().all()


def test_a_labelled_zipped_axis_names_the_fields_it_sets():
    # architecture = [{depth = 2, width = 8, label = "small"}, {depth = 4, width = 16, label = "big"}]
    # crossed with norm: width is the label's, norm is its own axis
    records = [make_record(study="zip", seeds=(0,), depth=d, width=w, norm=n, steps=100,
                           log_every=25, grid_axes={"depth": d, "width": w, "architecture": label,
                                                    "norm": n})
               for d, w, label in ((2, 8, "small"), (4, 16, "big")) for n in ("none", "batchnorm")]
    design = study_design(records)
    assert design.frontier_axis == "depth" and design.entry_axes == ("architecture", "norm")
    runs = build_frames(records).runs
    assert sorted(runs["entry"].unique()) == ["big / batchnorm", "big / none", "small / batchnorm",
                                              "small / none"]
    assert set(runs["width"]) == {8, 16}       # the fields are still columns of the runs


def test_a_label_shared_by_several_points_keeps_their_fields():
    # activation_init = [{tanh, naive, label "naive"}, {tanh, xavier, "matched"}, {relu, he, "matched"}]
    points = (("tanh", "naive", "naive"), ("tanh", "xavier_normal", "matched"),
              ("relu", "he_normal", "matched"))
    records = [make_record(study="zip", seeds=(0,), activation=a, init=i, **SMALL,
                           grid_axes={"activation": a, "init": i, "activation_init": label})
               for a, i, label in points]
    assert study_design(records).entry_axes == ("activation", "init", "activation_init")

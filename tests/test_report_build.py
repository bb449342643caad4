"""build_report end to end, its index, and the promise that the reporter never imports JAX."""

import subprocess
import sys

import pandas as pd
import pytest
from fixtures_records import record, recurrent_study, toy_study, write_results

from vgbench.report import build_report
from vgbench.report.captions import LOOK_AT, figure_kind
from vgbench.report.index import Output, index_text
from vgbench.report.synthetic import write_records


def test_build_report_writes_frames_leaderboards_tables_figures_and_index(tmp_path):
    results = write_results(tmp_path, toy_study() + recurrent_study(), corrupt=True)
    paths = build_report(results, formats=("png",), workers=1)
    assert all(p.exists() for p in paths)
    for name in ("runs.csv", "grad_stats.csv", "time_stats.csv", "curves.csv", "README.md",
                 "leaderboards/toy.csv", "leaderboards/toy_by_depth.csv",
                 "leaderboards/memory.csv", "leaderboards/memory_by_seq_len.csv",
                 "tables/toy.tex", "tables/toy.md", "tables/memory.tex", "tables/memory.md",
                 "tables/all.tex",
                 "figures/toy/grad_vs_layer.png", "figures/memory/time_grad.png"):
        assert (results / name).exists(), name
    runs = pd.read_csv(results / "runs.csv")
    assert len(runs) == 4 * 3 + 4 * 2
    assert sorted(runs["status"].unique()) == ["diverged", "failed", "ok"]
    board = pd.read_csv(results / "leaderboards" / "toy.csv")
    assert board["entry"].tolist() == ["relu", "sigmoid"]
    assert board.loc[0, "success"] == "2/3" and board.loc[0, "n_diverged"] == 1

    index = (results / "README.md").read_text()
    figures = [p for p in paths if p.suffix == ".png"]
    for path in figures + [results / "tables" / "toy.tex", results / "leaderboards" / "toy.csv"]:
        assert f"({path.relative_to(results).as_posix()})" in index
    # every figure inline, with its caption and what to look at in it
    assert index.count("![") == len(figures)
    for path in figures:
        at = index.index(f"![{path.stem}]({path.relative_to(results).as_posix()})")
        kind = figure_kind(path.stem)
        assert LOOK_AT[kind] in index[at:at + 1500], path.stem
    assert "runs/broken.json" in index and "vgbench.run/0" in index


def test_the_index_links_the_guide_when_it_sits_beside_the_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    figure = Output("figure", "toy", "time_grad_copy", "‖∂L/∂h_t‖ against t (copy task)",
                    (results / "figures" / "toy" / "time_grad_copy.png",))
    text = index_text([figure], [], results, 1)
    assert "vanishing-gradients.md" not in text
    assert f"‖∂L/∂h_t‖ against t (copy task). {LOOK_AT['time_grad']}" in text
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "vanishing-gradients.md").write_text("# guide")
    text = index_text([figure], [], results, 1)
    assert "(../docs/vanishing-gradients.md)" in text


def test_parallel_build_writes_the_same_files(tmp_path):
    serial = write_results(tmp_path / "a", toy_study())
    parallel = write_results(tmp_path / "b", toy_study())
    build_report(serial, formats=("png",), workers=1)
    build_report(parallel, formats=("png",), workers=2)
    for name in ("runs.csv", "grad_stats.csv", "leaderboards/toy.csv", "tables/toy.tex"):
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name


def test_large_csv_is_written_in_parts_and_joined_in_order(tmp_path, monkeypatch):
    from vgbench.report import build

    whole = write_results(tmp_path / "whole", toy_study())
    build_report(whole, formats=(), workers=1)
    monkeypatch.setattr(build, "CSV_CHUNK_ROWS", 50)
    parts = write_results(tmp_path / "parts", toy_study())
    build_report(parts, formats=(), workers=2)
    text = (parts / "grad_stats.csv").read_bytes()
    assert text == (whole / "grad_stats.csv").read_bytes()
    assert len(pd.read_csv(parts / "grad_stats.csv")) == sum(3 * 5 * d for d in (2, 4, 2, 4))
    assert not list(parts.glob(".grad_stats.csv.part*"))


def test_csv_files_are_written_as_pandas_writes_them(tmp_path):
    import numpy as np

    from vgbench.report import build_frames
    from vgbench.report.build import write_csv

    frames = build_frames(toy_study() + recurrent_study())
    grad = frames.grad_stats.copy()
    grad.loc[3, "grad_norm"], grad.loc[4, "grad_norm"] = np.inf, -np.inf
    grad.loc[6, "update_ratio"] = np.nan
    grad["layer_name"] = grad["layer_name"].cat.rename_categories(
        lambda name: f'{name}, "quoted"' if name == "dense_1" else name)
    grad.loc[5, "layer_name"] = None                        # a missing category
    cases = {"grad_stats": grad, "curves": frames.curves, "time_stats": frames.time_stats,
             "runs": frames.runs, "empty": grad.iloc[:0]}   # runs: text columns, via pandas
    assert grad["update_ratio"].isna().any() and (grad["delta_underflow"].dtype == bool)
    for name, frame in cases.items():
        for header in (True, False):
            ours, theirs = tmp_path / f"{name}.csv", tmp_path / f"{name}_pandas.csv"
            write_csv(frame, ours, header=header)
            frame.to_csv(theirs, index=False, header=header)
            assert ours.read_bytes() == theirs.read_bytes(), (name, header)
    assert '"dense_1, ""quoted"""' in (tmp_path / "grad_stats.csv").read_text()


def test_studies_filter_and_empty_results(tmp_path):
    results = write_results(tmp_path, toy_study() + recurrent_study())
    build_report(results, studies=["memory"], formats=("png",), workers=1)
    assert (results / "tables" / "memory.md").exists()
    assert not (results / "tables" / "toy.md").exists()
    empty = tmp_path / "empty"
    paths = build_report(empty, formats=("png",), workers=1)
    assert (empty / "README.md") in paths and (empty / "runs.csv").exists()


def test_importing_the_reporter_does_not_import_jax():
    code = ("import sys; import vgbench.report, vgbench.report.figure_files, "
            "vgbench.report.build, vgbench.report.synthetic; "
            "bad = sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax', 'optax'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_grid_files_baseline_travels_with_the_records(tmp_path):
    records = toy_study()
    for rec in records:
        rec["study_baseline"] = {"activation": "sigmoid"}
    results = write_results(tmp_path, records)
    build_report(results, formats=(), workers=1)
    board = pd.read_csv(results / "leaderboards" / "toy.csv").set_index("entry")
    assert board.loc["sigmoid", "baseline"] and not board.loc["relu", "baseline"]
    assert board.loc["relu", "p_improve"] == pytest.approx(2 / 3)
    build_report(results, formats=(), workers=1, baselines={"toy": "relu"})
    board = pd.read_csv(results / "leaderboards" / "toy.csv").set_index("entry")
    assert board.loc["relu", "baseline"]
    with pytest.raises(ValueError, match="unknown studies"):
        build_report(results, formats=(), workers=1, baselines={"nope": "relu"})


def test_a_record_shared_by_two_studies_counts_in_both(tmp_path):
    """One config in two grids runs once; both studies' manifests list it, both report it."""
    import json as _json

    from vgbench.report.frames import load_frames
    from vgbench.report.records import load_records

    write_records(tmp_path, [record(study="alpha", grid_axes={"depth": 2}, depth=2)])
    rec = _json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    studies = tmp_path / "studies"
    studies.mkdir()
    for name, axes in (("alpha", {"depth": 2}), ("beta", {"depth": 2, "extra": "x"})):
        (studies / f"{name}.json").write_text(_json.dumps({
            "schema": "vgbench.study/1", "name": name, "grid_hash": name * 2, "baseline": None,
            "runs": [{"run_id": rec["run_id"], "grid_axes": axes}]}))
    records, problems = load_records(tmp_path)
    assert sorted(r["study"] for r in records) == ["alpha", "beta"] and not problems
    assert {r["study"]: r["grid_hash"] for r in records} == {"alpha": "alphaalpha", "beta": "betabeta"}
    runs = load_frames(tmp_path).runs
    assert sorted(runs["study"].astype(str).unique()) == ["alpha", "beta"]



def test_the_report_modules_import_each_other_without_a_cycle():
    # every import between vgbench/report modules, at module level or inside a function
    import ast
    from pathlib import Path

    import vgbench.report as package

    folder = Path(package.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vgbench.report"):
                parts = node.module.split(".")
                deps |= {a.name for a in node.names} if len(parts) == 2 else {parts[2]}
        graph[name] = (deps & modules) - {name}
    assert graph["figure_files"] and "build" not in graph["figure_files"]

    def reaches(start, target, seen):
        return any(d == target or (d not in seen and reaches(d, target, seen | {d}))
                   for d in graph[start])

    assert [name for name in sorted(modules) if reaches(name, name, {name})] == []

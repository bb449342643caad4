"""``build_report``: records -> frames -> leaderboards, tables, figures and an index."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from vgbench.report.frames import Frames, build_frames
from vgbench.report.index import Output, write_index
from vgbench.report.leaderboard import by_setting, leaderboard
from vgbench.report.records import load_records
from vgbench.report.tables import latex_table, markdown_table

FRAME_FILES = {
    "runs": ("runs.csv", "one row per run × seed: axes, status, final metrics, summary, provenance"),
    "grad_stats": ("grad_stats.csv", "one row per run × seed × log point × layer: per-layer diagnostics"),
    "time_stats": ("time_stats.csv", "one row per recurrent run × seed × time step, at "
                   "initialisation and at the end of training: ‖∂L/∂h_t‖"),
    "curves": ("curves.csv", "one row per run × seed × log point: losses, test metric, global gradient norm"),
}
CSV_FLOAT = "%.6g"


def build_report(results_dir: str | Path, *, studies=None, baselines: dict | None = None,
                 formats=("png", "pdf")) -> list[Path]:
    """Write the whole report of the records in ``<results_dir>/runs/`` and return its files.

    Args:
      results_dir: the results directory; outputs go to ``runs.csv``, ``grad_stats.csv``,
        ``time_stats.csv``, ``curves.csv``, ``leaderboards/``, ``tables/``, ``figures/`` and
        ``README.md`` under it.
      studies: only these studies get leaderboards, tables and figures (default: all).
      baselines: study -> its baseline entry, as an entry label (``"relu / he_normal"``) or a
        dict of axis values (``{"skip": "none"}``); see :mod:`vgbench.report.leaderboard` for
        the default.
      formats: the figure file formats.

    Records of another schema, corrupt files and malformed records are skipped and listed in
    ``README.md``; they never stop the report.
    """
    from vgbench.report.figure_files import study_figures  # matplotlib only when drawing

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    records, problems = load_records(results_dir)
    frames = build_frames(records)
    problems += frames.problems
    outputs = _write_frames(frames, results_dir)
    baselines = baselines or {}
    wanted = set(studies) if studies is not None else None
    for study, runs in frames.runs.groupby("study", sort=True):
        if wanted is not None and study not in wanted:
            continue
        name = safe_name(study)
        board, settings = _study_boards(runs, baselines.get(study))
        outputs += _write_tables(study, name, runs, board, settings, results_dir)
        parts = [f[f["study"] == study] for f in (frames.grad_stats, frames.time_stats, frames.curves)]
        for fig_name, caption, paths in study_figures(runs, *parts, results_dir / "figures" / name,
                                                      formats):
            outputs.append(Output("figure", study, fig_name, caption, tuple(paths)))
    index = write_index(outputs, problems, results_dir, len(records) - len(frames.problems))
    return [p for o in outputs for p in o.paths] + [index]


def safe_name(study: str) -> str:
    """A study name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"


def _study_boards(runs: pd.DataFrame, baseline):
    axes = str(runs["entry_axes"].iloc[0])
    entry_axes = tuple(a for a in axes.split(" / ") if a and a in runs)
    return leaderboard(runs, baseline=baseline, entry_axes=entry_axes), by_setting(runs)


def _write_frames(frames: Frames, results_dir: Path) -> list[Output]:
    outputs = []
    for attribute, (file_name, caption) in FRAME_FILES.items():
        path = results_dir / file_name
        getattr(frames, attribute).to_csv(path, index=False, float_format=CSV_FLOAT)
        outputs.append(Output("frame", None, file_name, caption, (path,)))
    return outputs


def _write_tables(study, name, runs, board, settings, results_dir: Path) -> list[Output]:
    boards = results_dir / "leaderboards"
    tables = results_dir / "tables"
    boards.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    board_path = boards / f"{name}.csv"
    board.to_csv(board_path, index=False, float_format=CSV_FLOAT)
    outputs = [Output("leaderboard", study, name,
                      "entries ranked per task by the final test metric, with frontier and paired "
                      "comparison against the baseline", (board_path,))]
    axis = runs["frontier_axis"].iloc[0]
    if isinstance(axis, str):
        detail = boards / f"{name}_by_{safe_name(axis)}.csv"
        settings.to_csv(detail, index=False, float_format=CSV_FLOAT)
        outputs.append(Output("leaderboard", study, f"{name}_by_{axis}",
                              f"the same statistics at every {axis}", (detail,)))
    tex, md = tables / f"{name}.tex", tables / f"{name}.md"
    tex.write_text(latex_table(runs, board, settings), encoding="utf-8")
    md.write_text(markdown_table(runs, board, settings), encoding="utf-8")
    outputs.append(Output("table", study, name, "paper tables (booktabs LaTeX, Markdown) with "
                          "provenance footer", (tex, md)))
    return outputs

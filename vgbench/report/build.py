"""``build_report``: records -> frames -> leaderboards, tables, figures and an index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from vgbench.report import sensitivity, tuning
from vgbench.report.frames import load_frames
from vgbench.report.index import Output, safe_name, write_index
from vgbench.report.leaderboard import by_setting, leaderboard
from vgbench.report.parallel import default_workers, run_tasks
from vgbench.report.table_layout import document_text
from vgbench.report.tables import latex_table, markdown_table
from vgbench.selection import CONFIRM_SUFFIX

FRAME_FILES = {
    "runs": ("runs.csv", "one row per run × seed: axes, status, final metrics, summary, provenance"),
    "grad_stats": ("grad_stats.csv", "one row per run × seed × log point × layer: per-layer diagnostics"),
    "time_stats": ("time_stats.csv", "one row per recurrent run × seed × time step, at "
                   "initialisation and at the end of training: ‖∂L/∂h_t‖"),
    "curves": ("curves.csv", "one row per run × seed × log point: losses, test metric, global gradient norm"),
}
CSV_FLOAT = "%.6g"
CSV_CHUNK_ROWS = 150_000   # rows per task when a frame's CSV is written in parallel


def build_report(results_dir: str | Path, *, studies=None, baselines: dict | None = None,
                 formats=("png", "pdf"), workers: int | None = None) -> list[Path]:
    """Write the whole report of the records in ``<results_dir>/runs/`` and return its files.

    Args:
      results_dir: the results directory; outputs go to ``runs.csv``, ``grad_stats.csv``,
        ``time_stats.csv``, ``curves.csv``, ``leaderboards/``, ``tables/``, ``figures/`` and
        ``README.md`` under it.
      studies: only these studies get leaderboards, tables and figures (default: all).
      baselines: study -> its baseline, as an entry label (``"relu / he_normal"``) or a dict
        of axis values (``{"init": "naive"}``); default: the ``study_baseline`` its records
        carry from the grid file, else the rule in :mod:`vgbench.report.leaderboard`.
      formats: the figure file formats.
      workers: processes for figures and large CSV files (default: the number of cores).

    Records of another schema, corrupt files and malformed records are skipped and listed in
    ``README.md``; they never stop the report.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    frames = load_frames(results_dir, workers=workers)
    problems = frames.problems
    baselines = baselines or {}
    known = sorted(frames.runs["study"].unique()) if len(frames.runs) else []
    unknown = sorted(set(baselines) - set(known))
    if unknown:
        raise ValueError(f"baselines name unknown studies {unknown}; studies: {', '.join(known)}")
    wanted = set(studies) if studies is not None else None
    chosen = [s for s in known if wanted is None or s in wanted]

    outputs, tasks = [], []
    for attribute, (file_name, caption) in FRAME_FILES.items():
        outputs.append(Output("frame", None, file_name, caption, (results_dir / file_name,)))
        tasks += _csv_tasks(attribute, len(getattr(frames, attribute)), results_dir / file_name)
    # the largest studies first, so that the last tasks to finish are short ones
    sizes = frames.grad_stats["study"].value_counts() if len(frames.grad_stats) else {}
    chosen.sort(key=lambda study: -int(sizes.get(study, 0)))
    study_tasks = [(_study_task, (study, baselines.get(study, frames.study_baselines.get(study)),
                                  results_dir, tuple(formats))) for study in chosen]
    # import the plotting stack once, here, rather than once in every worker
    from vgbench.report import figure_files  # noqa: F401
    results = run_tasks(study_tasks + tasks, {"frames": frames}, workers)
    _join_csv_parts(tasks)
    for study_outputs in results[:len(study_tasks)]:
        outputs += study_outputs
    if "theory" in chosen:  # mean-field theory against measurement (vgbench.report.theory)
        from vgbench.report.theory import theory_outputs
        outputs += theory_outputs(results_dir, results_dir / "theory", frames=frames,
                                  formats=formats)
    from vgbench.report import finite_width  # the finite-width measurement, where made
    paths = finite_width.write(results_dir, frames.runs if len(frames.runs) else None)
    if paths:
        outputs.append(Output("figure", "finite_width", "spread_vs_beta", finite_width.CAPTION,
                              tuple(paths)))
    if len(frames.runs):   # the per-seed reference files (vgbench.report.reference)
        from vgbench.report.reference import write_reference
        paths = write_reference(frames.runs[frames.runs["study"].isin(chosen)], results_dir)
        outputs += [Output("reference", p.stem, p.stem, "one row per run and seed: role, "
                           "axes, tuned values, status, validation and test metric, signed "
                           "attenuation, program fingerprint (what vgbench compare reads)", (p,))
                    for p in paths]
    outputs += _write_all_tables(outputs, results_dir)
    n_records = frames.runs["run_id"].nunique() if len(frames.runs) else 0
    index = write_index(outputs, problems, results_dir, n_records)
    return [p for o in outputs for p in o.paths] + [index]


def _study_boards(runs: pd.DataFrame, baseline):
    axes = str(runs["entry_axes"].iloc[0])
    entry_axes = tuple(a for a in axes.split(" / ") if a and a in runs)
    settings = by_setting(runs)
    within = str(runs["compare_within"].iloc[0]) if "compare_within" in runs else ""
    within = [a for a in within.split(" / ") if a] or None
    return leaderboard(runs, baseline=baseline, entry_axes=entry_axes, settings=settings,
                       within=within), settings


def _study_task(shared: dict, study: str, baseline, results_dir: Path, formats: tuple):
    """Leaderboards, tables and figures of one study; returns their :class:`Output` lines."""
    from vgbench.report.figure_files import study_figures  # matplotlib only when drawing

    frames = shared["frames"]
    every_run = frames.runs[frames.runs["study"] == study]
    # a tuned study is reported at each entry's chosen value; every candidate goes to its own table
    runs, candidates = tuning.choose(every_run)
    board, settings = _study_boards(runs, baseline)
    outputs = _write_tables(study, safe_name(study), runs, board, settings, results_dir)
    figure_dir = results_dir / "figures" / safe_name(study)
    chosen = set(runs["run_id"])
    if not candidates.empty:
        outputs += _write_tuning(study, safe_name(study), candidates, results_dir)
        # the sensitivity figure shows the tuning runs: the chosen ones are the tuning runs of
        # the configs that were confirmed (a confirmation run's id is its config's + a suffix)
        tuning_runs = every_run[every_run.get("role", "study") != "confirm"]
        picked = {rid.removesuffix(CONFIRM_SUFFIX) for rid in chosen}
        outputs += [Output("figure", study, name, caption, tuple(paths)) for name, caption, paths
                    in sensitivity.sensitivity_figures(tuning_runs, picked, figure_dir, formats)]
    parts = [f[(f["study"] == study) & f["run_id"].isin(chosen)]
             for f in (frames.grad_stats, frames.time_stats, frames.curves)]
    skipped = []
    written = study_figures(runs, *parts, figure_dir, formats, skipped=skipped)
    return outputs + [Output("figure", study, name, caption, tuple(paths))
                      for name, caption, paths in written] + [
        Output("skipped", study, name, reason, ()) for name, reason in skipped]


def _write_tuning(study, name, candidates: pd.DataFrame, results_dir: Path) -> list[Output]:
    path = results_dir / "leaderboards" / f"{name}_tuning.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    candidates.drop(columns=["entry_order"]).to_csv(path, index=False, float_format=CSV_FLOAT)
    return [Output("leaderboard", study, f"{name}_tuning",
                   "every candidate value of the tuned fields per entry and setting, with its "
                   f"validation statistics; rule: {tuning.RULE}", (path,))]


def _csv_tasks(attribute: str, n_rows: int, path: Path) -> list:
    """Tasks that write a frame's CSV in slices: ``path`` itself, or numbered parts of it."""
    bounds = list(range(0, n_rows, CSV_CHUNK_ROWS)) + [n_rows]
    if len(bounds) <= 2:
        return [(_csv_task, (attribute, 0, n_rows, path, True))]
    return [(_csv_task, (attribute, start, stop, _part(path, i), i == 0))
            for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _part(path: Path, i: int) -> Path:
    return path.with_name(f".{path.name}.part{i:04d}")


def _csv_task(shared: dict, attribute: str, start: int, stop: int, path: Path, header: bool):
    frame = getattr(shared["frames"], attribute)
    write_csv(frame.iloc[start:stop], path, header=header)
    return path


def write_csv(frame: pd.DataFrame, path: Path, header: bool = True):
    """``frame.to_csv(path, index=False, header=header)``, byte for byte, about twice as fast
    for frames of numbers, flags and categories (the long frames): each column is turned into
    text at once, numbers as their shortest round-trip form (record values are already rounded
    to 6 digits, so that is also the shortest text), NaN as an empty field. A frame with any
    other column (text) goes to pandas."""
    columns = [_csv_column(frame[c]) for c in frame.columns]
    if any(text is None for text in columns):
        frame.to_csv(path, index=False, header=header)
        return
    with open(path, "w", encoding="utf-8", newline="") as out:
        if header:
            out.write(",".join(_csv_quoted(str(c)) for c in frame.columns) + "\n")
        if len(frame):
            out.write("\n".join(map(",".join, zip(*columns))) + "\n")


def _csv_column(series: pd.Series) -> list[str] | None:
    """A column's CSV fields as pandas writes them, or None for a kind of column left to it."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        names = [_csv_quoted(str(c)) for c in series.cat.categories] + [""]   # code -1: missing
        return [names[code] for code in series.cat.codes.tolist()]
    values = series.to_numpy()
    if values.dtype == bool:
        return ["True" if v else "False" for v in values.tolist()]
    if values.dtype.kind in "iu":
        return list(map(str, values.tolist()))
    if values.dtype == np.float64:
        text = list(map(repr, values.tolist()))
        for i in np.flatnonzero(np.isnan(values)).tolist():
            text[i] = ""
        return text
    return None


def _csv_quoted(text: str) -> str:
    """A field quoted as the csv module's minimal quoting does (pandas' default)."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def _join_csv_parts(tasks: list):
    """Concatenate the numbered parts of each CSV, in order, into the file itself."""
    parts: dict[Path, list[Path]] = {}
    for _, args in tasks:
        path = args[3]
        if path.name.startswith("."):
            target = path.with_name(path.name[1:].rsplit(".part", 1)[0])
            parts.setdefault(target, []).append(path)
    for target, pieces in parts.items():
        with target.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, out, length=1 << 20)
                piece.unlink()


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


def _write_all_tables(outputs: list[Output], results_dir: Path) -> list[Output]:
    """``tables/all.tex``: a two-column document that inputs every LaTeX table written, a
    study per page, so that the tables can be read (and checked to fit) together."""
    tables = results_dir / "tables"
    inputs = []
    # studies in alphabetical order, the theory study's agreement table last
    for output in sorted(outputs, key=lambda o: (o.study == "theory", o.study or "")):
        for path in output.paths:
            if output.kind == "table" and path.suffix == ".tex":
                relative = Path(os.path.relpath(path, tables)).with_suffix("").as_posix()
                inputs.append(relative)
    if not inputs:
        return []
    tables.mkdir(parents=True, exist_ok=True)
    path = tables / "all.tex"
    path.write_text(document_text(inputs), encoding="utf-8")
    return [Output("table", None, "all", "every LaTeX table of this report in one two-column document "
                   "(pdflatex all.tex in tables/)", (path,))]

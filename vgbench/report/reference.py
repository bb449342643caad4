"""The per-seed reference file of a study: one row per run and seed, small enough for git.

``results/reference/<study>.csv`` holds what a reader needs to check a published table without
the records: each run's role in the protocol (``tune``, ``confirm`` or ``study``), its axes
(the entry and the setting), the value of every tuned field, status, final validation and test
metric, signed attenuation, whether the validation metric was still improving, and the program
fingerprint and commit of the code that made it. ``vgbench compare`` reads these files as
readily as a results directory (:func:`per_seed_table`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vgbench.report.tuning import tuned_fields

COLUMNS = ["study", "role", "run_id", "seed", "task", "entry", "entry_order", "entry_axes",
           "frontier_axis", "frontier_value", "status", "ok", "target_metric", "higher_is_better",
           "target_value", "reached", "val_metric", "metric", "final_val_loss", "task_baseline",
           "log10_attenuation_init", "log10_attenuation_final", "still_improving",
           "tuned_axes", "env_program_fingerprint", "env_git_commit"]
FLOAT_FORMAT = "%.6g"


def per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """The reference rows of a ``runs`` frame (one study or several)."""
    fields = tuned_fields(runs)
    columns = [c for c in COLUMNS if c in runs] + [f for f in fields if f not in COLUMNS]
    out = runs[columns].copy()
    if "role" not in out:
        out.insert(1, "role", "study")
    return out.sort_values(["study", "role", "task", "entry_order", "frontier_value", *fields,
                            "seed"], kind="stable", ignore_index=True)


def write_reference(runs: pd.DataFrame, results_dir: Path) -> list[Path]:
    """Write ``<results_dir>/reference/<study>.csv`` for every study of ``runs``."""
    from vgbench.report.index import safe_name

    folder = Path(results_dir) / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for study, rows in runs.groupby("study", sort=True):
        path = folder / f"{safe_name(study)}.csv"
        per_seed(rows).to_csv(path, index=False, float_format=FLOAT_FORMAT)
        paths.append(path)
    return paths


def per_seed_table(source: str | Path) -> pd.DataFrame:
    """Per-seed rows from a results directory (its ``runs/`` records, else its ``reference/``
    files), a reference folder, or one reference CSV file."""
    source = Path(source)
    if source.is_file():
        return _read_csv(source)
    if (source / "runs").is_dir():
        from vgbench.report.frames import load_frames

        runs = load_frames(source).runs
        if len(runs):
            return per_seed(runs)
    folder = source / "reference" if (source / "reference").is_dir() else source
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"{source}: neither run records (runs/) nor per-seed reference files "
            "(reference/*.csv) here; give a results directory or a reference CSV file")
    return pd.concat([_read_csv(f) for f in files], ignore_index=True)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable per-seed reference file ({err})") from None
    missing = [c for c in ("study", "seed", "task", "entry", "frontier_value", "status", "metric")
               if c not in table]
    if missing:
        raise ValueError(f"{path}: not a per-seed reference file: no column "
                         f"{', '.join(missing)} (expected the columns of vgbench report's "
                         "reference/<study>.csv)")
    return table

"""Hand-made run records for the reporter's tests: realistic shapes, chosen numbers.

``record`` starts from :func:`vgbench.report.synthetic.make_record` (every field of a
``vgbench.run/1`` record, diagnostics included) and overwrites the per-seed numbers a test
wants to check: statuses, final metric, steps to target, summary fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from vgbench.report.synthetic import make_record, write_records

SMALL = {"steps": 100, "log_every": 25, "width": 8}   # 5 log points: quick to build and draw


def record(*, study: str = "toy", seeds=(0, 1, 2), status=None, accuracy=None,
           steps_to_target=None, summary=None, grid_axes=None, **config) -> dict:
    """A digits record of ``study`` whose grid point is ``grid_axes`` (default: the config
    fields given), with the given per-seed numbers; None in a list is JSON null."""
    config = {**SMALL, **config}
    axes = grid_axes if grid_axes is not None else {
        k: v for k, v in config.items() if k not in SMALL}
    rec = make_record(study=study, grid_axes=axes, seeds=seeds, **config)
    n = len(rec["seeds"])
    if status is not None:
        rec["status"] = list(status)
        rec["diverged_at_step"] = [50 if s == "diverged" else None for s in status]
        rec["error"] = ["boom" if s == "failed" else None for s in status]
    if accuracy is not None:
        rec["metrics"]["final_test_accuracy"] = list(accuracy)
    if steps_to_target is not None:
        rec["metrics"]["steps_to_target"] = list(steps_to_target)
    for key, values in (summary or {}).items():
        rec["summary"][key] = list(values)
    assert all(len(v) == n for v in rec["metrics"].values())
    return rec


def toy_study() -> list[dict]:
    """depth {2, 4} x activation {relu, sigmoid}, seeds 0-2, with a diverged and a failed seed.

    Final accuracies (None: no value), steps to target (target 0.9):
      relu    depth 2: 0.90 0.92 0.94   100  200  300
      relu    depth 4: 0.91 None 0.93   100  -    200    (seed 1 diverged)
      sigmoid depth 2: 0.50 0.60 0.95   -    -    400
      sigmoid depth 4: 0.10 0.10 None   -    -    -      (seed 2 failed)
    """
    ok3 = ["ok", "ok", "ok"]
    return [
        record(depth=2, activation="relu", status=ok3, accuracy=[0.90, 0.92, 0.94],
               steps_to_target=[100, 200, 300]),
        record(depth=4, activation="relu", status=["ok", "diverged", "ok"],
               accuracy=[0.91, None, 0.93], steps_to_target=[100, None, 200]),
        record(depth=2, activation="sigmoid", status=ok3, accuracy=[0.50, 0.60, 0.95],
               steps_to_target=[None, None, 400]),
        record(depth=4, activation="sigmoid", status=["ok", "ok", "failed"],
               accuracy=[0.10, 0.10, None], steps_to_target=[None, None, None]),
    ]


def recurrent_study(seq_lens=(5, 20), cells=("rnn", "lstm"), seeds=(0, 1)) -> list[dict]:
    """A small recurrent study on the adding task: seq_len x cell."""
    return [make_record(study="memory", grid_axes={"seq_len": t, "cell": c}, seeds=seeds,
                        model="rnn", task="adding", seq_len=t, cell=c, **SMALL)
            for t in seq_lens for c in cells]


def write_results(tmp_path: Path, records: list[dict], *, corrupt: bool = False) -> Path:
    """Write ``records`` under ``tmp_path/results/runs``; with ``corrupt`` add a file that is
    not JSON and a record of an older schema."""
    results = tmp_path / "results"
    write_records(results, records)
    if corrupt:
        (results / "runs" / "broken.json").write_text('{"schema": "vgbench.run/1", "run_')
        old = dict(records[0], schema="vgbench.run/0")
        (results / "runs" / "old.json").write_text(json.dumps(old))
    return results

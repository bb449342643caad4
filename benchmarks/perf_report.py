"""Time ``vgbench report`` on 1000 synthetic run records (the reporter's speed benchmark).

    python benchmarks/perf_report.py [--records 1000] [--keep DIR] [--out results/perf_report.csv]

The records come from :mod:`vgbench.report.synthetic`: nine studies shaped like a default
suite (depth sweeps over activations and inits, normalisation and skips, optimisers,
recurrent cells over sequence length, ...), three seeds, 21 log points each. Prints the
time of each stage and the CPU time of the report (its workers included), which a busy
machine inflates less than the wall time; the goal is the whole report in under 30 s on a
2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from vgbench.report import build_report
from vgbench.report.frames import build_frames
from vgbench.report.records import load_records
from vgbench.report.synthetic import make_study, write_records

DEPTHS = [2, 4, 8, 16, 32, 64]
STUDIES = [
    ("depth_activation", {"depth": DEPTHS, "activation": ["sigmoid", "tanh", "relu", "leaky_relu",
                                                          "gelu", "selu"],
                          "init": ["naive", "xavier_normal", "he_normal", "orthogonal"]}, {}),
    ("init_scale", {"depth": DEPTHS, "sigma_w": [0.5, 0.8, 1.0, 1.2, 1.5, 2.0],
                    "activation": ["tanh", "relu"]}, {}),
    ("normalisation", {"depth": DEPTHS, "norm": ["none", "batchnorm", "layernorm"],
                       "skip": ["none", "residual"], "activation": ["sigmoid", "tanh", "relu"]}, {}),
    ("optimisers", {"depth": DEPTHS[1:], "optimizer": ["sgd", "momentum", "adam", "rmsprop"],
                    "lr": [0.001, 0.01, 0.1], "clip": ["none", "norm"]}, {}),
    ("recurrent", {"seq_len": [10, 20, 50, 100, 200, 500], "cell": ["rnn", "lstm", "gru"],
                   "recurrent_init": ["orthogonal", "xavier_normal", "identity"],
                   "clip": ["none", "norm"]}, {"model": "rnn", "task": "adding"}),
    ("lr_sweep", {"depth": DEPTHS, "lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                  "activation": ["sigmoid", "tanh", "relu"]}, {}),
    ("width", {"depth": DEPTHS, "width": [16, 32, 64, 128, 256, 512],
               "activation": ["tanh", "relu"], "init": ["xavier_normal", "he_normal"]}, {}),
    ("cnn", {"depth": [2, 4, 8, 16, 32], "activation": ["sigmoid", "tanh", "relu", "gelu"],
             "norm": ["none", "batchnorm"], "skip": ["none", "residual"]}, {"model": "cnn"}),
    ("deep_residual", {"depth": [16, 32, 64, 128], "skip": ["none", "residual"],
                       "norm": ["none", "layernorm", "batchnorm"],
                       "activation": ["sigmoid", "tanh", "relu", "gelu"]}, {}),
]


def synthetic_records(n: int) -> list[dict]:
    """``n`` records from the studies above, in order (the last study is cut to fit)."""
    records = []
    for i, (study, axes, fixed) in enumerate(STUDIES):
        # a batch size of its own keeps each study's configs (and so run ids) apart
        made = make_study(study, axes, batch_size=100 + i, **fixed)
        if study == "lr_sweep":   # a tuned study: each entry reported at its chosen lr
            for record in made:
                record["tuning"] = {"lr": axes["lr"]}
        records += made
        if len(records) >= n:
            break
    return records[:n]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--keep", default=None, help="build in this folder and keep it")
    parser.add_argument("--out", default=None, help="append the timings to this CSV")
    args = parser.parse_args(argv)

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vgbench-perf-"))
    try:
        t0 = time.perf_counter()
        records = synthetic_records(args.records)
        write_records(folder, records)
        t1 = time.perf_counter()
        loaded, _ = load_records(folder)
        t2 = time.perf_counter()
        build_frames(loaded)
        t3 = time.perf_counter()
        cpu_before = _cpu_seconds()
        paths = build_report(folder)
        t4 = time.perf_counter()
        cpu = _cpu_seconds() - cpu_before
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    studies = len({r["study"] for r in records})
    size = sum(p.stat().st_size for p in (folder / "runs").glob("*.json")) if args.keep else None
    print(f"{len(records)} records in {studies} studies written in {t1 - t0:.1f} s"
          + (f" ({size / 1e6:.0f} MB)" if size else ""))
    print(f"  load_records   {t2 - t1:6.1f} s")
    print(f"  build_frames   {t3 - t2:6.1f} s")
    print(f"  build_report   {t4 - t3:6.1f} s  ({len(paths)} files; goal: under 30 s), "
          f"{cpu:.1f} CPU-s on {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f})")
    if args.out:
        out = Path(args.out)
        new = not out.exists()
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["benchmark", "records", "studies", "files", "seconds",
                                 "cpu_seconds", "cpus", "load_average", "machine"])
            writer.writerow(["build_report", len(records), studies, len(paths),
                             f"{t4 - t3:.2f}", f"{cpu:.2f}", os.cpu_count(),
                             f"{os.getloadavg()[0]:.1f}", platform.machine()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

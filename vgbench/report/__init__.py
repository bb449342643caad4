"""The reporter: run records in, tidy frames, leaderboards, paper tables and figures out.

It reads only the JSON records (``<results>/runs/*.json``) and never imports JAX, so a report
can be built on any machine with pandas, matplotlib, seaborn and orjson::

    from vgbench.report import build_report
    build_report("results")              # what `vgbench report --results results` does

``load_records`` and ``build_frames`` give the tidy frames to work with directly; the
``plot_*`` functions of :mod:`vgbench.report.figures` draw on them.
"""

from vgbench.report.build import build_report
from vgbench.report.frames import Frames, build_frames, load_frames, with_runs
from vgbench.report.leaderboard import by_setting, leaderboard
from vgbench.report.records import Problem, load_records

__all__ = ["Frames", "Problem", "build_frames", "build_report", "by_setting", "leaderboard",
           "load_frames", "load_records", "with_runs"]

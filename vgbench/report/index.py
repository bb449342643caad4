"""``results/README.md``: one line per table, leaderboard and figure the report wrote, and the
records it had to skip."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vgbench.report.records import Problem


@dataclass(frozen=True)
class Output:
    """One thing the report wrote: its kind, study, short name, caption and files."""

    kind: str            # "frame", "leaderboard", "table" or "figure"
    study: str | None
    name: str
    caption: str
    paths: tuple[Path, ...]


def index_text(outputs: list[Output], problems: list[Problem], results_dir: Path,
               n_records: int) -> str:
    lines = ["# Results", "",
             f"Built by `vgbench report` from {n_records} run record"
             f"{'s' * (n_records != 1)} in `runs/`; rebuild with `vgbench report --results DIR` "
             "(DIR: this folder). Every file below is generated: do not edit it by hand.", ""]
    frames = [o for o in outputs if o.kind == "frame"]
    if frames:
        lines += ["## Tidy frames", ""] + [_line(o, results_dir) for o in frames] + [""]
    studies = sorted({o.study for o in outputs if o.study is not None})
    for study in studies:
        lines += [f"## Study `{study}`", ""]
        for kind in ("leaderboard", "table", "figure"):
            lines += [_line(o, results_dir) for o in outputs if o.study == study and o.kind == kind]
        lines.append("")
    if problems:
        lines += ["## Skipped records", "",
                  f"{len(problems)} file{'s' * (len(problems) != 1)} could not be used:", ""]
        lines += [f"- `{_relative(Path(p.path), results_dir)}`: {p.reason}" for p in problems]
        lines.append("")
    return "\n".join(lines)


def write_index(outputs: list[Output], problems: list[Problem], results_dir: Path,
                n_records: int) -> Path:
    path = results_dir / "README.md"
    path.write_text(index_text(outputs, problems, results_dir, n_records), encoding="utf-8")
    return path


def _line(output: Output, results_dir: Path) -> str:
    links = ", ".join(f"[{p.suffix.lstrip('.')}]({_relative(p, results_dir)})" for p in output.paths)
    return f"- {output.kind} **{output.name}**: {output.caption} ({links})"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()

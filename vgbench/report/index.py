"""``results/README.md``: one line per frame, table and leaderboard the report wrote, every
figure shown inline with its caption and a sentence on what to look at, and the records it
had to skip. It reads as a report on any Git host."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vgbench.report.captions import LOOK_AT, figure_kind
from vgbench.report.records import Problem

GUIDE = Path("docs") / "vanishing-gradients.md"   # beside the results folder, in the repository


def safe_name(study: str) -> str:
    """A study name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"


@dataclass(frozen=True)
class Output:
    """One thing the report wrote: its kind, study, short name, caption and files."""

    kind: str            # "frame", "leaderboard", "table", "figure" or "skipped" (a figure
                         # kind that does not apply: its caption says why; no files)
    study: str | None
    name: str
    caption: str
    paths: tuple[Path, ...]


def untracked(paths, results_dir: Path) -> set[Path]:
    """The ``paths`` that the repository holding ``results_dir`` ignores (``git check-ignore``):
    they exist where the report was built but not in a clone, so the index names them without a
    link. Outside a repository (or without git) every file is linked."""
    import subprocess

    paths = [Path(p) for p in paths]
    try:
        done = subprocess.run(["git", "check-ignore", "--stdin"], cwd=results_dir, text=True,
                              input="\n".join(str(p.resolve()) for p in paths),
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return set()
    if done.returncode not in (0, 1):   # 128: not a repository
        return set()
    ignored = {Path(line).resolve() for line in done.stdout.splitlines() if line}
    return {p for p in paths if p.resolve() in ignored}


def index_text(outputs: list[Output], problems: list[Problem], results_dir: Path,
               n_records: int) -> str:
    unlinked = untracked([p for o in outputs for p in o.paths], results_dir)
    lines = ["# Results", "",
             f"Built by `vgbench report` from {n_records} run record"
             f"{'s' * (n_records != 1)} in `runs/`; rebuild with `vgbench report --results DIR` "
             "(DIR: this folder). Every file below is generated: do not edit it by hand.", ""]
    guide = results_dir.parent / GUIDE
    if guide.exists():
        lines += [f"New to the problem? [What vanishing gradients look like]"
                  f"({_relative(guide, results_dir, up=True)}) walks through these figures.", ""]
    frames = [o for o in outputs if o.kind == "frame"]
    if frames:
        lines += ["## Tidy frames", ""] + [_line(o, results_dir, unlinked) for o in frames] + [""]
    every = [o for o in outputs if o.kind == "table" and o.study is None]
    if every:   # tables/all.tex: every table of the report in one document
        lines += ["## All tables", ""] + [_line(o, results_dir, unlinked) for o in every] + [""]
    studies = sorted({o.study for o in outputs if o.study is not None})
    for study in studies:
        lines += [f"## Study `{study}`", ""]
        for kind in ("leaderboard", "table", "reference"):
            lines += [_line(o, results_dir, unlinked) for o in outputs
                      if o.study == study and o.kind == kind]
        lines.append("")
        for output in outputs:
            if output.study == study and output.kind == "figure":
                lines += _figure(output, results_dir, unlinked)
        skipped = [o for o in outputs if o.study == study and o.kind == "skipped"]
        if skipped:
            lines += ["Figure kinds not drawn for this study, and why:", ""]
            lines += [f"- **{o.name}**: {o.caption}" for o in skipped] + [""]
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


def _link(p: Path, results_dir: Path, unlinked: set) -> str:
    """A link to a file kept in the repository; a generated, ignored file by name only."""
    if p in unlinked:
        return f"{p.suffix.lstrip('.')}: `{_relative(p, results_dir)}`, made by `vgbench report`, not kept in git"
    return f"[{p.suffix.lstrip('.')}]({_relative(p, results_dir)})"


def _line(output: Output, results_dir: Path, unlinked: set = frozenset()) -> str:
    links = ", ".join(_link(p, results_dir, unlinked) for p in output.paths)
    return f"- {output.kind} **{output.name}**: {output.caption} ({links})"


def _figure(output: Output, results_dir: Path, unlinked: set = frozenset()) -> list[str]:
    """A figure inline (its PNG), then its caption, what to look at, and its files."""
    links = ", ".join(_link(p, results_dir, unlinked) for p in output.paths)
    image = next((p for p in output.paths if p.suffix == ".png"), None)
    look = LOOK_AT.get(figure_kind(output.name) or "", "")
    caption = output.caption[:1].upper() + output.caption[1:]
    lines = [f"### {output.name}", ""]
    if image is not None:
        lines += [f"![{output.name}]({_relative(image, results_dir)})", ""]
    return lines + [f"{caption}." + (f" {look}" if look else "") + f" ({links})", ""]


def _relative(path: Path, root: Path, up: bool = False) -> str:
    """``path`` relative to ``root``; with ``up``, also when it lies beside ``root``."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        if up:
            try:
                return "../" + path.resolve().relative_to(root.resolve().parent).as_posix()
            except ValueError:
                pass
        return path.as_posix()

"""The program fingerprint: a hash of the code that decides a record's numbers.

A record carries ``env.program_fingerprint``; the committed reference results carry the
fingerprint of the code that made them (``results/reference/*.csv``). When the code that
trains and measures changes, the fingerprint changes and a test says so until the reference
results are re-made, or the new fingerprint is declared number-neutral with a reason in
``results/reference/fingerprints.txt`` (a refactor that leaves every record bit for bit).

What counts: every module of the package except those that only plan, store or report
(:data:`NOT_PROGRAM`). Docstrings, comments and blank lines do not count; every other line
counts as written, so the fingerprint is the same whichever Python version computes it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# modules that plan runs, store records, report or talk to the user: they do not change numbers
NOT_PROGRAM = ("report", "cli.py", "runner.py", "grid.py", "store.py", "executors.py",
               "diagnose.py", "fingerprint.py", "plugins.py", "selection.py", "__main__.py")


def program_files(root: Path = PACKAGE) -> list[Path]:
    """The package's source files that count, in a fixed order."""
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_PROGRAM or rel.as_posix() in NOT_PROGRAM:
            continue
        files.append(path)
    return files


def _code(source: str) -> str:
    """``source`` without docstrings, comments, blank lines or trailing spaces; the lines
    that stay are kept as written (indentation included), so the text does not depend on
    the Python version that reads it."""
    drop: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            drop.update(range(body[0].lineno, body[0].end_lineno + 1))
    cut = {tok.start[0]: tok.start[1]
           for tok in tokenize.generate_tokens(io.StringIO(source).readline)
           if tok.type == tokenize.COMMENT}
    lines = []
    for number, line in enumerate(source.splitlines(), start=1):
        if number in drop:
            continue
        line = line[:cut[number]] if number in cut else line
        if line.strip():
            lines.append(line.rstrip())
    return "\n".join(lines)


@functools.cache
def program_fingerprint(root: Path = PACKAGE) -> str:
    """16 hex digits over the code of :func:`program_files`."""
    digest = hashlib.sha256()
    for path in program_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_code(path.read_text(encoding="utf-8")).encode() + b"\0")
    return digest.hexdigest()[:16]

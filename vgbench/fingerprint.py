"""The program fingerprint: a hash of the code that decides a record's numbers.

A record carries ``env.program_fingerprint``; the committed reference results carry the
fingerprint of the code that made them (``results/reference/*.csv``). When the code that
trains and measures changes, the fingerprint changes and a test says so until the reference
results are re-made, or the new fingerprint is declared number-neutral with a reason in
``results/reference/fingerprints.txt`` (a refactor that leaves every record bit for bit).

What counts: every module of the package except those that only plan, store or report
(:data:`NOT_PROGRAM`). Comments, docstrings and layout do not count: the source is parsed,
its docstrings dropped, and the syntax tree written back (``ast.unparse``) before hashing.
"""

from __future__ import annotations

import ast
import functools
import hashlib
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
    """``source`` without comments, docstrings or layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@functools.cache
def program_fingerprint(root: Path = PACKAGE) -> str:
    """16 hex digits over the code of :func:`program_files`."""
    digest = hashlib.sha256()
    for path in program_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_code(path.read_text(encoding="utf-8")).encode() + b"\0")
    return digest.hexdigest()[:16]

"""Helpers for names a user types: the nearest valid name, a docstring's first line.

A leaf module (it imports nothing of vgbench): the run config (:mod:`vgbench.spec`) and the
registries (:mod:`vgbench.registry`) both use it.
"""

from __future__ import annotations

import difflib
from typing import Any


def nearest(name: Any, choices) -> str | None:
    """The choice closest to ``name`` with case ignored (``Relu`` -> ``relu``), or None."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), choice)
    near = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return by_lower[near[0]] if near else None


def did_you_mean(name: Any, choices) -> str:
    """'; did you mean 'x'?' for the nearest choice, or '' when none is near."""
    near = nearest(name, choices)
    return f"; did you mean {near!r}?" if near is not None else ""


def first_line(doc: str | None) -> str:
    """The first non-empty line of a docstring, or ''."""
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""

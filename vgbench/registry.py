"""Named registries, one per axis of the benchmark (activation, init, norm, ...).

A registry is a plain mapping from a name to a documented entry. ``get`` rejects unknown
names with the list of valid ones and the nearest match; ``register`` refuses to overwrite an
existing name so that a plugin can never silently replace a built-in entry.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

Entry = TypeVar("Entry")

# While a plugin is being imported, its key (file path or module name) is the default origin of
# every entry it registers: that is how a run's id comes to depend on the plugin's source.
_ORIGINS: list[str] = []


def current_origin() -> str:
    return _ORIGINS[-1] if _ORIGINS else "vgbench"


def first_line(doc: str | None) -> str:
    """The first non-empty line of a docstring, or ''."""
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Mapping[str, Entry], Generic[Entry]):
    """A name -> entry mapping for one axis, with helpful errors."""

    def __init__(self, axis: str, flag: str | None = None):
        self.axis = axis
        self.flag = flag or axis
        self._entries: dict[str, Entry] = {}
        self._docs: dict[str, str] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, entry: Entry, *, doc: str | None = None,
                 origin: str | None = None) -> Entry:
        """Add ``entry`` under ``name``; a name that exists already is an error."""
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.axis} name must be a non-empty identifier-like string, got {name!r}")
        if name in self._entries:
            raise ValueError(
                f"{self.axis} {name!r} is already registered (by {self._origin[name]}); "
                "choose another name: entries are never silently overridden")
        text = doc if doc is not None else inspect.getdoc(entry) or ""
        if not first_line(text):
            raise ValueError(f"{self.axis} {name!r} needs a docstring: its first line is shown in "
                             "`vgbench list` and in leaderboards")
        self._entries[name] = entry
        self._docs[name] = text
        self._origin[name] = current_origin() if origin in (None, "vgbench") else origin
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (used by tests that register temporary entries)."""
        self._entries.pop(name, None)
        self._docs.pop(name, None)
        self._origin.pop(name, None)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; unknown names raise ValueError listing the valid ones."""
        if not isinstance(name, str):
            raise TypeError(f"{self.flag} must be a string naming one of {self.names()}, "
                            f"got {type(name).__name__} {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(self.unknown_message(name)) from None

    def unknown_message(self, name: Any) -> str:
        near = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"unknown {self.flag} {name!r}; valid choices: {', '.join(self.names())}{hint}"

    def names(self) -> list[str]:
        return list(self._entries)

    def doc(self, name: str) -> str:
        self.get(name)
        return self._docs[name]

    def summary(self, name: str) -> str:
        return first_line(self.doc(name))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

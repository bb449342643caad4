"""Named registries, one per axis of the benchmark (activation, init, norm, ...).

A registry is a plain mapping from a name to a documented entry. ``get`` rejects unknown
names with the list of valid ones and the nearest match; ``register`` refuses to overwrite an
existing name so that a plugin can never silently replace a built-in entry.

Each registry names the config fields whose values it holds (``init`` and ``recurrent_init``
both name initializers): :func:`axes` is that table, config field -> registry, and the run
config, the command line, grid files and plugins all read it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from vgbench.names import did_you_mean, first_line
from vgbench.spec import field_names

Entry = TypeVar("Entry")

# While a plugin is being imported, its key (file path or module name) is the default origin of
# every entry it registers: that is how a run's id comes to depend on the plugin's source.
_ORIGINS: list[str] = []


def current_origin() -> str:
    return _ORIGINS[-1] if _ORIGINS else "vgbench"


# config field -> the registry of its valid names, filled as the registries are created
_AXES: dict[str, "Registry"] = {}

# the modules whose import creates the built-in registries and registers their entries
BUILTIN_MODULES = ("vgbench.activations", "vgbench.inits", "vgbench.norms", "vgbench.optimizers",
                   "vgbench.tasks", "vgbench.models")


def import_builtins() -> None:
    """Import the built-in registries (and so every built-in entry)."""
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def axes() -> dict[str, "Registry"]:
    """Config field -> the registry of its valid names (built-ins first, then plugins' own)."""
    import_builtins()
    return dict(_AXES)


class Registry(Mapping[str, Entry], Generic[Entry]):
    """A name -> entry mapping for one axis, with helpful errors.

    ``fields``: the config fields whose values name entries of this registry (default: the
    axis itself, where it is a config field); they enter the table of :func:`axes`.
    """

    def __init__(self, axis: str, *, fields: tuple[str, ...] | None = None):
        self.axis = axis
        self.fields = tuple(fields if fields is not None
                            else (axis,) if axis in field_names() else ())
        self._entries: dict[str, Entry] = {}
        self._docs: dict[str, str] = {}
        self._origin: dict[str, str] = {}
        for name in self.fields:
            if name in _AXES:
                raise ValueError(f"config field {name!r} already names {_AXES[name].axis} entries")
            _AXES[name] = self

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

    def get(self, name: str, *, field: str | None = None) -> Entry:
        """The entry called ``name``; unknown names raise ValueError listing the valid ones.

        ``field``: the config field that named it, for the message (default: the axis).
        """
        if not isinstance(name, str):
            raise TypeError(f"{field or self.axis} must be a string naming one of {self.names()}, "
                            f"got {type(name).__name__} {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(self.unknown_message(name, field=field)) from None

    def unknown_message(self, name: Any, *, field: str | None = None) -> str:
        return (f"unknown {field or self.axis} {name!r}; valid choices: {', '.join(self.names())}"
                f"{did_you_mean(name, self.names())}")

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

"""Named registries, one per axis of the benchmark (activation, init, norm, ...).

A registry is a plain mapping from a name to a documented entry. ``get`` rejects unknown
names with the list of valid ones and the nearest match; ``register`` refuses to overwrite an
existing name so that a plugin can never silently replace a built-in entry.

Each registry names the config fields whose values it holds (``init`` and ``recurrent_init``
both name initializers): :func:`axes` is that table, config field -> registry, and the run
config, the command line, grid files and plugins all read it.

**Options.** An entry may declare hyperparameters of its own, with their defaults, when it is
registered (``register_activation("elu", elu, options={"alpha": 1.0})``); a config then names
it with values for them, ``"elu(alpha=0.5)"``, wherever it names an entry (a config field, a
grid axis, the command line). The registry reads and checks such a name (:meth:`Registry.parse`:
an unknown entry, an unknown option or a value of the wrong type is one error that names the
field and the valid choices) and hands the values to the entry's code as keyword arguments
(:meth:`Registry.get`: a callable entry is called with them; an entry with several functions
says which of them receive them, in its ``with_options``). Options are part of the name, so
a run id, a grid's axes, leaderboards and figure labels tell ``elu(alpha=0.5)`` apart with no
further change; options at their defaults are left out of the name's canonical form
(:meth:`Registry.canonical`: ``"elu(alpha=1.0)"`` is ``"elu"``, one config and one run id).
A hyperparameter of one entry belongs in its options, not in a new config field: a config
field is global, and every entry but one would ignore it (``leaky_slope`` is the one such
field, kept so that its runs keep their ids).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
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


# ---------------------------------------------------------------------------- options

OPTION_TYPES = (bool, int, float, str)   # an option's type is its default's


def option_text(value: Any) -> str:
    """An option value as it is written in a name: ``0.5``, ``3``, ``True``, ``'mean'``."""
    return repr(value)


def format_name(entry: str, options: dict[str, Any]) -> str:
    """``entry(key=value, ...)``, or the bare entry name when ``options`` is empty."""
    if not options:
        return entry
    return f"{entry}({', '.join(f'{key}={option_text(value)}' for key, value in options.items())})"


def bind_options(entry: Any, options: dict[str, Any], functions: tuple[str, ...]) -> Any:
    """A copy of dataclass ``entry`` whose ``functions`` (those that are set) take ``options``
    as keyword arguments: the usual ``with_options`` of an entry with several functions."""
    return dataclasses.replace(entry, **{
        name: functools.partial(getattr(entry, name), **options)
        for name in functions if callable(getattr(entry, name))})


def _check_default(where: str, key: Any, default: Any) -> None:
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"{where}: an option name must be an identifier, got {key!r}")
    if type(default) not in OPTION_TYPES or (isinstance(default, float) and not math.isfinite(default)):
        raise TypeError(f"{where}: option {key!r} needs a default of type bool, int, float or "
                        f"str (finite), which is also its type; got {default!r}")


def _coerce(value: Any, default: Any) -> Any:
    """``value`` as an option of ``default``'s type (an int may stand for a float), or raise."""
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise TypeError(f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value + 0.0 if kind is float else value   # -0.0 is 0.0: one spelling, one run id


# ---------------------------------------------------------------------------- the registry

class Registry(Mapping[str, Entry], Generic[Entry]):
    """A name -> entry mapping for one axis, with helpful errors.

    ``fields``: the config fields whose values name entries of this registry (default: the
    axis itself, where it is a config field); they enter the table of :func:`axes`.
    Its keys are the entries' bare names; ``get``, ``in`` and the per-entry look-ups also take
    a name with options (see the module docstring).
    """

    def __init__(self, axis: str, *, fields: tuple[str, ...] | None = None):
        self.axis = axis
        self.fields = tuple(fields if fields is not None
                            else (axis,) if axis in field_names() else ())
        self._entries: dict[str, Entry] = {}
        self._docs: dict[str, str] = {}
        self._origin: dict[str, str] = {}
        self._options: dict[str, dict[str, Any]] = {}
        for name in self.fields:
            if name in _AXES:
                raise ValueError(f"config field {name!r} already names {_AXES[name].axis} entries")
            _AXES[name] = self

    def register(self, name: str, entry: Entry, *, doc: str | None = None,
                 origin: str | None = None, options: dict[str, Any] | None = None) -> Entry:
        """Add ``entry`` under ``name``; a name that exists already is an error.

        ``options``: the entry's own hyperparameters, name -> default (a bool, int, float or
        str, whose type the option's values must have); a config names them as
        ``name(key=value, ...)`` and the entry's code receives them (see :meth:`get`).
        """
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
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"{self.axis} {name!r}: options must be a dict of option name -> "
                            f"default, got {options!r}")
        for key, default in (options or {}).items():
            _check_default(f"{self.axis} {name!r}", key, default)
        if options and not (hasattr(entry, "with_options") or callable(entry)):
            raise TypeError(f"{self.axis} {name!r}: this entry cannot receive options (it is "
                            "neither callable nor has a with_options method)")
        self._entries[name] = entry
        self._docs[name] = text
        self._origin[name] = current_origin() if origin in (None, "vgbench") else origin
        self._options[name] = dict(options or {})
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (used by tests that register temporary entries)."""
        self._entries.pop(name, None)
        self._docs.pop(name, None)
        self._origin.pop(name, None)
        self._options.pop(name, None)

    # -- names with options -----------------------------------------------------------------
    def parse(self, name: str, *, field: str | None = None) -> tuple[str, dict[str, Any]]:
        """The entry a name calls for and the values of all its options (defaults filled in).

        ``"elu(alpha=0.5)"`` -> ``("elu", {"alpha": 0.5})``; ``"elu"`` -> ``("elu", {"alpha":
        1.0})``. An unknown entry or option, a value of the wrong type or an unreadable name
        raise one error naming ``field`` (default: the axis) and the valid choices.
        """
        where = field or self.axis
        if not isinstance(name, str):
            raise TypeError(f"{where} must be a string naming one of {self.names()}, "
                            f"got {type(name).__name__} {name!r}")
        entry, paren, rest = name.partition("(")
        entry = entry.strip()
        if entry not in self._entries:
            raise ValueError(self.unknown_message(name, field=field))
        declared = self._options[entry]
        if not paren:
            return entry, dict(declared)
        if not declared:
            raise ValueError(f"{where} {name!r}: {entry} takes no options; write {entry!r}")
        given = self._read_options(name, entry, rest, where)
        values = dict(declared)
        for key, value in given.items():
            if key not in declared:
                shown = ", ".join(f"{k}={option_text(v)}" for k, v in declared.items())
                raise ValueError(f"{where} {name!r}: unknown option {key!r}; {entry}'s options "
                                 f"(at their defaults): {shown}{did_you_mean(key, declared)}")
            try:
                values[key] = _coerce(value, declared[key])
            except (TypeError, ValueError) as err:
                raise type(err)(f"{where} {name!r}: option {key} {err}") from None
        return entry, values

    def _read_options(self, name: str, entry: str, rest: str, where: str) -> dict[str, Any]:
        """The ``key=value`` pairs between the parentheses of ``entry(...)``."""
        usage = f"write {self.signature(entry)} with the values you want"
        inner = rest.rstrip()
        if not inner.endswith(")"):
            raise ValueError(f"{where} {name!r}: cannot read its options; {usage}")
        try:
            call = ast.parse(f"_({inner[:-1]})", mode="eval").body
        except SyntaxError:
            raise ValueError(f"{where} {name!r}: cannot read its options; {usage}") from None
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise ValueError(f"{where} {name!r}: options are given by name; {usage}")
        given = {}
        for keyword in call.keywords:
            try:
                given[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                raise ValueError(f"{where} {name!r}: option {keyword.arg}: "
                                 f"{ast.unparse(keyword.value)!r} is not a number, a quoted "
                                 f"string, True or False") from None
        return given

    def canonical(self, name: str, *, field: str | None = None) -> str:
        """The one spelling of a name: its options in declared order, those at their default
        left out (``"elu(alpha=1)"`` -> ``"elu"``, ``"elu(alpha=.5)"`` -> ``"elu(alpha=0.5)"``)."""
        entry, values = self.parse(name, field=field)
        declared = self._options[entry]
        return format_name(entry, {k: v for k, v in values.items() if v != declared[k]})

    def base(self, name: str, *, field: str | None = None) -> str:
        """The bare entry name of a name with or without options."""
        return self.parse(name, field=field)[0]

    def options(self, name: str) -> dict[str, Any]:
        """The options entry ``name`` declares, with their defaults (empty: none)."""
        return dict(self._options[self.base(name)])

    def signature(self, name: str) -> str:
        """An entry with its options at their defaults, as a config would write it:
        ``elu(alpha=1.0)``; the bare name for an entry without options."""
        entry = self.base(name)
        return format_name(entry, self._options[entry])

    # -- look-up ------------------------------------------------------------------------------
    def get(self, name: str, *, field: str | None = None) -> Entry:
        """The entry called ``name``; unknown names raise ValueError listing the valid ones.

        For an entry that declares options, the entry with their values (``name``'s, else the
        defaults) given to its code: a callable entry comes back as
        ``functools.partial(entry, **options)``, any other as ``entry.with_options(options)``.
        ``field``: the config field that named it, for the message (default: the axis).
        """
        entry, values = self.parse(name, field=field)
        found = self._entries[entry]
        if not values:
            return found
        if hasattr(found, "with_options"):
            return found.with_options(values)
        return functools.partial(found, **values)

    def unknown_message(self, name: Any, *, field: str | None = None) -> str:
        entry = name.partition("(")[0].strip() if isinstance(name, str) else name
        return (f"unknown {field or self.axis} {name!r}; valid choices: {', '.join(self.names())}"
                f"{did_you_mean(entry, self.names())}")

    def names(self) -> list[str]:
        return list(self._entries)

    def doc(self, name: str) -> str:
        return self._docs[self.base(name)]

    def summary(self, name: str) -> str:
        return first_line(self.doc(name))

    def origin(self, name: str) -> str:
        return self._origin[self.base(name)]

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` (bare or with options) is a valid name of an entry."""
        try:
            self.parse(name)
        except (TypeError, ValueError):
            return False
        return True

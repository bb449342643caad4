"""The config of one run: a frozen dataclass that validates itself and hashes to a run id.

It is the only thing that flows from a grid file or the command line into the code. Seeds are
not part of it: they are a vmapped axis of the compiled program.

This module is a leaf: it imports nothing of vgbench but :mod:`vgbench.names`. It checks what
a config is on its own (field names, types, ranges) and hashes it; what a config means beyond
that (a model's defaults, the valid entry names and their options, the plugins that made them)
is the registries' knowledge, and the registries import this module for the field names. So a
:class:`Resolver` carries that knowledge in: :mod:`vgbench.configs` installs it when
``vgbench`` is imported, before any caller can reach this module (see its docstring for why).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from vgbench.names import did_you_mean

SCHEMA = "vgbench.run/1"
LEAKY_SLOPE = 0.01   # leaky_relu's negative slope where a config does not set leaky_slope

# Fields whose value does not change the compiled training program (the initializer and its
# scales set the initial parameters, lr is an input of the program): runs that differ only in
# these share one compilation, and a grid may tune them (its [tune] section).
PROGRAM_INDEPENDENT = {"init": "naive", "sigma_w": 1.0, "sigma_b": 0.0, "lr": 1.0, "target": None}
TUNABLE = ("lr", "sigma_w", "sigma_b")


def _field(default: Any, help: str) -> Any:
    """A config field with its one-line meaning (shown by ``vgbench train --help``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, init=False)
class RunSpec:
    """Every knob of one training run. Field names are the CLI flags and grid keys.

    Fields a config leaves out take the model's defaults first (``register_model(...,
    defaults=)``: ``RunSpec(model="rnn")`` is a tanh RNN on the adding task), then the defaults
    below; so the command line, grid files and Python build the same config from the same
    fields. Entry names are checked and kept in their canonical form (an entry's options at
    their defaults left out: ``activation="elu(alpha=1.0)"`` is ``"elu"``).

    A new field takes a default that does what every run did before the field existed, and
    that default never changes: run ids hash a later field only where it differs from its
    default (:data:`ID_FIELDS_V1`), so adding it keeps every stored record's id. A
    hyperparameter of one entry is not a field but an option of that entry
    (:mod:`vgbench.registry`: ``activation="elu(alpha=0.5)"``); ``leaky_slope`` is the one
    such field, kept so that its runs keep their ids.
    """

    task: str = _field("digits", "the task: its data, loss and success target")
    model: str = _field("mlp", "the network")
    depth: int = _field(4, "number of layers (recurrent: stacked layers; cnn: odd, a stem "
                           "plus two convolutions per block)")
    width: int = _field(64, "units per hidden layer (cnn: channels; rnn: hidden state size)")
    activation: str = _field("relu", "the nonlinearity of every hidden layer")
    init: str = _field("he_normal", "the weight initializer")
    sigma_w: float = _field(1.0, "weight scale of the gain-aware initializers (gaussian, "
                                 "orthogonal, identity, ...)")
    sigma_b: float = _field(0.0, "bias standard deviation of the gaussian initializer")
    leaky_slope: float = _field(LEAKY_SLOPE, "negative slope of leaky_relu")
    norm: str = _field("none", "normalization layer after each hidden layer")
    skip: str = _field("none", "skip connection around each block")
    cell: str = _field("rnn", "the recurrent cell (recurrent models only)")
    recurrent_init: str = _field("orthogonal", "initializer of the recurrent weights "
                                               "(recurrent models only)")
    forget_bias: float = _field(1.0, "initial forget-gate bias of the LSTM")
    seq_len: int = _field(100, "sequence length T of the sequence tasks")
    input_dim: int = _field(64, "input size of the teacher task")
    input_scale: float = _field(1.0, "factor applied to the task's standardized inputs")
    optimizer: str = _field("sgd", "the optimizer")
    lr: float = _field(0.1, "learning rate")
    clip: str = _field("none", "gradient clipping rule")
    clip_threshold: float = _field(1.0, "threshold of the clipping rule")
    steps: int = _field(500, "training steps (0: diagnostics at initialization only)")
    batch_size: int = _field(128, "examples per training step")
    log_every: int = _field(25, "steps between log points; the last log point is always the "
                                "last step")
    target: float | None = _field(None, "success target of the task's metric (none: the task's own)")
    data_dir: str | None = _field(None, "folder of IDX files for mnist / fashion_mnist (diagnose: "
                                        "an .npz file of arrays x, y)")
    plugin_hash: str | None = field(default=None, metadata={"cli": False})

    def __init__(self, **given: Any):
        names = field_names()
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(unknown_field_message(unknown[0]))
        values = {**RunSpec.defaults(given.get("model")), **given}
        for name in names:
            object.__setattr__(self, name, values[name])
        self.__post_init__()

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            coerced = _check_type(f.name, value, _field_types()[f.name])
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        _check_ranges(self)
        for name, canonical in _RESOLVER.canonical_names(self).items():
            object.__setattr__(self, name, canonical)
        _RESOLVER.check(self)
        if self.plugin_hash is None:
            object.__setattr__(self, "plugin_hash", _RESOLVER.plugin_hash(self))

    @staticmethod
    def defaults(model: Any = None) -> dict[str, Any]:
        """Every field's default for a config of ``model`` (None: the default model)."""
        values = field_defaults()
        return {**values, **_RESOLVER.model_defaults(values["model"] if model is None else model)}

    # -- identity -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def run_id(self) -> str:
        """Stable hash of the config: the same fields always give the same id (see
        :func:`run_id_of`)."""
        return run_id_of(self.to_dict())

    def replace(self, **changes) -> "RunSpec":
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValueError(unknown_field_message(unknown[0]))
        changes.setdefault("plugin_hash", None)   # re-derived from the entries the new config names
        return dataclasses.replace(self, **changes)

    @property
    def log_steps(self) -> list[int]:
        """The training step of each log point: 0, log_every, 2 log_every, ..., and ``steps``.

        The last log point is always the end of training; when ``steps`` is not a multiple of
        ``log_every`` the last interval is the shorter remainder.
        """
        return log_steps(self.steps, self.log_every)

    @property
    def log_points(self) -> int:
        return len(self.log_steps)

    @classmethod
    def from_dict(cls, config: dict[str, Any], *, where: str = "config") -> "RunSpec":
        """Build from a mapping (a grid row, a record's config); unknown keys are an error."""
        if not isinstance(config, dict):
            raise TypeError(f"{where}: expected a table of config fields, got {type(config).__name__}")
        unknown = sorted(set(config) - set(field_names()))
        if unknown:
            raise ValueError(f"{where}: {unknown_field_message(unknown[0])}")
        try:
            return cls(**config)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunSpec:
        """The config of a stored record, its run id that of the record.

        A field the record lacks was added after it was written: the run did what that
        field's default does (:func:`stored_config`), whatever a model's default for it now is.
        """
        config = record.get("config")
        where = f"run {record.get('run_id')}"
        if not isinstance(config, dict):
            raise TypeError(f"{where}: its config is not a table of config fields")
        return cls.from_dict(stored_config(config), where=where)


def field_names() -> list[str]:
    return [f.name for f in fields(RunSpec)]


def field_defaults() -> dict[str, Any]:
    """Every field's own default, before a model's (no model is looked up: JAX-free)."""
    return {f.name: f.default for f in fields(RunSpec)}


def log_steps(steps: int, log_every: int) -> list[int]:
    """The training step of each log point of a run (see ``RunSpec.log_steps``)."""
    points = list(range(0, steps + 1, log_every))
    return points if points[-1] == steps else [*points, steps]


# The config's fields when run ids became robust to new fields: every id hashes them,
# whatever their values, as every id before did. Frozen: never remove or rename one (every
# stored id would change). A field added since enters the hash only where its value differs
# from its default (id_config).
ID_FIELDS_V1 = (
    "task", "model", "depth", "width", "activation", "init", "sigma_w", "sigma_b", "leaky_slope",
    "norm", "skip", "cell", "recurrent_init", "forget_bias", "seq_len", "input_dim",
    "input_scale", "optimizer", "lr", "clip", "clip_threshold", "steps", "batch_size",
    "log_every", "target", "data_dir", "plugin_hash",
)


def id_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config its run id hashes, and that tells two stored configs apart.

    Every field of :data:`ID_FIELDS_V1`, and a field added since only where its value differs
    from its default; a field the config lacks counts as at its default. Why: a record stores
    the config it was run with, so one made before a field existed lacks it, and it ran as the
    field's default does (a new field's default is, by rule, the behaviour before it). Hashing
    a later field at its default would change every id when the field is added and run every
    stored record again; leaving it out gives such a config the id it had, while a value that
    changes the run changes the id. The V1 fields stay hashed whatever their value so that the
    ids made before this rule stay what they were. (Keys that are no field of the config are
    hashed too, as they always were.)
    """
    defaults = field_defaults()
    return {key: value for key, value in config.items()
            if key in ID_FIELDS_V1 or key not in defaults or value != defaults[key]}


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored record's config with the fields added since it was written, at their defaults."""
    defaults = field_defaults()
    return {**{key: defaults[key] for key in defaults if key not in ID_FIELDS_V1}, **config}


def run_id_of(config: dict[str, Any]) -> str:
    """The run id of a complete config (every field, as ``RunSpec.to_dict`` gives it): a hash
    of its :func:`id_config`."""
    blob = json.dumps({"schema": SCHEMA, "config": id_config(config)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def seeds_from(value: Any) -> tuple[int, ...]:
    """Seeds from a count ``n`` (seeds 0..n-1) or a list of distinct integers."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return tuple(range(value))
    if (isinstance(value, list) and value
            and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
            and len(set(value)) == len(value)):
        return tuple(value)
    raise ValueError(f"expected a count >= 1 (seeds 0..n-1) or a list of distinct integers, "
                     f"got {value!r}")


def unknown_field_message(name: str) -> str:
    return (f"unknown config field {name!r}; valid fields: {', '.join(field_names())}"
            f"{did_you_mean(name, field_names())}")


class Resolver(NamedTuple):
    """What a config needs to know of the registries (:mod:`vgbench.configs` installs one).

    model_defaults: ``model_defaults(model) -> dict``, the config fields a run of the model a
      config names takes where it does not set them; empty for a name that is no model (the
      name check then rejects it with the valid names).
    canonical_names: ``canonical_names(spec) -> {field: name}``, every entry name of the config
      in its canonical form; an unknown name or option raises with the valid choices.
    check: ``check(spec)`` raises ValueError where the fields do not fit the model.
    plugin_hash: ``plugin_hash(spec)``, the hash of the plugins whose entries it names, or None.
    """

    model_defaults: Callable[[Any], dict[str, Any]]
    canonical_names: Callable[[Any], dict[str, str]]
    check: Callable[[Any], None]
    plugin_hash: Callable[[Any], str | None]


# the resolver of a bare spec module: no model defaults, no name checks, no plugins
_RESOLVER = Resolver(model_defaults=lambda model: {}, canonical_names=lambda spec: {},
                     check=lambda spec: None, plugin_hash=lambda spec: None)


def set_resolver(resolver: Resolver) -> None:
    """Install what configs read of the registries (done by :mod:`vgbench.configs`)."""
    global _RESOLVER
    _RESOLVER = resolver


_TYPES: dict[str, Any] | None = None


def _field_types() -> dict[str, Any]:
    global _TYPES
    if _TYPES is None:
        _TYPES = typing.get_type_hints(RunSpec)
    return _TYPES


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Validate ``value`` against the field's annotation; ints may stand for floats."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None and optional:
        return None
    ok = False
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is str:
        ok = isinstance(value, str)
    if not ok:
        want = base.__name__ + (" or null" if optional else "")
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    return value


MAX_DEPTH = 1024


def _check_ranges(s: RunSpec) -> None:
    def need(cond: bool, msg: str):
        if not cond:
            raise ValueError(msg)

    need(1 <= s.depth <= MAX_DEPTH, f"depth must be in 1..{MAX_DEPTH}, got {s.depth}")
    need(s.width >= 1, f"width must be >= 1, got {s.width}")
    need(s.steps >= 0, f"steps must be >= 0, got {s.steps}")
    need(s.batch_size >= 1, f"batch_size must be >= 1, got {s.batch_size}")
    need(s.log_every >= 1, f"log_every must be >= 1, got {s.log_every}")
    need(s.lr > 0, f"lr must be > 0, got {s.lr}")
    need(s.clip_threshold > 0, f"clip_threshold must be > 0, got {s.clip_threshold}")
    need(s.sigma_w >= 0 and s.sigma_b >= 0, "sigma_w and sigma_b must be >= 0")
    need(s.seq_len >= 1, f"seq_len must be >= 1, got {s.seq_len}")
    need(s.input_dim >= 1, f"input_dim must be >= 1, got {s.input_dim}")
    need(s.input_scale > 0, f"input_scale must be > 0, got {s.input_scale}")

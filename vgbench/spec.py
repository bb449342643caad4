"""The config of one run: a frozen dataclass that validates itself and hashes to a run id.

It is the only thing that flows from a grid file or the command line into the code. Seeds are
not part of it: they are a vmapped axis of the compiled program.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA = "vgbench.run/1"

# Fields whose value does not change the compiled training program (the initializer and its
# scales set the initial parameters, lr is an input of the program): runs that differ only in
# these share one compilation, and a grid may tune them (its [tune] section).
PROGRAM_INDEPENDENT = {"init": "naive", "sigma_w": 1.0, "sigma_b": 0.0, "lr": 1.0, "target": None}
TUNABLE = ("lr", "sigma_w", "sigma_b")


@dataclass(frozen=True)
class RunSpec:
    """Every knob of one training run. Field names are the CLI flags and grid keys."""

    task: str = "digits"
    model: str = "mlp"
    depth: int = 4
    width: int = 64
    activation: str = "relu"
    init: str = "he_normal"
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    leaky_slope: float = 0.01
    norm: str = "none"
    skip: str = "none"
    cell: str = "rnn"
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0
    seq_len: int = 100
    input_dim: int = 64
    input_scale: float = 1.0
    optimizer: str = "sgd"
    lr: float = 0.1
    clip: str = "none"
    clip_threshold: float = 1.0
    steps: int = 500
    batch_size: int = 128
    log_every: int = 25
    target: float | None = None
    data_dir: str | None = None
    plugin_hash: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            coerced = _check_type(f.name, value, _field_types()[f.name])
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        _check_ranges(self)
        _check_names(self)
        if self.plugin_hash is None:
            from vgbench import plugins

            object.__setattr__(self, "plugin_hash", plugins.hash_for(self))

    # -- identity -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def run_id(self) -> str:
        """Stable hash of the config: the same fields always give the same id."""
        blob = json.dumps({"schema": SCHEMA, "config": self.to_dict()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

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
        steps = list(range(0, self.steps + 1, self.log_every))
        return steps if steps[-1] == self.steps else [*steps, self.steps]

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


def field_names() -> list[str]:
    return [f.name for f in fields(RunSpec)]


def unknown_field_message(name: str) -> str:
    import difflib

    near = difflib.get_close_matches(name, field_names(), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown config field {name!r}; valid fields: {', '.join(field_names())}{hint}"


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


def _check_names(s: RunSpec) -> None:
    from vgbench import activations, inits, models, norms, optimizers, tasks

    activations.ACTIVATIONS.get(s.activation)
    inits.INITIALIZERS.get(s.init)
    norms.NORMS.get(s.norm)
    norms.SKIPS.get(s.skip)
    optimizers.OPTIMIZERS.get(s.optimizer)
    optimizers.CLIPS.get(s.clip)
    tasks.TASKS.get(s.task)
    models.MODELS.get(s.model)
    models.check_compatible(s)

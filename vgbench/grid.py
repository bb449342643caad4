"""Grid files: one TOML file per study, expanded into the runs of that study.

A grid file has these parts (all optional except at least one run)::

    [study]                      # or the same keys at the top level
    name = "initialization"      # default: the file's stem
    description = "..."
    seeds = 3                    # a count (seeds 0..n-1) or a list of distinct integers
    baseline = {init = "naive"}  # the reference entry of paired comparisons
    plugins = ["my_inits.py"]    # files (relative to this file) or module names, imported first
    steps = 300                  # any config field here is a fixed field, like [fixed]

    [fixed]                      # config fields shared by every run
    task = "digits"

    [axes]                       # the product of these lists is the grid
    depth = [2, 8, 32]
    activation_init = [          # a zipped axis: fields that vary together
      {activation = "tanh", init = "xavier_normal", label = "matched"},
      {activation = "relu", init = "he_normal", label = "matched"},
    ]

    [[exclude]]                  # drop product entries matching every key (a value or a list)
    depth = 32
    activation = "tanh"

    [[include]]                  # add runs: fixed fields + these (lists expand as a product)
    depth = 64
    activation_init = {activation = "relu", init = "he_normal"}

    [tune]                       # every run at each of these values, on the tuning seeds; per
    lr = [0.01, 0.03, 0.1, 0.3]  # entry and setting the best on the validation split is then
    seeds = 2                    # run again on the study's own (confirmation) seeds
    limits = {lr = [1e-4, 3.0]}  # an end value that wins is extended one step at a time up to
    extend = 2                   # these limits and at most this many steps per side

    [[tune.when]]                # the runs that match every key (a value or a list) are tried
    depth = [32, 64]             # at these values instead; the first rule that matches applies
    lr = [0.001, 0.003, 0.01, 0.03]

A ``[tune]`` field (``lr``, ``sigma_w`` or ``sigma_b``: fields that do not change the compiled
program, so all of an entry's values share one compilation) is not an entry axis: each entry
is reported at its own chosen value (see :mod:`vgbench.report.tuning` for the rule). Each run
carries the values it was tried at (``Run.tuning``, the record's ``tuning``): a ``[[tune.when]]``
rule gives the settings where the best value lies elsewhere (deep networks want smaller
learning rates) their own range, so that every grid can bracket its optimum.

Tune, then confirm: a tuned study's runs first run at every tuned value on the *tuning seeds*
(``tune.seeds``, default 2: seeds 0, 1). Per entry and setting the runner picks the winner on
validation (:mod:`vgbench.selection`); a winner at an end of its range that beats its
neighbour gets the range extended one step that way (same ratio, or the next value of a 1-3
series), until it is inside, a ``tune.limits`` bound or the ``tune.extend`` budget stops it,
or the entry learned nothing at any value (at chance). The chosen configuration then runs on
the *confirmation seeds* (``study.seeds``; a count n means seeds 1000..1000+n-1, so that they
never meet the tuning seeds) and every table reports those. A study without ``[tune]`` runs
its configs on ``study.seeds`` (a count n: seeds 0..n-1) once.

``study.baseline`` names config fields (``{init = "naive"}``); each entry is compared with the
entry that matches the baseline and shares its values on the other entry axes, or on the axes
``study.compare_within`` names. A baseline that matches no run, or leaves an entry without a
baseline to compare with, is an error naming the file and key.

A suite file lists study files instead: ``[suite] studies = ["a.toml", "b.toml"]``.

Every mistake (a missing file, bad TOML, an unknown key, axis or value, a wrong type, an
empty product) raises one :class:`GridError` naming the file, the key and the valid choices,
before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgbench import registry, selection
from vgbench import spec as spec_mod
from vgbench.names import did_you_mean
from vgbench.spec import RunSpec

STUDY_KEYS = ("name", "description", "seeds", "baseline", "compare_within", "plugins")
TUNE_KEYS = ("seeds", "limits", "extend", "when")   # [tune] keys that are not tuned fields
DEFAULT_TUNE_SEEDS = 2
DEFAULT_EXTEND = 2
CONFIRM_SEED_START = 1000   # a count of confirmation seeds n means 1000..1000+n-1
SECTIONS = ("study", "fixed", "axes", "exclude", "include", "tune")
LABEL = "label"   # in a zipped axis entry: the value the axis itself takes in grid_axes


CONFIRM_SUFFIX = selection.CONFIRM_SUFFIX
SETTING_AXES = ("task", "depth", "seq_len")   # not entry axes: the reporter's task and frontier


class GridError(ValueError):
    """A grid file that cannot be expanded; the message names the file and the key."""


@dataclass(frozen=True)
class Run:
    """One config of a study, with the seeds to run and its coordinates on the grid's axes."""

    spec: RunSpec
    seeds: tuple[int, ...]
    grid_axes: dict[str, Any] = field(hash=False, compare=False)
    tuning: dict[str, list] = field(default_factory=dict, hash=False, compare=False)  # values tried
    role: str = "study"     # "study" (untuned), "tune" (a candidate value) or "confirm"
    group: str = ""         # the entry and setting: runs that differ only in their tuned values
    chosen: dict = field(default_factory=dict, hash=False, compare=False)   # confirm: the choice

    @property
    def run_id(self) -> str:
        """The config's hash; a confirmation run's record is kept apart from the tuning run of
        the same config (other seeds, another role) under the hash with ``-confirm``."""
        return self.spec.run_id + (CONFIRM_SUFFIX if self.role == "confirm" else "")


@dataclass(frozen=True)
class Grid:
    """An expanded study: its metadata and its runs, in grid-file order."""

    path: str
    name: str
    description: str
    grid_hash: str
    seeds: tuple[int, ...]            # the study's seeds: the confirmation seeds of a tuned study
    baseline: dict[str, Any] | None
    plugins: tuple[str, ...]          # resolved: absolute file paths or module names
    axes: tuple[str, ...]             # the keys that vary across the study's runs
    runs: tuple[Run, ...]             # a tuned study: the tuning runs (role "tune")
    tuning: dict[str, list] = field(default_factory=dict)   # [tune]: field -> values tried
    tuning_when: tuple[dict, ...] = ()   # [[tune.when]] rules: {"match": {...}, "values": {...}}
    tune_seeds: tuple[int, ...] = ()  # the seeds that choose; never reported in tables
    limits: dict[str, tuple] = field(default_factory=dict)   # tuned field -> (low, high)
    extend: int = 0                   # most extension steps per entry, setting and side
    compare_within: tuple[str, ...] | None = None   # the entry axes a baseline is matched on

    def meta(self) -> dict[str, Any]:
        """Fields every record of this study carries besides the run's own (``tuning``: the
        [tune] values; a record carries its own run's, :attr:`Run.tuning`)."""
        return {"study": self.name, "grid_hash": self.grid_hash, "study_baseline": self.baseline,
                "compare_within": list(self.compare_within) if self.compare_within else None,
                "tuning": dict(self.tuning)}

    def protocol(self) -> dict[str, Any]:
        """The tune-then-confirm protocol of a tuned study, as records and manifests carry it."""
        if not self.tuning:
            return {}
        return {"tune_seeds": list(self.tune_seeds), "confirm_seeds": list(self.seeds),
                "limits": {k: list(v) for k, v in self.limits.items()}, "extend": self.extend}


# ---------------------------------------------------------------------------- helpers

def grid_fields() -> list[str]:
    """Config fields a grid file may set (those the command line has too)."""
    return [f.name for f in dataclasses.fields(RunSpec) if f.metadata.get("cli", True)]


def canonical_hash(content: Any) -> str:
    """Hash of parsed TOML content (key order, comments and layout do not count)."""
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Checker:
    """Checks one field value on its own: type, then registered name (returned in its
    canonical form, so that ``elu(alpha=1.0)`` and ``elu`` are one value everywhere)."""

    def __init__(self, where: str):
        self.where = where
        self.registries = registry.axes()
        self.fields = grid_fields()
        self.types = spec_mod._field_types()

    def key(self, key: str, ctx: str, extra=()) -> None:
        if key not in self.fields and key not in extra:
            valid = ", ".join([*extra, *self.fields])
            raise GridError(f"{self.where}: {ctx}: unknown key {key!r}; valid keys: {valid}"
                            f"{did_you_mean(key, [*extra, *self.fields])}")

    def value(self, key: str, value: Any, ctx: str) -> Any:
        try:
            value = spec_mod._check_type(key, value, self.types[key])
            if key in self.registries and value is not None:
                value = self.registries[key].canonical(value, field=key)
        except (TypeError, ValueError) as err:
            raise GridError(f"{self.where}: {ctx}: {err}") from None
        return value

    def rule_value(self, key: str, value: Any, ctx: str) -> Any:
        """A rule's value for ``key``: one value or a list of values, each checked."""
        if isinstance(value, list):
            return [self.value(key, x, ctx) for x in value]
        return self.value(key, value, ctx)


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise GridError(f"{where}.{LABEL}: a label must be a non-empty string, got {value!r}")
    return value


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _resolved(combo: dict, fixed: dict) -> dict:
    """A combination's full config: the model's defaults, the fixed fields, the combination."""
    config = {**fixed, **combo}
    return {**RunSpec.defaults(config.get("model")), **config}


def _matches(rule: dict, combo: dict) -> bool:
    return all(combo.get(k, _MISSING) in _as_list(v) for k, v in rule.items())


_MISSING = object()


def _parse_seeds(value: Any, where: str, start: int = 0) -> tuple[int, ...]:
    try:
        seeds = spec_mod.seeds_from(value)
    except ValueError as err:
        raise GridError(f"{where}: study.seeds: {err}") from None
    return tuple(start + s for s in seeds) if isinstance(value, int) else seeds


# ---------------------------------------------------------------------------- loading

def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; a missing or malformed file is a GridError naming it."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a grid file" if path.is_dir() else "does not exist"
        raise GridError(f"{path}: grid file {what}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise GridError(f"{path}: not valid TOML: {err}") from None


def load(path: str | Path) -> Grid:
    """Read, validate and expand one study's grid file."""
    path = Path(path)
    content = read_toml(path)
    where = str(path)
    if "suite" in content:
        raise GridError(f"{where}: is a suite file (it has [suite]); use load_many")
    study, fixed, sources = _study_and_fixed(content, _Checker(where))

    name = study.get("name", path.stem)
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise GridError(f"{where}: study.name must be an identifier-like string, got {name!r}")
    description = study.get("description", "")
    if not isinstance(description, str):
        raise GridError(f"{where}: study.description must be a string, got {description!r}")
    tune_table = content.get("tune")
    tuned = isinstance(tune_table, dict) and bool(set(tune_table) - set(TUNE_KEYS))
    seeds = _parse_seeds(study.get("seeds", 1), where,
                         start=CONFIRM_SEED_START if tuned and isinstance(study.get("seeds", 1), int) else 0)
    # each spec takes the hash of the plugins whose entries it names (RunSpec.plugin_hash)
    resolved = _load_plugins(study.get("plugins", []), path, where)
    check = _Checker(where)          # the plugins may have registered new names

    axes_table = content.get("axes", {})
    axes, zipped = _axes(axes_table, fixed, sources, check)
    tuning, when = _tune(tune_table, fixed, sources, axes, zipped, check)
    tune_seeds, limits, extend = _protocol(tune_table, tuning, when, seeds, where)
    if axes:
        combos = [_combine(parts) for parts in itertools.product(*axes.values())]
    else:   # without axes the fixed fields are one run, unless [[include]] lists the runs
        combos = [] if content.get("include") else [{}]
    combos = _exclude(combos, content.get("exclude", []), fixed, zipped, check)
    if axes_table and not combos and not content.get("include"):
        raise GridError(f"{where}: exclude rules remove every run of the grid")
    combos += _include(content.get("include", []), zipped, check)
    if not combos:
        raise GridError(f"{where}: the grid has no runs")
    # every run at every tuned value of its grid, value innermost
    tried = _values_tried(combos, tuning, when, fixed, where)
    combos = [{**combo, **dict(zip(grid, values))} for combo, grid in zip(combos, tried)
              for values in itertools.product(*grid.values())]
    tried = [grid for grid in tried for _ in itertools.product(*grid.values())]

    expanded = _expand(combos, fixed, where)
    varying = _varying_keys([(spec, combo) for spec, combo, _ in expanded])
    role = "tune" if tuning else "study"
    runs = tuple(Run(spec=spec, seeds=tune_seeds if tuning else seeds,
                     grid_axes={k: _value(spec, combo, k) for k in varying},
                     tuning=tried[i], role=role, group=_group_key(combo, tuning))
                 for spec, combo, i in expanded)
    baseline = _baseline(study.get("baseline"), check, where)
    within = _compare_within(study.get("compare_within"), baseline, varying, where)
    _check_baseline(baseline, within, runs, varying, where)
    return Grid(path=where, name=name, description=description,
                grid_hash=canonical_hash(content), seeds=seeds,
                baseline=baseline, plugins=resolved, axes=varying, runs=runs, tuning=tuning,
                tuning_when=tuple({"match": m, "values": v} for m, v in when),
                tune_seeds=tune_seeds, limits=limits, extend=extend, compare_within=within)


def _group_key(combo: dict, tuning: dict) -> str:
    """The entry and setting of a combination: its keys other than the tuned fields."""
    return canonical_hash({k: v for k, v in combo.items() if k not in tuning})


def _protocol(table, tuning: dict, when: list, seeds: tuple, where: str):
    """[tune] seeds, limits and extend: (tuning seeds, field -> (low, high), extend)."""
    if not tuning:
        return (), {}, 0
    try:
        tune_seeds = spec_mod.seeds_from(table.get("seeds", DEFAULT_TUNE_SEEDS))
    except ValueError as err:
        raise GridError(f"{where}: tune.seeds: {err}") from None
    overlap = sorted(set(tune_seeds) & set(seeds))
    if overlap:
        raise GridError(f"{where}: study.seeds: the confirmation seeds {list(seeds)} share "
                        f"{overlap} with the tuning seeds (tune.seeds = {list(tune_seeds)}); a "
                        "seed that helped choose cannot report. Give study.seeds as a count "
                        f"(seeds {CONFIRM_SEED_START}, {CONFIRM_SEED_START + 1}, ...) or disjoint lists")
    extend = table.get("extend", DEFAULT_EXTEND)
    if isinstance(extend, bool) or not isinstance(extend, int) or extend < 0:
        raise GridError(f"{where}: tune.extend: expected a count >= 0 of extension steps per "
                        f"side, got {extend!r}")
    raw = table.get("limits", {})
    if not isinstance(raw, dict):
        raise GridError(f"{where}: tune.limits: expected a table such as "
                        f"{{lr = [1e-4, 3.0]}}, got {raw!r}")
    limits = {}
    for key, bounds in raw.items():
        ctx = f"tune.limits.{key}"
        if key not in tuning:
            raise GridError(f"{where}: {ctx}: {key!r} is not a tuned field; tuned: "
                            f"{', '.join(tuning)}{did_you_mean(key, list(tuning))}")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not bounds[0] < bounds[1]):
            raise GridError(f"{where}: {ctx}: expected [low, high] with low < high, got {bounds!r}")
        low, high = float(bounds[0]), float(bounds[1])
        ranges = [("tune." + key, tuning[key])] + [(f"tune.when[{i}].{key}", v[key])
                                                    for i, (_, v) in enumerate(when) if key in v]
        for name, values in ranges:
            if min(values) < low or max(values) > high:
                raise GridError(f"{where}: {ctx}: [{low:g}, {high:g}] leaves out values of "
                                f"{name} ({', '.join(f'{v:g}' for v in values)}); a limit lies "
                                "beyond the values tried, on their own side")
        limits[key] = (low, high)
    return tune_seeds, limits, extend


def _compare_within(value, baseline, axes: tuple, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if baseline is None:
        raise GridError(f"{where}: study.compare_within: needs study.baseline (what each "
                        "group's entries are compared with)")
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise GridError(f"{where}: study.compare_within: expected a list of axis names, got {value!r}")
    for a in value:
        if a not in axes:
            raise GridError(f"{where}: study.compare_within: {a!r} is not an axis that varies "
                            f"in this study; axes: {', '.join(axes)}{did_you_mean(a, list(axes))}")
    return tuple(value)


def _run_field(run: Run, key: str):
    return run.grid_axes.get(key, getattr(run.spec, key, None))


def _check_baseline(baseline, within, runs, axes, where: str) -> None:
    """A declared baseline must match runs, through an axis, and every comparison group must
    hold one: otherwise an entry would be compared with something other than what was declared."""
    if baseline is None:
        return
    for key, value in baseline.items():
        if not any(_run_field(r, key) == value for r in runs):
            seen = sorted({str(_run_field(r, key)) for r in runs})
            raise GridError(f"{where}: study.baseline.{key}: no run has {key} = {value!r}; "
                            f"the runs have {', '.join(seen)}")
    if all(selection.is_baseline({**r.spec.to_dict(), **r.grid_axes}, baseline) for r in runs):
        raise GridError(f"{where}: study.baseline: every run matches {baseline}, so it picks no "
                        "baseline among the entries; name a field that varies")
    tuned = set(runs[0].tuning) if runs else set()
    axes = [a for a in axes if a not in tuned]
    rows = [{**r.spec.to_dict(), **r.grid_axes} for r in runs]
    on = selection.comparison_axes(rows, baseline, [a for a in axes if a not in SETTING_AXES], within)
    on += ["task"] if "task" in axes else []
    groups: dict[str, bool] = {}
    for row in rows:
        key = json.dumps({a: row.get(a) for a in on}, sort_keys=True, default=str)
        groups[key] = groups.get(key, False) or selection.is_baseline(row, baseline)
    missing = [k for k, has in groups.items() if not has]
    if missing:
        raise GridError(f"{where}: study.baseline: no run matches {baseline} among the runs with "
                        f"{missing[0]}; every entry needs its baseline beside it "
                        "(add it to the grid, or group with study.compare_within)")


def _study_and_fixed(content: dict, check: _Checker) -> tuple[dict, dict, dict]:
    """Study keys and fixed fields from the top level, [study] and [fixed]; where each came from."""
    where, fields = check.where, set(check.fields)
    study, fixed, sources = {}, {}, {}
    for key, value in content.items():
        if key in SECTIONS and key != "study":
            continue
        if key == "study":
            if not isinstance(value, dict):
                raise GridError(f"{where}: study must be a table, got {value!r}")
            items, ctx = value.items(), "study"
        else:
            items, ctx = [(key, value)], "top level"
        for k, v in items:
            if k in STUDY_KEYS:
                target = study
            elif k in fields:
                target = fixed
            else:
                valid = [*STUDY_KEYS, *(SECTIONS if ctx == "top level" else ()), *check.fields]
                raise GridError(f"{where}: {ctx}: unknown key {k!r}; valid keys: {', '.join(valid)}"
                                f"{did_you_mean(k, valid)}")
            if k in target:
                raise GridError(f"{where}: {k!r} is given twice (at the top level and in [study])")
            target[k] = v
            sources[k] = f"{'study.' if ctx == 'study' else ''}{k}"

    fixed_table = content.get("fixed", {})
    if not isinstance(fixed_table, dict):
        raise GridError(f"{where}: fixed must be a table of config fields, got {fixed_table!r}")
    for k, v in fixed_table.items():
        check.key(k, "fixed")
        if k in fixed:
            raise GridError(f"{where}: fixed.{k}: also given as {sources[k]}; give it once")
        fixed[k] = v
        sources[k] = f"fixed.{k}"
    for k, v in list(fixed.items()):
        fixed[k] = check.value(k, v, sources[k])
    return study, fixed, sources


def _zipped_entry(table: dict, axis: str, ctx: str, check: _Checker) -> dict:
    """One value of a zipped axis: its fields, checked, and its label under the axis name."""
    if not table:
        raise GridError(f"{check.where}: {ctx}: an empty table sets nothing")
    entry = {}
    for k, x in table.items():
        check.key(k, ctx, extra=(LABEL,))
        if k == LABEL:
            entry[axis] = _label(x, f"{check.where}: {ctx}")
        else:
            entry[k] = check.value(k, x, f"{ctx}.{k}")
    return entry


def _axes(table: Any, fixed: dict, sources: dict,
          check: _Checker) -> tuple[dict[str, list[dict]], set[str]]:
    """Axis name -> its values as {key: value} dicts; and the names of the zipped axes."""
    where = check.where
    if not isinstance(table, dict):
        raise GridError(f"{where}: axes must be a table of named value lists, got {table!r}")
    axes: dict[str, list[dict]] = {}
    zipped: set[str] = set()
    owner: dict[str, str] = {}
    for axis, values in table.items():
        ctx = f"axes.{axis}"
        if not isinstance(values, list):
            raise GridError(f"{where}: {ctx}: expected a list of values, got {values!r}")
        if not values:
            raise GridError(f"{where}: {ctx}: the list is empty, so the grid has no runs")
        if axis in check.fields:
            entries = [{axis: check.value(axis, v, f"{ctx}[{i}]")} for i, v in enumerate(values)]
        elif all(isinstance(v, dict) for v in values):
            entries = [_zipped_entry(v, axis, f"{ctx}[{i}]", check) for i, v in enumerate(values)]
            zipped.add(axis)
        else:
            raise GridError(
                f"{where}: {ctx}: unknown axis {axis!r}{did_you_mean(axis, check.fields) or '.'} An axis is a "
                f"config field ({', '.join(check.fields)}) or a list of tables of fields that "
                "vary together")
        set_fields = {k for e in entries for k in e} - ({axis} if axis in zipped else set())
        for k in sorted(set_fields):
            if k in fixed:
                raise GridError(f"{where}: {ctx}: field {k!r} is also fixed ({sources[k]}); "
                                "make it either fixed or an axis")
            if k in owner:
                raise GridError(f"{where}: {ctx}: field {k!r} is already set by axes.{owner[k]}")
            owner[k] = axis
        axes[axis] = entries
    return axes, zipped


def _tune(table: Any, fixed: dict, sources: dict, axes: dict, zipped: set,
          check: _Checker) -> tuple[dict[str, list], list[tuple[dict, dict]]]:
    """The [tune] section: field -> the distinct values every run is tried at; and its
    [[tune.when]] rules as (keys to match, field -> values) pairs."""
    from vgbench.spec import TUNABLE

    where = check.where
    if table is None:
        return {}, []
    if not isinstance(table, dict) or not set(table) - set(TUNE_KEYS):
        raise GridError(f"{where}: tune must be a table such as  [tune] lr = [0.01, 0.03, 0.1]; "
                        f"got {table!r}")
    set_by_axes = {k: axis for axis, entries in axes.items() for e in entries for k in e}
    tuning = {}
    for key, values in table.items():
        if key in TUNE_KEYS:
            continue
        ctx = f"tune.{key}"
        if key not in TUNABLE:
            why = ("it changes the compiled program, so its values could not share one "
                   "compilation; make it an axis" if key in check.fields else "unknown key")
            raise GridError(f"{where}: {ctx}: cannot tune {key!r} ({why}); tunable fields: "
                            f"{', '.join(TUNABLE)}{did_you_mean(key, [*TUNABLE, 'when'])}")
        if key in fixed:
            raise GridError(f"{where}: {ctx}: {key!r} is also fixed ({sources[key]}); a tuned "
                            "field takes only the [tune] values")
        if key in set_by_axes:
            raise GridError(f"{where}: {ctx}: {key!r} is also set by axes.{set_by_axes[key]}; "
                            "tune it or make it an axis, not both")
        tuning[key] = _tuned_values(key, values, ctx, check)
    when = []
    for i, rule in enumerate(_rules(table.get("when", []), "tune.when", where)):
        ctx = f"tune.when[{i}]"
        match, values = {}, {}
        for k, v in rule.items():
            if k in tuning:
                values[k] = _tuned_values(k, v, f"{ctx}.{k}", check)
            elif k in TUNABLE:
                raise GridError(f"{where}: {ctx}.{k}: {k!r} is not tuned by [tune]; a rule "
                                f"gives other values to the tuned fields ({', '.join(tuning)})")
            else:
                check.key(k, ctx, extra=tuple(zipped))
                match[k] = v if k in zipped else check.rule_value(k, v, f"{ctx}.{k}")
        if not values:
            raise GridError(f"{where}: {ctx}: gives no values; name a tuned field "
                            f"({', '.join(tuning)}) with the values to try where it matches")
        if not match:
            raise GridError(f"{where}: {ctx}: matches every run; name the runs it is for "
                            "(e.g. depth = [32, 64]), or change [tune] itself")
        when.append((match, values))
    return tuning, when


def _tuned_values(key: str, values: Any, ctx: str, check: _Checker) -> list:
    where = check.where
    if not isinstance(values, list) or not values:
        raise GridError(f"{where}: {ctx}: expected a non-empty list of values, got {values!r}")
    checked = []
    for i, v in enumerate(values):
        v = check.value(key, v, f"{ctx}[{i}]")
        if key == "lr" and not v > 0:
            raise GridError(f"{where}: {ctx}[{i}]: a learning rate must be > 0, got {v!r}")
        if v in checked:
            raise GridError(f"{where}: {ctx}: {v!r} is listed twice")
        checked.append(v)
    return sorted(checked)


def _values_tried(combos: list[dict], tuning: dict, when: list, fixed: dict,
                  where: str) -> list[dict[str, list]]:
    """Each combination's grid of tuned values: [tune], with the first matching rule's values."""
    used = [False] * len(when)
    grids = []
    for combo in combos:
        config = _resolved(combo, fixed)
        grid = dict(tuning)
        for i, (match, values) in enumerate(when):
            if _matches(match, config):
                grid.update(values)
                used[i] = True
                break
        grids.append(grid)
    for i, u in enumerate(used):
        if not u:
            raise GridError(f"{where}: tune.when[{i}] matches no run of the grid (or an earlier "
                            f"rule takes all it matches): {when[i][0]}")
    return grids


def _combine(parts) -> dict:
    combo: dict[str, Any] = {}
    for part in parts:
        combo.update(part)
    return combo


def _exclude(combos: list[dict], rules: Any, fixed: dict, zipped: set, check: _Checker) -> list[dict]:
    """Drop the combinations that match every key of a rule; a rule that matches none is an error."""
    for i, rule in enumerate(_rules(rules, "exclude", check.where)):
        for k in rule:
            check.key(k, f"exclude[{i}]", extra=tuple(zipped))
        rule = {k: v if k in zipped else check.rule_value(k, v, f"exclude[{i}].{k}")
                for k, v in rule.items()}
        before = len(combos)
        combos = [c for c in combos if not _matches(rule, _resolved(c, fixed))]
        if len(combos) == before:
            raise GridError(f"{check.where}: exclude[{i}] matches no run of the grid: {rule}")
    return combos


def _include(rules: Any, zipped: set, check: _Checker) -> list[dict]:
    """The runs [[include]] adds: each table's lists expand as a product."""
    combos = []
    for i, rule in enumerate(_rules(rules, "include", check.where)):
        choices = []
        for k, v in rule.items():
            ctx = f"include[{i}].{k}"
            if k in zipped:
                tables = _as_list(v)
                if not all(isinstance(t, dict) for t in tables):
                    raise GridError(f"{check.where}: {ctx}: a zipped axis takes tables of fields, "
                                    f"got {v!r}")
                choices.append([_zipped_entry(t, k, ctx, check) for t in tables])
            else:
                check.key(k, f"include[{i}]", extra=tuple(zipped))
                choices.append([{k: check.value(k, x, ctx)} for x in _as_list(v)])
        combos += [_combine(parts) for parts in itertools.product(*choices)]
    return combos


def _rules(value: Any, name: str, where: str) -> list[dict]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(r, dict) and r for r in value):
        raise GridError(f"{where}: {name}: expected [[{name}]] tables of fields, got {value!r}")
    return value


def _load_plugins(plugins: Any, path: Path, where: str) -> tuple[str, ...]:
    """Import the grid's plugins; return them as absolute file paths or module names."""
    from vgbench import plugins as plugin_mod

    if plugins == []:
        return ()
    try:
        plugin_mod.load(plugins, base=path.parent, where=f"{where}: study.plugins")
    except plugin_mod.PluginError as err:
        raise GridError(str(err)) from None
    return tuple(plugin_mod.resolve(ref, base=path.parent) for ref in plugins)


def _baseline(value: Any, check: _Checker, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise GridError(f"{where}: study.baseline must be a table of config fields, got {value!r}")
    baseline = {}
    for k, v in value.items():
        check.key(k, "study.baseline")
        checked = check.value(k, v, f"study.baseline.{k}")
        baseline[k] = checked if k in check.registries else v   # entry names: canonical
    return baseline


def _expand(combos: list[dict], fixed: dict, where: str) -> list[tuple[RunSpec, dict, int]]:
    """Specs of the combinations, in order, without duplicates (equal run ids); with each its
    combination and that combination's index."""
    fields = set(grid_fields())
    expanded, seen = [], set()
    for i, combo in enumerate(combos):
        # plugin_hash is derived by RunSpec: the source hash of exactly the plugins it names
        config = {**fixed, **{k: v for k, v in combo.items() if k in fields}}
        label = ", ".join(f"{k}={v!r}" for k, v in combo.items()) or "the fixed fields"
        try:
            spec = RunSpec.from_dict(config, where=f"{where}: run with {label}")
        except (TypeError, ValueError) as err:
            raise GridError(str(err)) from None
        if spec.run_id not in seen:
            seen.add(spec.run_id)
            expanded.append((spec, combo, i))
    return expanded


def _varying_keys(expanded: list[tuple[RunSpec, dict]]) -> tuple[str, ...]:
    """Keys (fields and zipped-axis labels) that take more than one value across the runs."""
    keys: dict[str, None] = {}
    for _, combo in expanded:
        keys.update(dict.fromkeys(combo))
    return tuple(k for k in keys if len({json.dumps(_value(spec, combo, k), sort_keys=True)
                                          for spec, combo in expanded}) > 1)


def _value(spec: RunSpec, combo: dict, key: str) -> Any:
    if key in combo:
        return combo[key]
    return getattr(spec, key, None)


# ---------------------------------------------------------------------------- suites

def is_suite(path: str | Path) -> bool:
    return "suite" in read_toml(path)


def study_files(path: str | Path) -> list[Path]:
    """The study files a path names: itself, or the files a suite file lists."""
    path = Path(path)
    content = read_toml(path)
    if "suite" not in content:
        return [path]
    suite = content["suite"]
    extra = sorted(set(content) - {"suite"})
    if extra:
        raise GridError(f"{path}: a suite file holds only [suite]; unexpected key {extra[0]!r}")
    if not isinstance(suite, dict) or set(suite) - {"name", "description", "studies"}:
        bad = sorted(set(suite) - {"name", "description", "studies"}) if isinstance(suite, dict) else suite
        raise GridError(f"{path}: suite: unknown key {bad[0]!r}; valid keys: name, description, studies"
                        if isinstance(suite, dict) else f"{path}: suite must be a table")
    studies = suite.get("studies")
    if not isinstance(studies, list) or not studies or not all(isinstance(s, str) for s in studies):
        raise GridError(f"{path}: suite.studies must be a non-empty list of grid file paths, "
                        f"got {studies!r}")
    files = []
    for s in studies:
        file = (path.parent / s) if not Path(s).is_absolute() else Path(s)
        if not file.is_file():
            raise GridError(f"{path}: suite.studies: grid file {str(file)!r} does not exist")
        files.append(file)
    return files


def load_many(paths) -> list[Grid]:
    """Load every study that the paths name (suite files expand to their studies)."""
    paths = list(paths)
    if not paths:
        raise GridError("no grid file given")
    files: list[Path] = []
    for p in paths:
        files += [f for f in study_files(p) if f.resolve() not in {x.resolve() for x in files}]
    grids = [load(f) for f in files]
    names: dict[str, str] = {}
    for g in grids:
        if g.name in names:
            raise GridError(f"{g.path}: study name {g.name!r} is also used by {names[g.name]}; "
                            "study names must be unique")
        names[g.name] = g.path
    return grids


def check_fit(grids) -> None:
    """Build the task and the model of one run per (model, task, data_dir) of ``grids``: a
    model that cannot take a task's inputs (a recurrent model on images) or a task whose data
    is missing is a GridError naming the file and the run, before anything runs. Nothing is
    compiled; a sequence task draws its fixed evaluation sets."""
    from vgbench import models, tasks

    seen: set[tuple] = set()
    for g in grids:
        for run in g.runs:
            spec = run.spec
            key = (spec.model, spec.task, spec.data_dir)
            if key in seen:
                continue
            seen.add(key)
            try:
                models.make(spec, tasks.make(spec))
            except (ValueError, TypeError, OSError) as err:
                where = ", ".join(f"{k}={v!r}" for k, v in run.grid_axes.items()) or "the fixed fields"
                raise GridError(f"{g.path}: run with {where} (model {spec.model!r}, task "
                                f"{spec.task!r}): {err}") from None

"""What a model is: the :class:`Model` bundle, the model registry and each model's facts.

The built-in models (:mod:`vgbench.models.mlp`, ``cnn``, ``rnn``) and plugins import this
module to register themselves; :mod:`vgbench.models` imports them and builds models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from vgbench.registry import Registry
from vgbench.spec import field_names


class Model(NamedTuple):
    """A functional model (see :mod:`vgbench.models`)."""

    init: Callable
    apply: Callable
    layer_names: tuple[str, ...]
    probes: Callable
    probe_stats: Callable
    per_layer: Callable
    weight_samples: Callable
    compute_layout: Callable | None = None
    layer_axes: Callable | None = None
    info: dict | None = None   # what the run record says of the probes (adapted models: coverage,
                               # signal path), plain data


MODELS: Registry[Callable] = Registry("model")

INPUT_LAYOUTS = ("flat", "channels")   # one vector per example; or axes then channels last
DEFAULT_COST_PER_LAYER_STEP = 4e-5      # seconds per layer and step of a width-64 MLP, laptop CPU


class ModelFacts(NamedTuple):
    """What is true of a model beyond its factory: the rest of the code reads it from here."""

    check: Callable | None = None      # check(spec) rejects configs that do not fit, early
    defaults: dict = {}                # config fields a run takes where it does not set them
    input_layout: str = "flat"         # how it views a task's examples (INPUT_LAYOUTS, laid_out)
    cost: Callable | None = None       # cost(spec): rough seconds per training step, one core
    describe: tuple[str, ...] = ()     # config fields that tell its runs apart in a summary
    mean_field: bool = False           # a stack of dense layers that mean-field theory describes
    eval_chunk: int | None = None      # most examples per forward pass when evaluating (None: all)
    batch_split: bool = False          # split a training batch over the process's CPU devices


_FACTS: dict[str, ModelFacts] = {}


def register_model(name: str, make: Callable, *, check: Callable | None = None,
                   defaults: dict | None = None, input_layout: str = "flat",
                   cost: Callable | None = None, describe: tuple[str, ...] = (),
                   mean_field: bool = False, eval_chunk: int | None = None,
                   batch_split: bool = False, doc: str | None = None,
                   options: dict | None = None, origin: str = "vgbench") -> Callable:
    """Register a factory ``make(spec, task) -> Model``; ``check(spec)`` may reject configs early.

    ``defaults``: config fields a run of this model takes where its config does not set them,
    e.g. ``{"task": "adding"}`` for a model that needs sequences; ``RunSpec`` applies them, so
    the command line, grid files and Python agree. ``input_layout``: ``"flat"`` (the model
    takes one vector per example) or ``"channels"`` (spatial or time axes, then channels
    last); tasks give their natural shapes and ``vgbench.models.make`` views them so
    (``vgbench.models.laid_out``).
    ``cost(spec)``: rough seconds per training step on one CPU core (default: depth x 4e-5),
    used to balance workers. ``describe``: config fields a run summary names for this model.
    ``mean_field``: the model is a stack of dense layers of ``width`` units that mean-field
    theory describes; its records then carry the theory's inputs (``record.theory_inputs``).
    ``eval_chunk``: evaluation (validation and test sets at every log point) runs the model on
    at most this many examples per forward pass, in equal chunks (None: the whole set at once),
    counted over all the entries (seeds, learning rates) one program vmaps: with 8 vmapped
    entries each evaluates 1/8 as many at a time (entries that run in sequence, on one CPU
    device, each take the whole chunk). Evaluation sets are 10-30 training batches: a
    convolution's patches for all of them at once overflow the CPU caches, so the CNN
    evaluates in chunks (measurements: docs/running.md, "Convolutions").
    ``batch_split``: on a CPU with several JAX devices (one per core, see ``vgbench``), each
    training step, and each evaluation, splits its batch over them: every core then runs a
    slice of the batch through the whole step, and XLA sums the gradients (the values are those
    of the unsplit batch up to float rounding). Worth it where a step is a long chain of small
    matmuls that one core runs at its peak and two cannot share: the recurrent step
    (``benchmarks/perf_rnn.py``). The MLP and CNN leave it off: their steps were slower split.
    ``options``: the model's own hyperparameters, name -> default; a config names them as
    ``model="name(key=value)"`` and ``make`` receives them as keyword arguments
    (:mod:`vgbench.registry`).
    """
    if not callable(make):
        raise TypeError(f"model {name!r}: make must be callable")
    if defaults is not None and not isinstance(defaults, dict):
        raise TypeError(f"model {name!r}: defaults must be a dict of config fields, got {defaults!r}")
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"model {name!r}: input_layout must be one of {', '.join(INPUT_LAYOUTS)}, "
                         f"got {input_layout!r}")
    for key in [*(defaults or {}), *describe]:
        if key not in field_names():
            raise ValueError(f"model {name!r}: {key!r} is not a config field; valid fields: "
                             f"{', '.join(field_names())}")
    if eval_chunk is not None and (not isinstance(eval_chunk, int) or eval_chunk < 1):
        raise ValueError(f"model {name!r}: eval_chunk must be a positive int or None, got {eval_chunk!r}")
    if not isinstance(batch_split, bool):
        raise TypeError(f"model {name!r}: batch_split must be True or False, got {batch_split!r}")
    MODELS.register(name, make, doc=doc, origin=origin, options=options)
    _FACTS[name] = ModelFacts(check=check, defaults=dict(defaults or {}), input_layout=input_layout,
                              cost=cost, describe=tuple(describe), mean_field=bool(mean_field),
                              eval_chunk=eval_chunk, batch_split=batch_split)
    return make


def facts(name: str) -> ModelFacts:
    """The registered facts of model ``name`` (an unknown name: the registry's error)."""
    return _FACTS.get(MODELS.base(name, field="model"), ModelFacts())


def model_defaults(name: str) -> dict:
    """The config fields model ``name`` takes where a config does not set them."""
    return dict(facts(name).defaults)


def input_layout(name: str) -> str:
    """``"flat"`` or ``"channels"``: how model ``name`` views one example (``vgbench.models.laid_out``)."""
    return facts(name).input_layout


def step_cost(spec) -> float:
    """Rough seconds per training step of ``spec`` on one CPU core."""
    cost = facts(spec.model).cost
    return cost(spec) if cost is not None else spec.depth * DEFAULT_COST_PER_LAYER_STEP


def describe(spec) -> str:
    """The fields beyond the common ones that tell a run of this model apart (``cell=lstm ...``)."""
    return " ".join(f"{key}={getattr(spec, key)}" for key in facts(spec.model).describe)


def check_compatible(spec) -> None:
    """Raise ValueError if the spec's fields do not fit its model."""
    check = facts(spec.model).check
    if check is not None:
        check(spec)

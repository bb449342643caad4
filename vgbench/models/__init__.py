"""Functional model factories: ``make(spec, task) -> Model`` of pure functions.

A :class:`Model` bundles::

    init(key) -> (params, state)
    apply(params, state, x, *, train, probes=None) -> (out, new_state, stats)
    probes(batch_size) -> pytree of zeros, one per layer pre-activation
    probe_stats(probe_grads) -> {"delta_norm": [L], ...}
    per_layer(tree) -> [L]    Frobenius norm of each layer's slice of a params-shaped tree
    weight_samples(params) -> [L, K]   a few fixed weights per layer
    compute_layout(params) -> params   (optional) the layout the training program carries;
                                       apply, per_layer and weight_samples accept it too
    layer_axes(params) -> ints         (optional) per leaf, its number of leading stacked-layer
                                       axes, so per-layer gradient transforms (agc) see layers

``apply`` adds each probe to the matching pre-activation, so the gradient of the loss with
respect to the probes is the backpropagated signal dL/dh_l in one backward pass. When probes
are given it also returns forward statistics per layer (``act_rms``, ``saturation``,
``dead_fraction``; NaN where a statistic does not apply) and any model-specific extras.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from vgbench.registry import Registry


class Model(NamedTuple):
    """A functional model (see the module docstring)."""

    init: Callable
    apply: Callable
    layer_names: tuple[str, ...]
    probes: Callable
    probe_stats: Callable
    per_layer: Callable
    weight_samples: Callable
    compute_layout: Callable | None = None
    layer_axes: Callable | None = None


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
                   origin: str = "vgbench") -> Callable:
    """Register a factory ``make(spec, task) -> Model``; ``check(spec)`` may reject configs early.

    ``defaults``: config fields a run of this model takes where its config does not set them,
    e.g. ``{"task": "adding"}`` for a model that needs sequences; ``RunSpec`` applies them, so
    the command line, grid files and Python agree. ``input_layout``: ``"flat"`` (the model
    takes one vector per example) or ``"channels"`` (spatial or time axes, then channels
    last); tasks give their natural shapes and :func:`make` views them so (:func:`laid_out`).
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
    """
    if not callable(make):
        raise TypeError(f"model {name!r}: make must be callable")
    if defaults is not None and not isinstance(defaults, dict):
        raise TypeError(f"model {name!r}: defaults must be a dict of config fields, got {defaults!r}")
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"model {name!r}: input_layout must be one of {', '.join(INPUT_LAYOUTS)}, "
                         f"got {input_layout!r}")
    from vgbench.spec import field_names

    for key in [*(defaults or {}), *describe]:
        if key not in field_names():
            raise ValueError(f"model {name!r}: {key!r} is not a config field; valid fields: "
                             f"{', '.join(field_names())}")
    if eval_chunk is not None and (not isinstance(eval_chunk, int) or eval_chunk < 1):
        raise ValueError(f"model {name!r}: eval_chunk must be a positive int or None, got {eval_chunk!r}")
    if not isinstance(batch_split, bool):
        raise TypeError(f"model {name!r}: batch_split must be True or False, got {batch_split!r}")
    MODELS.register(name, make, doc=doc, origin=origin)
    _FACTS[name] = ModelFacts(check=check, defaults=dict(defaults or {}), input_layout=input_layout,
                              cost=cost, describe=tuple(describe), mean_field=bool(mean_field),
                              eval_chunk=eval_chunk, batch_split=batch_split)
    return make


def facts(name: str) -> ModelFacts:
    """The registered facts of model ``name`` (an unknown name: the registry's error)."""
    MODELS.get(name, field="model")
    return _FACTS.get(name, ModelFacts())


def model_defaults(name: str) -> dict:
    """The config fields model ``name`` takes where a config does not set them."""
    return dict(facts(name).defaults)


def input_layout(name: str) -> str:
    """``"flat"`` or ``"channels"``: how model ``name`` views one example (:func:`laid_out`)."""
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


def laid_out(input_shape: tuple[int, ...], layout: str, where: str) -> tuple[int, ...]:
    """The per-example shape a model of ``layout`` sees for a task's natural ``input_shape``.

    ``"flat"``: one vector, the example's entries in row-major order. ``"channels"``: the
    natural shape when it has axes then channels (an image ``(H, W, C)``, a signal or
    sequence ``(T, C)``); a plain vector of square length d is viewed as a one-channel
    ``sqrt(d) x sqrt(d)`` image. Raises ValueError naming ``where`` otherwise.
    """
    shape = tuple(int(n) for n in input_shape)
    if layout == "flat":
        return (int(math.prod(shape)),)
    if len(shape) >= 2:
        return shape
    side = math.isqrt(shape[0])
    if side * side != shape[0]:
        raise ValueError(f"{where}: a model with channels-last inputs needs axes then channels, "
                         f"or a vector of square length to view as an image; got {shape}")
    return (side, side, 1)


def make(spec, task) -> Model:
    """Build the model a run spec names, for the task's input and output shapes.

    Tasks give examples in their natural shape (an image, a signal, a sequence, a vector);
    the model declares the layout it takes (``input_layout``), and the model built here takes
    natural-shaped inputs and views them in its layout itself (a reshape, free under jit).
    """
    shape = laid_out(task.input_shape, input_layout(spec.model),
                     f"model {spec.model!r} on task {task.name!r}")
    if shape == tuple(task.input_shape):
        return MODELS.get(spec.model)(spec, task)
    model = MODELS.get(spec.model)(spec, task._replace(input_shape=shape))
    apply = model.apply

    def apply_laid_out(params, state, x, *args, **kwargs):
        return apply(params, state, x.reshape((*x.shape[:x.ndim - len(task.input_shape)], *shape)),
                     *args, **kwargs)

    return model._replace(apply=apply_laid_out)


from vgbench.models import cnn as _cnn  # noqa: E402,F401  (built-ins register themselves)
from vgbench.models import mlp as _mlp  # noqa: E402,F401
from vgbench.models import rnn as _rnn  # noqa: E402,F401

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
_COMPAT: dict[str, Callable] = {}
_DEFAULTS: dict[str, dict] = {}


def register_model(name: str, make: Callable, *, check: Callable | None = None,
                   defaults: dict | None = None, doc: str | None = None,
                   origin: str = "vgbench") -> Callable:
    """Register a factory ``make(spec, task) -> Model``; ``check(spec)`` may reject configs early.

    ``defaults``: config fields a run of this model takes where ``vgbench train`` is not given
    them, e.g. ``{"task": "adding"}`` for a model that needs sequences.
    """
    if not callable(make):
        raise TypeError(f"model {name!r}: make must be callable")
    if defaults is not None and not isinstance(defaults, dict):
        raise TypeError(f"model {name!r}: defaults must be a dict of config fields, got {defaults!r}")
    MODELS.register(name, make, doc=doc, origin=origin)
    if check is not None:
        _COMPAT[name] = check
    _DEFAULTS[name] = dict(defaults or {})
    return make


def model_defaults(name: str) -> dict:
    """The config fields model ``name`` takes where a command line does not give them."""
    MODELS.get(name)   # an unknown name: the registry's error, with the valid names
    return dict(_DEFAULTS.get(name, {}))


def check_compatible(spec) -> None:
    """Raise ValueError if the spec's fields do not fit its model."""
    check = _COMPAT.get(spec.model)
    if check is not None:
        check(spec)


def make(spec, task) -> Model:
    """Build the model a run spec names, for the task's input and output shapes."""
    return MODELS.get(spec.model)(spec, task)


from vgbench.models import cnn as _cnn  # noqa: E402,F401  (built-ins register themselves)
from vgbench.models import mlp as _mlp  # noqa: E402,F401
from vgbench.models import rnn as _rnn  # noqa: E402,F401

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

# the built-in models register themselves on import
from vgbench.models import cnn as _cnn  # noqa: F401
from vgbench.models import mlp as _mlp  # noqa: F401
from vgbench.models import rnn as _rnn  # noqa: F401
from vgbench.models.base import (  # noqa: F401
    _FACTS,
    DEFAULT_COST_PER_LAYER_STEP,
    INPUT_LAYOUTS,
    MODELS,
    Model,
    ModelFacts,
    check_compatible,
    describe,
    facts,
    input_layout,
    model_defaults,
    register_model,
    step_cost,
)


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


"""Optimizers and gradient transforms (clipping): two registries of optax factories.

An optimizer entry is ``make(lr) -> optax.GradientTransformation``; ``lr`` may be a traced
scalar, so runs that differ only in learning rate share one compiled program.
A clip entry is ``make(threshold) -> optax.GradientTransformation`` applied to the raw
gradient before the optimizer (``clip`` and ``clip_threshold`` in the config). An entry
registered with ``per_layer=True`` (such as ``agc``) is a stateless leaf-wise transform that
must see one layer at a time: where a model stacks identical layers on a leading axis, it is
mapped over that axis, so its units never pool entries of different layers.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from vgbench.registry import Registry

OPTIMIZERS: Registry[Callable] = Registry("optimizer")
CLIPS: Registry[Callable] = Registry("clip")
PER_LAYER_CLIPS: set[str] = set()


def register_optimizer(name: str, make: Callable, *, doc: str | None = None,
                       options: dict | None = None, origin: str = "vgbench") -> Callable:
    """Register ``make(lr) -> optax.GradientTransformation`` under ``name``.

    ``options``: its own hyperparameters, name -> default (see :mod:`vgbench.registry`);
    ``make`` receives them as keyword arguments.
    """
    if not callable(make):
        raise TypeError(f"optimizer {name!r}: make must be callable")
    return OPTIMIZERS.register(name, make, doc=doc, origin=origin, options=options)


def register_clip(name: str, make: Callable, *, doc: str | None = None, per_layer: bool = False,
                  options: dict | None = None, origin: str = "vgbench") -> Callable:
    """Register a gradient transform ``make(threshold) -> optax.GradientTransformation``.

    ``per_layer=True`` marks a stateless leaf-wise transform that must see each layer's arrays
    alone (see the module docstring). ``options``: its own hyperparameters, name -> default
    (see :mod:`vgbench.registry`); ``make`` receives them as keyword arguments.
    """
    if not callable(make):
        raise TypeError(f"clip {name!r}: make must be callable")
    CLIPS.register(name, make, doc=doc, origin=origin, options=options)
    if per_layer:
        PER_LAYER_CLIPS.add(name)
    return make


def sgd(lr):
    """Plain stochastic gradient descent (Robbins & Monro 1951)."""
    return optax.sgd(lr)


def momentum(lr):
    """SGD with heavy-ball momentum 0.9 (Polyak 1964; Sutskever et al. 2013)."""
    return optax.sgd(lr, momentum=0.9)


def rmsprop(lr):
    """RMSProp, decay 0.9 (Tieleman & Hinton 2012)."""
    return optax.rmsprop(lr, decay=0.9)


def adam(lr):
    """Adam, betas (0.9, 0.999) (Kingma & Ba 2015)."""
    return optax.adam(lr)


def no_clip(threshold):
    """No gradient clipping."""
    return optax.identity()


def global_norm(threshold):
    """Rescale the whole gradient when its global norm exceeds the threshold (Pascanu et al. 2013)."""
    return optax.clip_by_global_norm(threshold)


def by_value(threshold):
    """Clip every gradient entry to [-threshold, threshold] (Mikolov 2012)."""
    return optax.clip(threshold)


def agc(threshold):
    """Adaptive gradient clipping: unit-wise ||g||/||w|| capped at the threshold, e.g. 0.01 (Brock et al. 2021)."""
    return optax.adaptive_grad_clip(threshold)


for _fn in (sgd, momentum, rmsprop, adam):
    register_optimizer(_fn.__name__, _fn)
register_clip("none", no_clip)
register_clip("agc", agc, per_layer=True)
register_clip("global_norm", global_norm)
register_clip("value", by_value)


def per_layer(inner: optax.GradientTransformation, layer_axes) -> optax.GradientTransformation:
    """Apply a stateless leaf-wise transform to each layer alone.

    ``layer_axes`` gives, per parameter leaf, its number of leading stacked-layer axes; the
    transform is mapped over those axes, so a stack of L layers is clipped as L layers.
    """
    def update(updates, state, params=None):
        if params is None:
            raise ValueError("a per-layer gradient transform needs the parameters")

        def one(u, p, axes):
            def f(u, p):
                return inner.update(u, inner.init(p), p)[0]
            for _ in range(axes):
                f = jax.vmap(f)
            return f(u, p)

        return jax.tree_util.tree_map(one, updates, params, layer_axes), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(spec, lr, layer_axes=None) -> optax.GradientTransformation:
    """The run's gradient transformation: the clip transform, then the optimizer.

    ``layer_axes`` (from ``Model.layer_axes``) tells a per-layer clip where layers are stacked.
    """
    clip = CLIPS.get(spec.clip)(spec.clip_threshold)
    if CLIPS.base(spec.clip) in PER_LAYER_CLIPS and layer_axes is not None:
        clip = per_layer(clip, layer_axes)
    return optax.chain(clip, OPTIMIZERS.get(spec.optimizer)(lr))

"""Optimizers and gradient transforms (clipping): two registries of optax factories.

An optimizer entry is ``make(lr) -> optax.GradientTransformation``; ``lr`` may be a traced
scalar, so runs that differ only in learning rate share one compiled program.
A clip entry is ``make(threshold) -> optax.GradientTransformation`` applied to the raw
gradient before the optimizer (``clip`` and ``clip_threshold`` in the config).
"""

from __future__ import annotations

from collections.abc import Callable

import optax

from vgbench.registry import Registry

OPTIMIZERS: Registry[Callable] = Registry("optimizer")
CLIPS: Registry[Callable] = Registry("clip")


def register_optimizer(name: str, make: Callable, *, doc: str | None = None,
                       origin: str = "vgbench") -> Callable:
    """Register ``make(lr) -> optax.GradientTransformation`` under ``name``."""
    if not callable(make):
        raise TypeError(f"optimizer {name!r}: make must be callable")
    return OPTIMIZERS.register(name, make, doc=doc, origin=origin)


def register_clip(name: str, make: Callable, *, doc: str | None = None,
                  origin: str = "vgbench") -> Callable:
    """Register a gradient transform ``make(threshold) -> optax.GradientTransformation``."""
    if not callable(make):
        raise TypeError(f"clip {name!r}: make must be callable")
    return CLIPS.register(name, make, doc=doc, origin=origin)


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


for _fn in (sgd, momentum, rmsprop, adam):
    register_optimizer(_fn.__name__, _fn)
def agc(threshold):
    """Adaptive gradient clipping: unit-wise ||g||/||w|| capped at the threshold, e.g. 0.01 (Brock et al. 2021)."""
    return optax.adaptive_grad_clip(threshold)


register_clip("none", no_clip)
register_clip("agc", agc)
register_clip("global_norm", global_norm)
register_clip("value", by_value)


def build(spec, lr) -> optax.GradientTransformation:
    """The run's gradient transformation: the clip transform, then the optimizer."""
    clip = CLIPS.get(spec.clip)(spec.clip_threshold)
    return optax.chain(clip, OPTIMIZERS.get(spec.optimizer)(lr))

"""Normalization layers and skip connections: two registries of functional layer pieces.

A normalization entry is a :class:`Norm` of pure functions::

    init(width) -> (params, state)
    apply(params, state, z, *, train) -> (y, new_state)

``z`` has the feature (channel) axis last; batch statistics are taken over every other axis.
State (running averages) goes in and comes back out, never mutated in place.

A skip entry is a :class:`Skip`: ``init(width) -> params`` and ``apply(params, x, fx) -> y``,
combining a block's input ``x`` with its output ``fx`` (same shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

from vgbench.registry import Registry, bind_options

EPS = 1e-5


@dataclass(frozen=True)
class Norm:
    """A registered normalization (see the module docstring)."""

    init: Callable
    apply: Callable

    def with_options(self, options: dict) -> Norm:
        """This normalization with its options' values given to ``init`` and ``apply``."""
        return bind_options(self, options, ("init", "apply"))


@dataclass(frozen=True)
class Skip:
    """A registered skip connection (see the module docstring)."""

    init: Callable
    apply: Callable

    def with_options(self, options: dict) -> Skip:
        """This skip connection with its options' values given to ``init`` and ``apply``."""
        return bind_options(self, options, ("init", "apply"))


NORMS: Registry[Norm] = Registry("norm")
SKIPS: Registry[Skip] = Registry("skip")


def register_norm(name: str, init: Callable, apply: Callable, *, doc: str,
                  options: dict | None = None, origin: str = "vgbench") -> Norm:
    """Register a normalization from its ``init`` and ``apply`` functions.

    ``options``: its own hyperparameters, name -> default (see :mod:`vgbench.registry`);
    ``init`` and ``apply`` receive them as keyword arguments.
    """
    if not callable(init) or not callable(apply):
        raise TypeError(f"norm {name!r}: init and apply must be callables")
    return NORMS.register(name, Norm(init, apply), doc=doc, origin=origin, options=options)


def register_skip(name: str, apply: Callable, *, init: Callable | None = None, doc: str | None = None,
                  options: dict | None = None, origin: str = "vgbench") -> Skip:
    """Register a skip connection ``apply(params, x, fx)`` with optional parameter ``init(width)``.

    ``options``: its own hyperparameters, name -> default (see :mod:`vgbench.registry`);
    ``init`` and ``apply`` receive them as keyword arguments.
    """
    if not callable(apply):
        raise TypeError(f"skip {name!r}: apply must be callable")
    entry = Skip(init or (lambda width, **options: {}), apply)
    return SKIPS.register(name, entry, doc=doc if doc is not None else apply.__doc__, origin=origin,
                          options=options)


def get_norm(name: str) -> Norm:
    return NORMS.get(name)


def get_skip(name: str) -> Skip:
    return SKIPS.get(name)


# ---------------------------------------------------------------------------- normalizations

def _none_init(width):
    return {}, {}


def _none_apply(params, state, z, *, train):
    return z, state


def _bn_init(width):
    params = {"scale": jnp.ones((width,), jnp.float32), "shift": jnp.zeros((width,), jnp.float32)}
    state = {"mean": jnp.zeros((width,), jnp.float32), "var": jnp.ones((width,), jnp.float32)}
    return params, state


BN_MOMENTUM = 0.9


def _bn_apply(params, state, z, *, train):
    axes = tuple(range(z.ndim - 1))
    if train:
        mean = jnp.mean(z, axis=axes)
        var = jnp.mean(jnp.square(z - mean), axis=axes)
        new_state = {"mean": BN_MOMENTUM * state["mean"] + (1 - BN_MOMENTUM) * mean,
                     "var": BN_MOMENTUM * state["var"] + (1 - BN_MOMENTUM) * var}
    else:
        mean, var, new_state = state["mean"], state["var"], state
    y = (z - mean) * (params["scale"] / jnp.sqrt(var + EPS)) + params["shift"]
    return y, new_state


def _ln_init(width):
    return {"scale": jnp.ones((width,), jnp.float32), "shift": jnp.zeros((width,), jnp.float32)}, {}


def _ln_apply(params, state, z, *, train):
    axes = tuple(range(1, z.ndim))  # every axis but the batch axis (C for dense, H, W, C for conv)
    mean = jnp.mean(z, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=axes, keepdims=True)
    return (z - mean) / jnp.sqrt(var + EPS) * params["scale"] + params["shift"], state


register_norm("none", _none_init, _none_apply, doc="No normalization.")
register_norm("batchnorm", _bn_init, _bn_apply,
              doc="Batch normalization: batch statistics in training, running averages "
                  "(momentum 0.9) in evaluation (Ioffe & Szegedy 2015).")
register_norm("layernorm", _ln_init, _ln_apply,
              doc="Layer normalization over each example's features (Ba, Kiros & Hinton 2016).")


# ---------------------------------------------------------------------------- skip connections

def no_skip(params, x, fx):
    """No skip connection: a plain feed-forward stack."""
    return fx


def residual(params, x, fx):
    """Identity shortcut around each hidden block, y = x + f(x) (He et al. 2016)."""
    return x + fx


def skipinit(params, x, fx):
    """Residual with a learnable scalar gain on the branch, initialised at 0: y = x + a f(x) (De & Smith 2020)."""
    return x + params["gain"] * fx


register_skip("none", no_skip)
register_skip("residual", residual)
register_skip("skipinit", skipinit, init=lambda width: {"gain": jnp.zeros((), jnp.float32)})

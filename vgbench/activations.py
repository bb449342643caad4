"""Activation functions: the registry of nonlinearities and what the diagnostics need of them.

An entry is an :class:`Activation`: an elementwise function ``fn(x, **kw)`` plus the largest
absolute derivative it attains (a unit is *flat* on an example when its derivative is below
1 % of it), what its flat region is (a saturating tail or a switched-off side, which the
diagnostics count as tail saturation or as inactivity), the squared gain He initialization
should use with it, and, for activations with learnable parameters (PReLU), a per-layer
parameter initializer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from vgbench.registry import Registry, bind_options

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
FLAT_REGIONS = ("tail", "off", "none")


@dataclass(frozen=True)
class Activation:
    """A registered activation.

    fn: ``fn(x, **kw) -> y``, elementwise. ``kw`` holds ``theta`` (the layer's learnable
      parameters, when ``init_theta`` is given) and whatever ``hyper(spec)`` returns.
    derivative_max: sup over x of |fn'(x)|; a unit is flat on an example where |fn'| < 1 % of it.
    flat_region: where such a flat unit sits. ``"tail"``: a saturating tail, the output
      pinned near a bound (sigmoid, tanh, ELU's negative side; Glorot & Bengio 2010), counted
      as *tail saturation*; ``"off"``: the switched-off side of a rectifier (ReLU, GELU, SiLU
      below zero), counted as *inactive*, which is normal on about half the examples;
      ``"none"``: no flat region (identity); None: not declared (both counts are NaN).
    he_gain2: the squared gain He initialization uses (2 for ReLU; 2/(1+a^2) for leaky
      slope a); a float or a function of the run spec.
    init_theta: ``init_theta(width, spec) -> pytree`` of learnable per-layer parameters.
    hyper: ``hyper(spec) -> dict`` of fixed keyword arguments taken from the run config.

    An activation with options (``register_activation(..., options={"alpha": 1.0})``, named
    ``"elu(alpha=0.5)"`` in a config) gets their values as keyword arguments in ``fn``, and in
    ``derivative_max``, ``he_gain2`` and ``init_theta`` where these are functions.
    """

    fn: Callable[..., jax.Array]
    derivative_max: float | Callable[[Any], float] = 1.0
    he_gain2: float | Callable[[Any], float] = 2.0
    init_theta: Callable[[int, Any], Any] | None = None
    hyper: Callable[[Any], dict] | None = None
    flat_region: str | None = None

    def with_options(self, options: dict) -> Activation:
        """This activation with its options' values given to its functions."""
        return bind_options(self, options, ("fn", "derivative_max", "he_gain2", "init_theta"))

    def bind(self, spec) -> "BoundActivation":
        kw = dict(self.hyper(spec)) if self.hyper else {}
        fn, has_theta = self.fn, self.init_theta is not None

        def apply(x, theta=None):
            return fn(x, theta=theta, **kw) if has_theta else fn(x, **kw)

        dmax = self.derivative_max(spec) if callable(self.derivative_max) else self.derivative_max
        gain2 = self.he_gain2(spec) if callable(self.he_gain2) else self.he_gain2
        init = self.init_theta
        return BoundActivation(apply=apply, derivative_max=float(dmax), he_gain2=float(gain2),
                               init_theta=(lambda width: init(width, spec)) if init else (lambda width: None),
                               flat_region=self.flat_region)


@dataclass(frozen=True)
class BoundActivation:
    """An activation with its hyperparameters fixed by a run config."""

    apply: Callable[[jax.Array, Any], jax.Array]
    derivative_max: float
    he_gain2: float
    init_theta: Callable[[int], Any]
    flat_region: str | None = None

    def derivative(self, x, theta=None):
        """Elementwise derivative fn'(x), by forward-mode differentiation."""
        return jax.jvp(lambda v: self.apply(v, theta), (x,), (jnp.ones_like(x),))[1]


ACTIVATIONS: Registry[Activation] = Registry("activation")


def register_activation(name: str, fn: Callable, *, derivative_max=1.0, he_gain2=2.0,
                        init_theta=None, hyper=None, flat_region: str | None = None,
                        doc: str | None = None, options: dict | None = None,
                        origin: str = "vgbench") -> Activation:
    """Register an elementwise activation ``fn`` under ``name`` (see :class:`Activation`).

    ``options``: the activation's own hyperparameters, name -> default (see
    :mod:`vgbench.registry`); ``fn`` receives them as keyword arguments.
    """
    if not callable(fn):
        raise TypeError(f"activation {name!r}: fn must be callable, got {type(fn).__name__}")
    if flat_region is not None and flat_region not in FLAT_REGIONS:
        raise ValueError(f"activation {name!r}: flat_region must be one of "
                         f"{', '.join(FLAT_REGIONS)} or None, got {flat_region!r}")
    entry = Activation(fn=fn, derivative_max=derivative_max, he_gain2=he_gain2,
                       init_theta=init_theta, hyper=hyper, flat_region=flat_region)
    ACTIVATIONS.register(name, entry, doc=doc if doc is not None else fn.__doc__, origin=origin,
                         options=options)
    return entry


def get(name: str) -> Activation:
    return ACTIVATIONS.get(name)


# ---------------------------------------------------------------------------- built-in entries

def sigmoid(x):
    """Logistic sigmoid 1/(1+e^-x); saturates, derivative at most 1/4 (Rumelhart et al. 1986)."""
    return jax.nn.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent; saturates, derivative at most 1 (LeCun et al. 1998, Efficient BackProp)."""
    return jnp.tanh(x)


def relu(x):
    """Rectified linear unit max(0, x) (Nair & Hinton 2010; Glorot et al. 2011)."""
    return jax.nn.relu(x)   # derivative 0 at 0: one select, where jnp.maximum's splits ties


def leaky_relu(x, *, slope):
    """Leaky ReLU max(x, a x) with slope a from `leaky_slope` (Maas et al. 2013)."""
    return jnp.where(x >= 0, x, slope * x)


def prelu(x, *, theta):
    """Parametric ReLU: a learnable slope per unit, initialised at 0.25 (He et al. 2015)."""
    return jnp.where(x >= 0, x, theta * x)


def elu(x, *, alpha):
    """Exponential linear unit: x above 0, alpha (e^x - 1) below (Clevert et al. 2016)."""
    return jax.nn.elu(x, alpha)


def selu(x):
    """Scaled ELU, self-normalizing with LeCun-normal init (Klambauer et al. 2017)."""
    return SELU_SCALE * jnp.where(x > 0, x, SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0.0)))


def gelu(x):
    """Gaussian error linear unit x Phi(x), exact form (Hendrycks & Gimpel 2016)."""
    return jax.nn.gelu(x, approximate=False)


def silu(x):
    """SiLU / swish x sigmoid(x) (Elfwing et al. 2018; Ramachandran et al. 2017)."""
    return jax.nn.silu(x)


def softsign(x):
    """Softsign x/(1+|x|); saturates polynomially rather than exponentially (Glorot & Bengio 2010)."""
    return x / (1.0 + jnp.abs(x))


def hard_tanh(x):
    """Hard tanh clip(x, -1, 1); derivative exactly 0 outside [-1, 1] (Collobert 2004)."""
    return jnp.clip(x, -1.0, 1.0)


def identity(x):
    """Identity (a deep linear network; Saxe et al. 2014)."""
    return x


def _leaky_gain2(spec) -> float:
    return 2.0 / (1.0 + float(spec.leaky_slope) ** 2)


def _prelu_theta(width: int, spec):
    return jnp.full((width,), 0.25, dtype=jnp.float32)


# sup |gelu'| is attained near x = 1.4: 1.1289; sup |silu'| near x = 2.4: 1.0998.
register_activation("sigmoid", sigmoid, derivative_max=0.25, flat_region="tail")
register_activation("tanh", tanh, flat_region="tail")
register_activation("relu", relu, flat_region="off")
register_activation("leaky_relu", leaky_relu, he_gain2=_leaky_gain2,
                    derivative_max=lambda s: max(1.0, abs(float(s.leaky_slope))),
                    hyper=lambda s: {"slope": float(s.leaky_slope)}, flat_region="off")
register_activation("prelu", prelu, init_theta=_prelu_theta, he_gain2=2.0 / (1.0 + 0.25 ** 2),
                    flat_region="off")
register_activation("elu", elu, derivative_max=lambda s, alpha: max(1.0, abs(alpha)),
                    flat_region="tail", options={"alpha": 1.0})
register_activation("selu", selu, derivative_max=SELU_SCALE * SELU_ALPHA, flat_region="tail")
register_activation("gelu", gelu, derivative_max=1.1289, flat_region="off")
register_activation("silu", silu, derivative_max=1.0998, flat_region="off")
register_activation("softsign", softsign, flat_region="tail")
register_activation("hard_tanh", hard_tanh, flat_region="tail")
register_activation("identity", identity, flat_region="none")

assert math.isclose(SELU_SCALE * SELU_ALPHA, 1.7581, rel_tol=1e-4)

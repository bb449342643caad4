"""Activation functions: the registry of nonlinearities and what the diagnostics need of them.

An entry is an :class:`Activation`: an elementwise function ``fn(x, **kw)`` plus the largest
absolute derivative it attains (a unit is *flat* on an example when its derivative is below
1 % of it), what its flat region is (a saturating tail or a switched-off side, which the
diagnostics count as tail saturation or as inactivity), the squared gain He initialization
should use with it, and, for activations with learnable parameters (PReLU), a per-layer
parameter initializer.

Each built-in activation is written once, with its derivative, over an array namespace
``xp`` (:data:`JAX` by default, or :data:`NUMPY`): training runs it on JAX arrays, and
mean-field theory (:mod:`vgbench.theory`, which must not import JAX) runs the same code on
numpy arrays (:meth:`Activation.numpy_form`). This module imports JAX only when a JAX
function is first called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vgbench.registry import Registry, bind_options
from vgbench.spec import LEAKY_SLOPE  # noqa: F401  (the config's default, named here too)

PRELU_INIT_SLOPE = 0.25   # PReLU's learnable slope at initialization (He et al. 2015)
ELU_ALPHA = 1.0
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
SQRT_HALF = math.sqrt(0.5)
FLAT_REGIONS = ("tail", "off", "none")


class ArrayNamespace:
    """The array functions an activation is written with: numpy's or JAX's.

    An array module (numpy, jax.numpy) with the few functions it lacks added (``sigmoid``,
    ``relu``, ``erfc``), imported when first used.
    """

    def __init__(self, name: str, load: Callable[[], tuple[Any, dict[str, Callable]]]):
        self.name, self._load, self._found = name, load, None

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._found is None:
            self._found = self._load()
        module, added = self._found
        return added[attr] if attr in added else getattr(module, attr)

    def __repr__(self) -> str:
        return f"ArrayNamespace({self.name!r})"


def _numpy_functions():
    import numpy as np

    erfc = np.frompyfunc(math.erfc, 1, 1)
    return np, {"sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
                "relu": lambda x: np.maximum(x, 0.0),
                "erfc": lambda x: np.asarray(erfc(x), dtype=np.float64)}


def _jax_functions():
    import jax
    import jax.numpy as jnp

    # relu: jax.nn.relu's derivative at 0 is 0, where jnp.maximum's splits the tie
    return jnp, {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "erfc": jax.lax.erfc}


NUMPY = ArrayNamespace("numpy", _numpy_functions)
JAX = ArrayNamespace("jax", _jax_functions)


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
    derivative: ``derivative(x, *, xp, **kw)``, fn's derivative, written like fn over an array
      namespace. Giving it declares that ``fn(x, *, xp, **kw)`` (and ``init_theta(width, spec,
      *, xp)``, where there is one) take ``xp=NUMPY`` too: mean-field theory then uses this
      code on numpy arrays (:meth:`numpy_form`). Training never calls it (it differentiates fn).
    kinks: where fn or its derivative is not smooth (theory cuts its quadrature there).

    An activation with options (``register_activation(..., options={"alpha": 1.0})``, named
    ``"elu(alpha=0.5)"`` in a config) gets their values as keyword arguments in ``fn`` and
    ``derivative``, and in ``derivative_max``, ``he_gain2`` and ``init_theta`` where these are
    functions.
    """

    fn: Callable[..., Any]
    derivative_max: float | Callable[[Any], float] = 1.0
    he_gain2: float | Callable[[Any], float] = 2.0
    init_theta: Callable[..., Any] | None = None
    hyper: Callable[[Any], dict] | None = None
    flat_region: str | None = None
    derivative: Callable[..., Any] | None = None
    kinks: tuple[float, ...] = ()

    def with_options(self, options: dict) -> Activation:
        """This activation with its options' values given to its functions."""
        return bind_options(self, options, ("fn", "derivative", "derivative_max", "he_gain2",
                                            "init_theta"))

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

    def numpy_form(self, spec) -> tuple[Callable, Callable, tuple[float, ...]] | None:
        """``(phi, dphi, kinks)`` on float64 numpy arrays, at initialization, with the
        hyperparameters ``hyper(spec)``: fn and its declared derivative run with ``xp=NUMPY``.
        None where the entry declares no derivative."""
        if self.derivative is None:
            return None
        kw = dict(self.hyper(spec)) if self.hyper else {}
        if self.init_theta is not None:
            kw["theta"] = self.init_theta(1, spec, xp=NUMPY)
        fn, derivative = self.fn, self.derivative

        def phi(x):
            return fn(NUMPY.asarray(x, dtype=NUMPY.float64), xp=NUMPY, **kw)

        def dphi(x):
            return derivative(NUMPY.asarray(x, dtype=NUMPY.float64), xp=NUMPY, **kw)

        return phi, dphi, tuple(sorted(self.kinks))


@dataclass(frozen=True)
class BoundActivation:
    """An activation with its hyperparameters fixed by a run config."""

    apply: Callable[[Any, Any], Any]
    derivative_max: float
    he_gain2: float
    init_theta: Callable[[int], Any]
    flat_region: str | None = None

    def derivative(self, x, theta=None):
        """Elementwise derivative fn'(x), by forward-mode differentiation."""
        import jax

        return jax.jvp(lambda v: self.apply(v, theta), (x,), (JAX.ones_like(x),))[1]


ACTIVATIONS: Registry[Activation] = Registry("activation", fields=("activation",))


def register_activation(name: str, fn: Callable, *, derivative_max=1.0, he_gain2=2.0,
                        init_theta=None, hyper=None, flat_region: str | None = None,
                        derivative: Callable | None = None, kinks=(),
                        doc: str | None = None, options: dict | None = None,
                        origin: str = "vgbench") -> Activation:
    """Register an elementwise activation ``fn`` under ``name`` (see :class:`Activation`).

    ``options``: the activation's own hyperparameters, name -> default (see
    :mod:`vgbench.registry`); ``fn`` and ``derivative`` receive them as keyword arguments.
    """
    if not callable(fn):
        raise TypeError(f"activation {name!r}: fn must be callable, got {type(fn).__name__}")
    if derivative is not None and not callable(derivative):
        raise TypeError(f"activation {name!r}: derivative must be callable or None, "
                        f"got {type(derivative).__name__}")
    if flat_region is not None and flat_region not in FLAT_REGIONS:
        raise ValueError(f"activation {name!r}: flat_region must be one of "
                         f"{', '.join(FLAT_REGIONS)} or None, got {flat_region!r}")
    entry = Activation(fn=fn, derivative_max=derivative_max, he_gain2=he_gain2,
                       init_theta=init_theta, hyper=hyper, flat_region=flat_region,
                       derivative=derivative, kinks=tuple(float(k) for k in kinks))
    ACTIVATIONS.register(name, entry, doc=doc if doc is not None else fn.__doc__, origin=origin,
                         options=options)
    return entry


def get(name: str) -> Activation:
    return ACTIVATIONS.get(name)


# ---------------------------------------------------------------------------- built-in entries
# Each is written once over xp (JAX's or numpy's functions, see the module docstring); on JAX
# arrays each computes exactly what training has always computed (jax.nn.elu, jax.nn.silu and
# jax.nn.gelu(approximate=False) are spelled out as JAX writes them).

def sigmoid(x, *, xp=JAX):
    """Logistic sigmoid 1/(1+e^-x); saturates, derivative at most 1/4 (Rumelhart et al. 1986)."""
    return xp.sigmoid(x)


def _sigmoid_derivative(x, *, xp=JAX):
    s = xp.sigmoid(x)
    return s * (1.0 - s)


def tanh(x, *, xp=JAX):
    """Hyperbolic tangent; saturates, derivative at most 1 (LeCun et al. 1998, Efficient BackProp)."""
    return xp.tanh(x)


def _tanh_derivative(x, *, xp=JAX):
    e = xp.exp(-2.0 * xp.abs(x))   # 1/cosh(x)^2 without overflow
    return 4.0 * e / (1.0 + e) ** 2


def relu(x, *, xp=JAX):
    """Rectified linear unit max(0, x) (Nair & Hinton 2010; Glorot et al. 2011)."""
    return xp.relu(x)


def _step(x, *, xp=JAX):
    return xp.where(x > 0, 1.0, 0.0)


def leaky_relu(x, *, slope, xp=JAX):
    """Leaky ReLU max(x, a x) with slope a from `leaky_slope` (Maas et al. 2013)."""
    return xp.where(x >= 0, x, slope * x)


def _leaky_derivative(x, *, slope, xp=JAX):
    return xp.where(x >= 0, 1.0, slope)


def prelu(x, *, theta, xp=JAX):
    """Parametric ReLU: a learnable slope per unit, initialised at 0.25 (He et al. 2015)."""
    return xp.where(x >= 0, x, theta * x)


def _prelu_derivative(x, *, theta, xp=JAX):
    return xp.where(x >= 0, 1.0, theta)


def elu(x, *, alpha=ELU_ALPHA, xp=JAX):
    """Exponential linear unit: x above 0, alpha (e^x - 1) below (Clevert et al. 2016)."""
    return xp.where(x > 0, x, alpha * xp.expm1(xp.where(x > 0, 0.0, x)))


def _elu_derivative(x, *, alpha=ELU_ALPHA, xp=JAX):
    return xp.where(x > 0, 1.0, alpha * xp.exp(xp.minimum(x, 0.0)))


def selu(x, *, xp=JAX):
    """Scaled ELU, self-normalizing with LeCun-normal init (Klambauer et al. 2017)."""
    return SELU_SCALE * xp.where(x > 0, x, SELU_ALPHA * xp.expm1(xp.minimum(x, 0.0)))


def _selu_derivative(x, *, xp=JAX):
    return SELU_SCALE * xp.where(x > 0, 1.0, SELU_ALPHA * xp.exp(xp.minimum(x, 0.0)))


def gelu(x, *, xp=JAX):
    """Gaussian error linear unit x Phi(x), exact form (Hendrycks & Gimpel 2016)."""
    return 0.5 * x * xp.erfc(-x * SQRT_HALF)


def _gelu_derivative(x, *, xp=JAX):
    return 0.5 * xp.erfc(-x * SQRT_HALF) + x * xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def silu(x, *, xp=JAX):
    """SiLU / swish x sigmoid(x) (Elfwing et al. 2018; Ramachandran et al. 2017)."""
    return x * xp.sigmoid(x)


def _silu_derivative(x, *, xp=JAX):
    s = xp.sigmoid(x)
    return s + x * s * (1.0 - s)


def softsign(x, *, xp=JAX):
    """Softsign x/(1+|x|); saturates polynomially rather than exponentially (Glorot & Bengio 2010)."""
    return x / (1.0 + xp.abs(x))


def _softsign_derivative(x, *, xp=JAX):
    return 1.0 / (1.0 + xp.abs(x)) ** 2


def hard_tanh(x, *, xp=JAX):
    """Hard tanh clip(x, -1, 1); derivative exactly 0 outside [-1, 1] (Collobert 2004)."""
    return xp.clip(x, -1.0, 1.0)


def _hard_tanh_derivative(x, *, xp=JAX):
    return xp.where(xp.abs(x) < 1.0, 1.0, 0.0)


def identity(x, *, xp=JAX):
    """Identity (a deep linear network; Saxe et al. 2014)."""
    return x


def _identity_derivative(x, *, xp=JAX):
    return xp.ones_like(x)


def leaky_gain2(slope: float) -> float:
    """He initialization's squared gain 2/(1+a^2) for negative slope a (He et al. 2015)."""
    return 2.0 / (1.0 + float(slope) ** 2)


def _prelu_theta(width: int, spec, *, xp=JAX):
    return xp.full((width,), PRELU_INIT_SLOPE, dtype=xp.float32)


# sup |gelu'| is attained near x = 1.4: 1.1289; sup |silu'| near x = 2.4: 1.0998.
register_activation("sigmoid", sigmoid, derivative=_sigmoid_derivative, derivative_max=0.25,
                    flat_region="tail")
register_activation("tanh", tanh, derivative=_tanh_derivative, flat_region="tail")
register_activation("relu", relu, derivative=_step, kinks=(0.0,), flat_region="off")
register_activation("leaky_relu", leaky_relu, derivative=_leaky_derivative, kinks=(0.0,),
                    he_gain2=lambda s: leaky_gain2(s.leaky_slope),
                    derivative_max=lambda s: max(1.0, abs(float(s.leaky_slope))),
                    hyper=lambda s: {"slope": float(s.leaky_slope)}, flat_region="off")
register_activation("prelu", prelu, derivative=_prelu_derivative, kinks=(0.0,),
                    init_theta=_prelu_theta, he_gain2=leaky_gain2(PRELU_INIT_SLOPE),
                    flat_region="off")
register_activation("elu", elu, derivative=_elu_derivative, kinks=(0.0,), flat_region="tail",
                    derivative_max=lambda s, alpha: max(1.0, abs(alpha)),
                    options={"alpha": ELU_ALPHA})
register_activation("selu", selu, derivative=_selu_derivative, kinks=(0.0,),
                    derivative_max=SELU_SCALE * SELU_ALPHA, flat_region="tail")
register_activation("gelu", gelu, derivative=_gelu_derivative, derivative_max=1.1289,
                    flat_region="off")
register_activation("silu", silu, derivative=_silu_derivative, derivative_max=1.0998,
                    flat_region="off")
register_activation("softsign", softsign, derivative=_softsign_derivative, kinks=(0.0,),
                    flat_region="tail")
register_activation("hard_tanh", hard_tanh, derivative=_hard_tanh_derivative, kinks=(-1.0, 1.0),
                    flat_region="tail")
register_activation("identity", identity, derivative=_identity_derivative, flat_region="none")

assert math.isclose(SELU_SCALE * SELU_ALPHA, 1.7581, rel_tol=1e-4)

"""Weight initializers: the registry of initialization schemes.

An entry is an :class:`Initializer`: ``weight(key, shape, fan_in, fan_out, hp)`` and
``bias(key, shape, hp)``, where ``hp`` is an :class:`InitHyper` carrying the config's
``sigma_w``/``sigma_b`` and the activation's He gain. ``mean_field(hp, fan_in, fan_out)``
returns the effective (sigma_w^2, sigma_b^2) of mean-field theory, W_ij ~ (0, sigma_w^2/fan_in),
where the scheme has one (theory.py and the phase diagram use it).

Convolution kernels have shape (kh, kw, c_in, c_out): fan_in = kh*kw*c_in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vgbench.registry import Registry, bind_options


@dataclass(frozen=True)
class InitHyper:
    """What an initializer may read from the run config."""

    sigma_w: float = 1.0
    sigma_b: float = 0.0
    he_gain2: float = 2.0


def zeros_bias(key, shape, hp: InitHyper, **options):
    return jnp.zeros(shape, jnp.float32)


@dataclass(frozen=True)
class Initializer:
    """A registered initialization scheme (see the module docstring)."""

    weight: Callable
    bias: Callable = zeros_bias
    mean_field: Callable[[InitHyper, int, int], tuple[float, float] | None] | None = None

    def with_options(self, options: dict) -> Initializer:
        """This scheme with its options' values given to ``weight``, ``bias`` and ``mean_field``."""
        return bind_options(self, options, ("weight", "bias", "mean_field"))

    def effective_sigma2(self, hp: InitHyper, fan_in: int, fan_out: int):
        """(sigma_w^2, sigma_b^2) of the equivalent Gaussian scheme, or None."""
        return None if self.mean_field is None else self.mean_field(hp, fan_in, fan_out)


INITIALIZERS: Registry[Initializer] = Registry("init", fields=("init", "recurrent_init"))


def register_initializer(name: str, weight: Callable, *, bias: Callable = zeros_bias,
                         mean_field=None, doc: str | None = None, options: dict | None = None,
                         origin: str = "vgbench") -> Initializer:
    """Register ``weight(key, shape, fan_in, fan_out, hp)`` (and optionally ``bias``).

    ``options``: the scheme's own hyperparameters, name -> default (see
    :mod:`vgbench.registry`); ``weight``, ``bias`` and ``mean_field`` receive them as keyword
    arguments.
    """
    if not callable(weight) or not callable(bias):
        raise TypeError(f"initializer {name!r}: weight and bias must be callables")
    entry = Initializer(weight=weight, bias=bias, mean_field=mean_field)
    INITIALIZERS.register(name, entry, doc=doc if doc is not None else weight.__doc__, origin=origin,
                          options=options)
    return entry


def get(name: str) -> Initializer:
    return INITIALIZERS.get(name)


def fans(shape) -> tuple[int, int]:
    """fan_in, fan_out of a dense (in, out) or conv (kh, kw, in, out) weight."""
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _normal(key, shape, std):
    return std * jax.random.normal(key, shape, jnp.float32)


# ---------------------------------------------------------------------------- built-in entries

def naive(key, shape, fan_in, fan_out, hp):
    """The "standard" init U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (Glorot & Bengio 2010, eq. 1)."""
    return _uniform(key, shape, 1.0 / math.sqrt(fan_in))


def small_normal(key, shape, fan_in, fan_out, hp):
    """N(0, 0.01^2) regardless of width: the too-small init of many early tutorials."""
    return _normal(key, shape, 0.01)


def xavier_uniform(key, shape, fan_in, fan_out, hp):
    """Glorot/Xavier uniform U[+-sqrt(6/(fan_in+fan_out))] (Glorot & Bengio 2010)."""
    return _uniform(key, shape, math.sqrt(6.0 / (fan_in + fan_out)))


def xavier_normal(key, shape, fan_in, fan_out, hp):
    """Glorot/Xavier normal N(0, 2/(fan_in+fan_out)) (Glorot & Bengio 2010)."""
    return _normal(key, shape, math.sqrt(2.0 / (fan_in + fan_out)))


def he_uniform(key, shape, fan_in, fan_out, hp):
    """He/Kaiming uniform U[+-sqrt(3 g^2/fan_in)], g^2 = 2/(1+a^2) for leaky slope a (He et al. 2015)."""
    return _uniform(key, shape, math.sqrt(3.0 * hp.he_gain2 / fan_in))


def he_normal(key, shape, fan_in, fan_out, hp):
    """He/Kaiming normal N(0, g^2/fan_in), g^2 = 2/(1+a^2) for leaky slope a (He et al. 2015)."""
    return _normal(key, shape, math.sqrt(hp.he_gain2 / fan_in))


def lecun_normal(key, shape, fan_in, fan_out, hp):
    """LeCun normal N(0, 1/fan_in) (LeCun et al. 1998; the SELU companion)."""
    return _normal(key, shape, math.sqrt(1.0 / fan_in))


def orthogonal(key, shape, fan_in, fan_out, hp):
    """Random (semi-)orthogonal matrix times gain sigma_w (Saxe et al. 2014)."""
    rows, cols = fan_in, shape[-1]
    big, small = max(rows, cols), min(rows, cols)
    a = jax.random.normal(key, (big, small), jnp.float32)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))  # uniform (Haar) distribution, Mezzadri 2007
    if rows < cols:
        q = q.T
    return hp.sigma_w * q.reshape(shape)


def gaussian(key, shape, fan_in, fan_out, hp):
    """W ~ N(0, sigma_w^2/fan_in), b ~ N(0, sigma_b^2): the mean-field scheme (Poole et al. 2016)."""
    return _normal(key, shape, hp.sigma_w / math.sqrt(fan_in))


def gaussian_bias(key, shape, hp):
    return _normal(key, shape, hp.sigma_b)


def identity(key, shape, fan_in, fan_out, hp):
    """Identity matrix times gain sigma_w (IRNN recurrent init, Le et al. 2015)."""
    rows, cols = fan_in, shape[-1]
    eye = jnp.eye(rows, cols, dtype=jnp.float32)
    if len(shape) > 2:  # conv: identity on the centre tap
        centre = jnp.zeros(shape, jnp.float32)
        middle = tuple(k // 2 for k in shape[:-2])
        return centre.at[middle].set(hp.sigma_w * jnp.eye(shape[-2], shape[-1]))
    return hp.sigma_w * eye


register_initializer("naive", naive, mean_field=lambda hp, fi, fo: (1.0 / 3.0, 0.0))
register_initializer("small_normal", small_normal, mean_field=lambda hp, fi, fo: (1e-4 * fi, 0.0))
register_initializer("xavier_uniform", xavier_uniform,
                     mean_field=lambda hp, fi, fo: (2.0 * fi / (fi + fo), 0.0))
register_initializer("xavier_normal", xavier_normal,
                     mean_field=lambda hp, fi, fo: (2.0 * fi / (fi + fo), 0.0))
register_initializer("he_uniform", he_uniform, mean_field=lambda hp, fi, fo: (hp.he_gain2, 0.0))
register_initializer("he_normal", he_normal, mean_field=lambda hp, fi, fo: (hp.he_gain2, 0.0))
register_initializer("lecun_normal", lecun_normal, mean_field=lambda hp, fi, fo: (1.0, 0.0))
register_initializer("orthogonal", orthogonal, mean_field=lambda hp, fi, fo: (hp.sigma_w ** 2, 0.0))
register_initializer("gaussian", gaussian, bias=gaussian_bias,
                     mean_field=lambda hp, fi, fo: (hp.sigma_w ** 2, hp.sigma_b ** 2))
register_initializer("identity", identity, mean_field=None)

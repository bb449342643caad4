"""Mean-field predictions of signal and gradient propagation at initialization (numpy only).

A wide fully connected network with L hidden layers, h^{l+1} = W^{l+1} phi(h^l) + b^{l+1},
W_ij ~ N(0, sigma_w^2/fan_in), b_i ~ N(0, sigma_b^2), has, as the width grows:

- length map   q^{l+1} = sigma_w^2 E_z[phi(sqrt(q^l) z)^2] + sigma_b^2, fixed point q*;
- gradient map E|delta^l|^2 = chi_1 E|delta^{l+1}|^2, chi_1 = sigma_w^2 E_z[phi'(sqrt(q*) z)^2];
- correlation map c -> (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*, fixed point c*,
  slope chi_c there (chi_c = chi_1 when c* = 1);
- depth scales xi = -1/ln(chi): xi_q (length), xi_c (correlation), xi_grad (gradient).

Everything here works in variances (sigma_w2 = sigma_w^2, sigma_b2 = sigma_b^2) and takes an
activation as a name of NUMPY_ACTIVATIONS (a built-in activation: its registry entry's own code
run on numpy arrays), a ``(phi, dphi)`` pair, a :class:`Phi` or an elementwise callable.
Gaussian expectations use Gauss-Hermite quadrature with ``n_points`` nodes per axis where it
converges fast (smooth phi, q <= 1/4) and a composite Gauss-Legendre rule cut at phi's kinks
and scales elsewhere (see gaussian_mean). Functions of (sigma_w2, sigma_b2) broadcast over
numpy arrays and return floats for scalars. The formulas, their limits and how to read them
are in docs/theory.md.

This module must not import JAX: the reporter imports it (vgbench.activations imports JAX only
when a JAX function is called).

References: Poole et al. 2016, "Exponential expressivity in deep neural networks through
transient chaos"; Schoenholz et al. 2017, "Deep information propagation"; Pennington et al.
2017, "Resurrecting the sigmoid in deep learning through dynamical isometry".
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from vgbench import activations
from vgbench.activations import LEAKY_SLOPE
from vgbench.names import did_you_mean

N_POINTS = 100  # Gauss-Hermite nodes per axis; the composite rule uses N_POINTS // 8 per piece
Q_TINY, Q_HUGE = 1e-30, 1e30  # where a limit q* = 0 or q* = inf is evaluated
Z_MAX = 12.0                   # the composite rule's range; N(0,1) mass beyond: 4e-33
_SCAN_DOUBLINGS = 100          # q* is searched in [q0 / 2^100, q0 * 2^100]
_BISECTIONS = 64


# ---------------------------------------------------------------------------- activations

class Phi(NamedTuple):
    """An activation for mean-field theory: elementwise phi(x), its derivative dphi(x), its kinks.

    kinks: points where phi or phi' is not smooth (0 for ReLU, +-1 for hard tanh); Gaussian
    expectations are then cut there (composite_rule): Gauss-Hermite converges only
    algebraically across a kink (1e-2 off for SELU's chi_1 with 100 nodes).
    """

    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray], np.ndarray]
    kinks: tuple[float, ...] = ()


@functools.lru_cache(maxsize=64)
def _registered(name: str, leaky_slope: float) -> Phi:
    """The registry entry's own code on numpy arrays (Activation.numpy_form)."""
    config = types.SimpleNamespace(leaky_slope=float(leaky_slope))  # what the hyperparameters read
    return Phi(*activations.get(name).numpy_form(config))


def leaky(slope: float) -> Phi:
    """Leaky ReLU max(x, a x) with slope a (Maas et al. 2013), the registry's leaky_relu."""
    return _registered("leaky_relu", slope)


# The built-in activations, from their registry entries: phi, phi' and kinks on numpy arrays,
# leaky_relu with the default slope, prelu with its slope at initialization. A plugin's
# activation is not here: a process that reads its records need not have it registered, so a
# record carries it tabulated (vgbench.record.theory_inputs, from_table).
NUMPY_ACTIVATIONS: dict[str, Phi] = {
    name: _registered(name, LEAKY_SLOPE) for name, entry in activations.ACTIVATIONS.items()
    if activations.ACTIVATIONS.origin(name) == "vgbench" and entry.derivative is not None}


def from_callable(fn: Callable[..., Any], *, kinks: tuple[float, ...] = (), **kwargs) -> Phi:
    """Wrap any elementwise function (numpy or JAX) as a Phi, phi' by central differences.

    Args:
      fn: ``fn(x, **kwargs)`` returning an array-like of x's shape; it is called on numpy
        arrays and its result converted with ``np.asarray`` (a JAX function works, in its own
        float32 precision).
      kinks: where fn or its derivative is not smooth, if known (see Phi).
      **kwargs: fixed keyword arguments for ``fn`` (e.g. ``slope=0.1``).

    Returns:
      Phi whose dphi uses the step eps^(1/3) * max(1, |x|), eps of fn's output dtype, on the
      points actually representable in that dtype (error about eps^(2/3): 1e-5 in float32).
    """
    probe = np.asarray(fn(np.array([0.5, 1.0]), **kwargs))
    dtype = probe.dtype if probe.dtype.kind == "f" else np.dtype(np.float64)
    rel_step = float(np.finfo(dtype).eps) ** (1.0 / 3.0)

    def phi(x):
        return np.asarray(fn(np.asarray(x), **kwargs), dtype=np.float64)

    def dphi(x):
        x = np.asarray(x, np.float64)
        step = rel_step * np.maximum(1.0, np.abs(x))
        above, below = (x + step).astype(dtype), (x - step).astype(dtype)
        return (phi(above) - phi(below)) / (above.astype(np.float64) - below.astype(np.float64))

    return Phi(phi, dphi, tuple(sorted(kinks)))


def from_table(x_max: float, values) -> Phi:
    """An activation tabulated at ``len(values)`` evenly spaced points of [-x_max, x_max] (how
    a run record carries an activation this module has no closed form for), linear between
    the points and continued linearly beyond them."""
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) < 3 or not np.all(np.isfinite(values)) or not x_max > 0:
        raise ValueError("a tabulated activation needs x_max > 0 and at least 3 finite values")
    xs = np.linspace(-float(x_max), float(x_max), len(values))
    slopes = np.diff(values) / np.diff(xs)

    def phi(x):
        x = np.asarray(x, np.float64)
        inside = np.interp(x, xs, values)
        below = values[0] + slopes[0] * (x - xs[0])
        above = values[-1] + slopes[-1] * (x - xs[-1])
        return np.where(x < xs[0], below, np.where(x > xs[-1], above, inside))

    def dphi(x):
        index = np.clip(np.searchsorted(xs, np.asarray(x, np.float64)) - 1, 0, len(slopes) - 1)
        return slopes[index]

    return Phi(phi, dphi)


def as_activation(activation, *, leaky_slope: float = LEAKY_SLOPE) -> Phi:
    """Resolve a name in NUMPY_ACTIVATIONS, a (phi, dphi) pair or an elementwise callable.

    leaky_slope: the config's ``leaky_slope``, which a named activation's hyperparameters read
    (leaky_relu's slope).
    """
    if isinstance(activation, Phi):
        return activation
    if isinstance(activation, str):
        if activation in NUMPY_ACTIVATIONS:
            return _registered(activation, leaky_slope)
        names = list(NUMPY_ACTIVATIONS)
        raise ValueError(f"no mean-field activation {activation!r}; valid choices: "
                         f"{', '.join(names)}{did_you_mean(activation, names)} (or pass a "
                         "(phi, dphi) pair / from_callable / from_table)")
    if isinstance(activation, tuple | list) and len(activation) == 2 \
            and all(map(callable, activation)):
        return Phi(*activation)
    if callable(activation):
        return from_callable(activation)
    raise TypeError("activation must be a name, a (phi, dphi) pair or a callable, "
                    f"got {type(activation).__name__}")


# ---------------------------------------------------------------------------- quadrature

@functools.lru_cache(maxsize=32)
def gauss_hermite(n_points: int = N_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z_i and weights w_i with E_{z~N(0,1)}[f(z)] ~= sum_i w_i f(z_i).

    Exact for polynomials of degree < 2 n_points. n_points <= 350: beyond ~370, numpy's
    weights overflow.
    """
    _check_points(n_points)
    if n_points > 350:
        raise ValueError(f"n_points = {n_points} > 350: numpy's Gauss-Hermite weights overflow")
    nodes, weights = hermegauss(int(n_points))
    weights = weights / math.sqrt(2.0 * math.pi)
    nodes.flags.writeable = weights.flags.writeable = False
    return nodes, weights


@functools.lru_cache(maxsize=32)
def _gauss_legendre(n_points: int):
    return leggauss(int(n_points))


def _check_points(n_points):
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")


# Cut points of the composite rule: the Gaussian's own scale in y, and, in u = mu + sigma y,
# a geometric ladder that resolves phi's structure near u = 0 however wide the Gaussian is.
_Y_CUTS = np.array([-Z_MAX, -8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0, Z_MAX])
_U_CUTS = np.array([0.0] + [sign * 2.0 ** k for k in range(7) for sign in (-1.0, 1.0)])


def composite_rule(mu, sigma, n_points: int = N_POINTS, kinks: tuple[float, ...] = ()):
    """Nodes y and weights w with E_{y~N(0,1)}[f(mu + sigma y)] ~= sum w f(mu + sigma y).

    Gauss-Legendre with max(4, n_points // 8) nodes on each piece of [-Z_MAX, Z_MAX] cut at
    y in {0, +-1, +-2, +-4, +-8} and where u = mu + sigma y is a kink or in {0, +-1, ..., +-64},
    so every piece is smooth and matched to its scale. mu and sigma (> 0) broadcast to a shape S;
    y and w have shape S + (N,). Zero-length pieces carry zero weight.
    """
    _check_points(n_points)
    mu, sigma = np.broadcast_arrays(np.asarray(mu, float), np.asarray(sigma, float))
    u_cuts = np.concatenate([np.asarray(kinks, float), _U_CUTS])
    with np.errstate(divide="ignore", invalid="ignore"):
        y_of_u = (u_cuts - mu[..., None]) / sigma[..., None]
    cuts = np.concatenate([np.broadcast_to(_Y_CUTS, mu.shape + _Y_CUTS.shape), y_of_u], -1)
    edges = np.sort(np.clip(np.nan_to_num(cuts), -Z_MAX, Z_MAX), axis=-1)
    x, w = _gauss_legendre(max(4, int(n_points) // 8))
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    half = 0.5 * (hi - lo)
    y = lo + half * (1.0 + x)
    weights = half * w * np.exp(-0.5 * y * y) / math.sqrt(2.0 * math.pi)
    return y.reshape(mu.shape + (-1,)), weights.reshape(mu.shape + (-1,))


def _gauss_hermite_suffices(root_q, kinks) -> np.ndarray:
    # Gauss-Hermite converges fast only if f(sqrt(q) z) is smooth on the scale of z: no kinks,
    # and q small (tanh's chi_1 with 50 nodes: 1e-13 off at q = 1/4, 1e-6 at q = 1; the
    # sigmoid's with 100 nodes at q = 60, near its critical line: 8 % off).
    return np.logical_and(root_q <= 0.5, not kinks)


def gaussian_mean(fn: Callable[[np.ndarray], np.ndarray], q, n_points: int = N_POINTS, *,
                  kinks: tuple[float, ...] = ()):
    """E_{z~N(0,1)}[fn(sqrt(q) z)] for every entry of the array q.

    Args:
      fn: elementwise function of u = sqrt(q) z.
      q: variance(s) >= 0.
      n_points: Gauss-Hermite nodes; the composite rule uses n_points // 8 per piece.
      kinks: points in u where fn is not smooth.

    Returns:
      Gauss-Hermite with n_points nodes where q <= 1/4 and there are no kinks, composite_rule
      elsewhere; both are accurate to ~1e-14 at the default n_points (docs/theory.md).
    """
    q = np.asarray(q, float)
    root_q = np.sqrt(q).ravel()
    out = np.empty(root_q.shape)
    hermite = _gauss_hermite_suffices(root_q, kinks)
    with np.errstate(over="ignore", invalid="ignore"):
        if hermite.any():
            nodes, weights = gauss_hermite(n_points)
            out[hermite] = fn(root_q[hermite, None] * nodes) @ weights
        if not hermite.all():
            root = root_q[~hermite]
            nodes, weights = composite_rule(0.0, root, n_points, kinks)
            out[~hermite] = np.sum(fn(root[:, None] * nodes) * weights, axis=-1)
    return _out(out.reshape(q.shape))


def _floats(*values):
    return np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values))


def _out(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def _regular(q):
    """q where a limit q* = 0 or inf is evaluated."""
    return np.clip(np.asarray(q, float), Q_TINY, Q_HUGE)


# ---------------------------------------------------------------------------- length map, chi_1

def _length_map(act: Phi, q, sw2, sb2, n):
    return sw2 * gaussian_mean(lambda u: act.phi(u) ** 2, q, n, kinks=act.kinks) + sb2


def _length_slope(act: Phi, q, sw2, n):
    # d/dq sigma_w^2 E[phi(u)^2] = sigma_w^2 E[u phi(u) phi'(u)] / q, u = sqrt(q) z; by Stein's
    # lemma this is chi_1 + sigma_w^2 E[phi phi''] (Schoenholz et al. 2017) without phi''.
    q = _regular(q)
    return sw2 * gaussian_mean(lambda u: u * act.phi(u) * act.dphi(u), q, n, kinks=act.kinks) / q


def _chi1_at(act: Phi, q, sw2, n):
    return sw2 * gaussian_mean(lambda u: act.dphi(u) ** 2, _regular(q), n, kinks=act.kinks)


def _q_star(act: Phi, sw2, sb2, q0, n):
    sw2, sb2, q0 = _floats(sw2, sb2, q0)
    if not (np.all(q0 > 0) and np.all(sw2 >= 0) and np.all(sb2 >= 0)):
        raise ValueError(f"need q0 > 0, sigma_w2 >= 0, sigma_b2 >= 0; got {q0}, {sw2}, {sb2}")

    def excess(q):
        return _length_map(act, q, sw2, sb2, n) - q

    f0 = excess(q0)
    unmoved = np.abs(f0) <= 1e-10 * q0  # q0 is (numerically) a fixed point already
    grow = f0 > 0
    q, lo, hi, searching = q0.copy(), q0.copy(), q0.copy(), ~unmoved
    for _ in range(_SCAN_DOUBLINGS):  # walk by factors of 2 until the map changes direction
        if not searching.any():
            break
        q = np.where(searching, np.where(grow, 2.0 * q, 0.5 * q), q)
        f = excess(q)
        # a crossing must beat quadrature round-off, which at a marginal point (ReLU with
        # sigma_w^2 = 2, sigma_b > 0) would otherwise fake a fixed point near q = 1e14
        found = searching & np.where(grow, f < -1e-12 * q, f >= 0)
        lo = np.where(found, np.where(grow, 0.5 * q, q), lo)
        hi = np.where(found, np.where(grow, q, 2.0 * q), hi)
        searching &= ~found
    for _ in range(_BISECTIONS if (~unmoved & ~searching).any() else 0):
        mid = np.sqrt(lo * hi)  # excess(lo) >= 0 > excess(hi): a stable fixed point between
        below = excess(mid) >= 0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = np.where(unmoved, q0, np.sqrt(lo * hi))
    return np.where(searching, np.where(grow, np.inf, 0.0), out)


def length_map(activation, q, sigma_w2, sigma_b2=0.0, *, n_points: int = N_POINTS,
               leaky_slope: float = LEAKY_SLOPE):
    """Length map q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2, one layer (Poole et al. 2016)."""
    act = as_activation(activation, leaky_slope=leaky_slope)
    return _out(_length_map(act, *_floats(q, sigma_w2, sigma_b2), n_points))


def q_star(activation, sigma_w2, sigma_b2=0.0, *, q0: float = 1.0, n_points: int = N_POINTS,
           leaky_slope: float = LEAKY_SLOPE):
    """Fixed point q* of the length map reached from q0 (Poole et al. 2016).

    Args:
      activation: name, (phi, dphi) pair or elementwise callable.
      sigma_w2, sigma_b2: weight and bias variances (arrays broadcast).
      q0: starting length, > 0 (the first layer's, if known); where the map has several
        stable fixed points (GELU, SiLU: 0 and inf for 2 < sigma_w^2 < 4, sigma_b = 0), the
        one the iteration from q0 converges to is returned.

    Returns:
      q*, with two limits made explicit: 0.0 where the map contracts every length to zero
      (tanh with sigma_b = 0 and sigma_w^2 <= 1; ReLU with sigma_b = 0 and sigma_w^2 < 2), and
      inf where lengths grow without bound (ReLU with sigma_w^2 > 2, or = 2 with sigma_b > 0).
      Where every q is fixed (ReLU with sigma_w^2 = 2, identity with sigma_w^2 = 1, both
      with sigma_b = 0) it returns q0.
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    return _out(_q_star(act, sigma_w2, sigma_b2, q0, n_points))


def chi1(activation, sigma_w2, sigma_b2=0.0, *, q=None, q0: float = 1.0,
         n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE):
    """Gradient multiplier per layer, chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] (Poole et al. 2016).

    Args:
      q: evaluate at this length instead of q* (e.g. a layer not yet at the fixed point).
      q0: where the search for q* starts (see q_star).

    Returns:
      chi_1; E|delta^l|^2 = chi_1 E|delta^{l+1}|^2. Where q* is 0 or inf the limit is used
      (sigma_w^2 phi'(0)^2 for q* = 0, averaging phi'(0-)^2 and phi'(0+)^2 at a kink; ReLU
      gives sigma_w^2 / 2 at every q).
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    if q is None:
        q = _q_star(act, sigma_w2, sigma_b2, q0, n_points)
    sw2, q = _floats(sigma_w2, q)
    return _out(_chi1_at(act, q, sw2, n_points))


def chi1_grid(activation, sigma_w2_values, sigma_b2_values, *, q0: float = 1.0,
              n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE) -> np.ndarray:
    """chi_1 over a (sigma_w^2, sigma_b^2) grid: the phase diagram (Schoenholz et al. 2017, Fig. 1).

    Returns:
      Array of shape (len(sigma_w2_values), len(sigma_b2_values)), 'ij' indexing: entry [i, j]
      is chi_1 at (sigma_w2_values[i], sigma_b2_values[j]).
    """
    sw2 = np.asarray(sigma_w2_values, float).reshape(-1, 1)
    sb2 = np.asarray(sigma_b2_values, float).reshape(1, -1)
    return np.asarray(chi1(activation, sw2, sb2, q0=q0, n_points=n_points, leaky_slope=leaky_slope))


# ---------------------------------------------------------------------------- correlation map

def _pair_nodes(act: Phi, c: float, q: float, n: int):
    """Nodes z1, z2 and weights for E over independent z1, z2 ~ N(0, 1), flattened.

    The Gauss-Hermite product grid where gaussian_mean would use Gauss-Hermite; otherwise the
    composite rule in z1 and, for each z1 node, in z2 given u2's mean sqrt(q) c z1 and
    standard deviation sqrt(q (1 - c^2)), so pieces follow u2's kinks too.
    """
    root_q, s = math.sqrt(q), math.sqrt(max(1.0 - c * c, 0.0))
    if _gauss_hermite_suffices(root_q, act.kinks):
        nodes, weights = gauss_hermite(n)
        z1, z2 = (a.ravel() for a in np.meshgrid(nodes, nodes, indexing="ij"))
        return z1, z2, np.outer(weights, weights).ravel()
    z1, w1 = composite_rule(0.0, root_q, n, act.kinks)
    z1, w1 = z1[w1 > 0], w1[w1 > 0]
    if s == 0.0:
        return z1, np.zeros_like(z1), w1
    z2, w2 = composite_rule(root_q * c * z1, root_q * s, n, act.kinks)
    return np.repeat(z1, z2.shape[1]), z2.ravel(), (w1[:, None] * w2).ravel()


def _correlation(act: Phi, c: float, q: float, sw2: float, sb2: float, n: int):
    """(c^{l+1}, dc^{l+1}/dc) at inputs of length q and correlation c."""
    c = min(max(float(c), -1.0), 1.0)
    z1, z2, weights = _pair_nodes(act, c, q, n)
    root_q = math.sqrt(q)
    u1, u2 = root_q * z1, root_q * (c * z1 + math.sqrt(1.0 - c * c) * z2)
    with np.errstate(over="ignore", invalid="ignore"):
        phi1 = act.phi(u1)
        length = sw2 * (phi1 ** 2 @ weights) + sb2  # = q* at the fixed point; f(1) = 1 exactly
        value = (sw2 * ((phi1 * act.phi(u2)) @ weights) + sb2) / length
        slope = sw2 * q * ((act.dphi(u1) * act.dphi(u2)) @ weights) / length
    return float(value), float(slope)


def correlation_map(activation, c, sigma_w2, sigma_b2=0.0, *, q=None, q0: float = 1.0,
                    n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE):
    """One layer of the correlation map of two inputs of length q (default q*) (Poole et al. 2016).

    Returns:
      c^{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q^{l+1}, u1 = sqrt(q) z1,
      u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2), for every entry of the array c; q^{l+1} is the
      length map of q (= q* at the fixed point), so the map sends c = 1 to 1 at any q.
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    if q is None:
        q = _q_star(act, sigma_w2, sigma_b2, q0, n_points)
    q, sw2, sb2 = float(_regular(q)), float(sigma_w2), float(sigma_b2)
    c = np.asarray(c, float)
    values = [_correlation(act, entry, q, sw2, sb2, n_points)[0] for entry in c.ravel()]
    return _out(np.reshape(values, c.shape))


def _c_star(act: Phi, q, sw2, sb2, n):
    # The map is increasing and convex on [0, 1] (its Hermite expansion has non-negative
    # coefficients), f(1) = 1 and f(0) >= 0: if f'(1) <= 1, c* = 1; otherwise the one root
    # in [0, 1) is reached from c = 0 by Newton steps that never overshoot it.
    q = float(_regular(q))
    if _correlation(act, 1.0, q, sw2, sb2, n)[1] <= 1.0 + 1e-9:
        return 1.0  # c = 1 is stable: the ordered phase
    c = 0.0
    for _ in range(200):
        value, slope = _correlation(act, c, q, sw2, sb2, n)
        if value - c <= 1e-15 or slope >= 1.0:
            break
        step = (value - c) / (1.0 - slope)
        if step <= 1e-15:
            break
        c = min(c + step, 1.0)
    return c


def c_star(activation, sigma_w2: float, sigma_b2: float = 0.0, *, q0: float = 1.0,
           n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE) -> float:
    """Stable fixed point c* of the correlation map at q* (Poole et al. 2016).

    Returns:
      1.0 where c = 1 is stable (ordered phase, slope at c = 1 <= 1); otherwise the one
      fixed point in [0, 1) (chaotic phase; 0 for odd phi with sigma_b = 0).
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    q = float(_q_star(act, sigma_w2, sigma_b2, q0, n_points))
    return _c_star(act, q, float(sigma_w2), float(sigma_b2), n_points)


# ---------------------------------------------------------------------------- summary, depth scales

def depth_scale(chi):
    """Signed depth scale xi = -1/ln(chi) (Schoenholz et al. 2017).

    Returns:
      xi > 0 where chi < 1: the quantity decays as exp(-l/xi); +inf at chi = 1; xi < 0 where
      chi > 1: it grows as exp(l/|xi|) (exploding gradients). 0 at chi = 0. A chi within
      1e-12 of 1 (quadrature round-off at a marginal point) counts as 1.
    """
    with np.errstate(divide="ignore"):
        log_chi = np.log(np.abs(np.asarray(chi, float)))
        return _out(np.where(np.abs(log_chi) <= 1e-12, np.inf, -1.0 / log_chi))


@dataclass(frozen=True)
class MeanField:
    """Mean-field quantities of one (activation, sigma_w^2, sigma_b^2); see :func:`mean_field`."""

    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi1: float
    chi_q: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float

    @property
    def log10_delta_ratio(self) -> float:
        """log10(|delta^l| / |delta^{l+1}|) = log10(chi_1) / 2, per layer towards the input."""
        with np.errstate(divide="ignore"):
            return float(0.5 * np.log10(self.chi1))

    @property
    def regime(self) -> str:
        """'vanishing' (chi_1 < 1), 'critical' (|chi_1 - 1| <= 1e-6) or 'exploding'."""
        return "critical" if abs(self.chi1 - 1.0) <= 1e-6 else (
            "vanishing" if self.chi1 < 1.0 else "exploding")


def mean_field(activation, sigma_w2: float, sigma_b2: float = 0.0, *, q0: float = 1.0,
               n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE) -> MeanField:
    """All mean-field quantities at one point (Poole et al. 2016; Schoenholz et al. 2017).

    Returns:
      MeanField with q*, chi_1, chi_q = dq^{l+1}/dq^l at q*, c*, chi_c = dc^{l+1}/dc^l at c*
      and the signed depth scales xi_q, xi_c, xi_grad = -1/ln of chi_q, chi_c, chi_1. Where q*
      is 0 or inf they are evaluated in that limit; chi_c is then the slope of the normalized
      correlation map (1 for ReLU without bias, 1 for tanh at q* = 0), no longer chi_1.
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    sw2, sb2 = float(sigma_w2), float(sigma_b2)
    q = float(_q_star(act, sw2, sb2, q0, n_points))
    chi_1 = float(_chi1_at(act, q, sw2, n_points))
    chi_q = float(_length_slope(act, q, sw2, n_points))
    c = _c_star(act, q, sw2, sb2, n_points)
    chi_c = float(_correlation(act, c, float(_regular(q)), sw2, sb2, n_points)[1])
    return MeanField(sigma_w2=sw2, sigma_b2=sb2, q_star=q, chi1=chi_1, chi_q=chi_q, c_star=c,
                     chi_c=chi_c, xi_q=depth_scale(chi_q), xi_c=depth_scale(chi_c),
                     xi_grad=depth_scale(chi_1))


# ---------------------------------------------------------------------------- gradient predictions

def log10_delta_ratio(activation, sigma_w2, sigma_b2=0.0, *, q0: float = 1.0,
                      n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE):
    """Predicted log10(|delta^l| / |delta^{l+1}|) = log10(chi_1) / 2 (Schoenholz et al. 2017).

    Negative where chi_1 < 1: the backpropagated signal shrinks by sqrt(chi_1) per layer towards
    the input.
    """
    with np.errstate(divide="ignore"):
        return _out(0.5 * np.log10(chi1(activation, sigma_w2, sigma_b2, q0=q0, n_points=n_points,
                                        leaky_slope=leaky_slope)))


def log10_delta_profile(activation, depth: int, sigma_w2: float, sigma_b2: float = 0.0, *,
                        q1: float | None = None, n_points: int = N_POINTS,
                        leaky_slope: float = LEAKY_SLOPE) -> np.ndarray:
    """Predicted log10 |delta^l| - log10 |delta^L| for the hidden layers l = 1..L.

    Args:
      depth: number of hidden layers L (the readout is not counted).
      q1: length of the first hidden layer's pre-activations (sigma_w^2 |x|^2/n_in +
        sigma_b^2); the later lengths follow the length map and each layer uses chi_1 at its
        own q^l. None: every layer at q* (a straight line of slope log10(chi_1)/2).

    Returns:
      Array of length L, entry l-1 for layer l, the last entry 0:
      (1/2) sum_{k=l}^{L-1} log10 chi_1(q^k).
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    act = as_activation(activation, leaky_slope=leaky_slope)
    sw2, sb2 = float(sigma_w2), float(sigma_b2)
    if q1 is None:
        lengths = np.full(depth, _q_star(act, sw2, sb2, 1.0, n_points))
    else:
        lengths = np.empty(depth)
        lengths[0] = q1
        for layer in range(1, depth):
            lengths[layer] = _length_map(act, lengths[layer - 1], sw2, sb2, n_points)
    with np.errstate(divide="ignore"):
        per_layer = 0.5 * np.log10(_chi1_at(act, lengths[:-1], sw2, n_points))
    return np.append(np.cumsum(per_layer[::-1])[::-1], 0.0)


# ---------------------------------------------------------------------------- criticality

def critical_sigma_w2(activation, sigma_b2=0.0, *, bounds: tuple[float, float] = (1e-2, 1e3),
                      q0: float = 1.0, n_points: int = N_POINTS, leaky_slope: float = LEAKY_SLOPE):
    """sigma_w^2 on the order-to-chaos boundary: chi_1(sigma_w^2, sigma_b^2) = 1 with q* consistent.

    Args:
      sigma_b2: bias variance(s), any array shape.
      bounds: sigma_w^2 interval searched; the first crossing of chi_1 = 1 from below is taken.
      q0: where each search for q* starts. Where the length map has two stable fixed points
        (GELU and SiLU without bias for 2 < sigma_w^2 < 4: 0 and inf), chi_1 jumps across 1
        where the unstable one passes q0, and that jump is returned.

    Returns:
      Critical sigma_w^2 for each sigma_b^2 (nan where chi_1 does not cross 1 inside bounds).
      tanh: 1 at sigma_b = 0, increasing with sigma_b (Schoenholz et al. 2017, Fig. 1); ReLU: 2.
    """
    act = as_activation(activation, leaky_slope=leaky_slope)
    sb2 = np.asarray(sigma_b2, float)
    grid = np.geomspace(*bounds, 49).reshape((-1,) + (1,) * sb2.ndim)

    def chi_minus_one(sw2):
        return _chi1_at(act, _q_star(act, sw2, sb2, q0, n_points), sw2, n_points) - 1.0

    above = chi_minus_one(grid) >= 0
    first = np.argmax(above, axis=0)
    crosses = above.any(axis=0) & (first > 0)
    lo = np.take(grid.ravel(), np.maximum(first - 1, 0))
    hi = np.take(grid.ravel(), first)
    for _ in range(48):  # brackets shrink from a factor 1.27 to 1 + 1e-15
        mid = np.sqrt(lo * hi)
        below = chi_minus_one(mid) < 0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return _out(np.where(crosses, np.sqrt(lo * hi), np.nan))


def critical_sigma_w(activation, sigma_b=0.0, **kwargs):
    """Critical weight scale sigma_w (not squared) for bias scale(s) sigma_b (critical_sigma_w2)."""
    return _out(np.sqrt(critical_sigma_w2(activation, np.square(np.asarray(sigma_b, float)),
                                          **kwargs)))


def order_chaos_boundary(activation, sigma_b2_values, **kwargs) -> np.ndarray:
    """The boundary curve for a phase diagram: critical sigma_w^2 at each sigma_b^2 (1-D array)."""
    return np.atleast_1d(critical_sigma_w2(activation, np.asarray(sigma_b2_values, float),
                                           **kwargs))

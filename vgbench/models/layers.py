"""Pieces shared by the model factories: parameter init, safe norms, per-layer statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vgbench import activations, inits, norms
from vgbench.diagnostics import N_WEIGHT_SAMPLES, SATURATION_FRACTION, nan_forward
from vgbench.inits import InitHyper


class Parts:
    """The registry entries a run spec selects, bound to its hyperparameters."""

    def __init__(self, spec):
        self.act = activations.get(spec.activation).bind(spec)
        self.init = inits.get(spec.init)
        self.norm = norms.get_norm(spec.norm)
        self.skip = norms.get_skip(spec.skip)
        self.hp = InitHyper(sigma_w=spec.sigma_w, sigma_b=spec.sigma_b, he_gain2=self.act.he_gain2)

    def weight(self, key, shape):
        fan_in, fan_out = inits.fans(shape)
        kw, kb = jax.random.split(key)
        w = self.init.weight(kw, shape, fan_in, fan_out, self.hp)
        b = self.init.bias(kb, (shape[-1],), self.hp)
        return jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)


def safe_norm(x, axis=None):
    """Euclidean norm without squaring raw tiny values (scale by the largest magnitude first).

    A backpropagated signal of 1e-25 is a real measurement, but its square underflows float32;
    dividing by the largest magnitude first keeps every summand in range.
    """
    x = jnp.asarray(x)
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    m_safe = jnp.where(m > 0, m, 1.0)
    scaled = jnp.sqrt(jnp.sum(jnp.square(x / m_safe), axis=axis, keepdims=True))
    out = m * scaled
    return jnp.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def stacked_axes(params, keys):
    """Per leaf of ``params``, how many leading layer axes it has: 1 under a stacked ``keys``
    entry (a dict whose leaves stack identical layers), else 0 (one layer's own array)."""
    return {k: jax.tree_util.tree_map(lambda _: int(k in keys and isinstance(v, dict)), v)
            for k, v in params.items()}


def _sized_leaves(tree):
    return [leaf for leaf in jax.tree_util.tree_leaves(tree) if leaf.size]


def tree_norm(tree):
    """Norm of all a tree's entries together: the norm of the vector of per-leaf norms.

    Never through a concatenation of the leaves: XLA:CPU fuses a concatenation into the
    reductions that follow as a slow gather loop (300 ms for a 5M-entry tree, 0.6 ms this way).
    """
    leaves = _sized_leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return safe_norm(jnp.stack([safe_norm(leaf) for leaf in leaves]))


def stacked_norms(tree, count: int):
    """Norm of each slice along the leading (stacked-layer) axis: shape [count]."""
    leaves = _sized_leaves(tree)
    if count == 0 or not leaves:
        return jnp.zeros((count,), jnp.float32)
    per_leaf = [safe_norm(jnp.reshape(leaf, (count, -1)), axis=1) for leaf in leaves]
    return safe_norm(jnp.stack(per_leaf), axis=0)


def delta_norm(g):
    """RMS over the batch of each example's ||dL/dh||, from the gradient of the batch-mean loss.

    The batch-mean loss scales each example's gradient by 1/B; undoing that, the RMS over the
    batch of the per-example norm is sqrt(B) * ||g||_F.
    """
    batch = g.shape[0]
    return jnp.sqrt(jnp.float32(batch)) * safe_norm(g)


def layer_stats(act: activations.BoundActivation, pre, post, theta, out):
    """Forward statistics of one layer (arrays with the batch axis first).

    A unit is *flat* on an example when |phi'(pre)| < 1 % of sup |phi'|. Where the activation's
    flat region is a saturating tail (sigmoid, tanh, ELU; Glorot & Bengio 2010), flat units
    are ``tail_saturation``; where it is a rectifier's switched-off side (ReLU, GELU, SiLU),
    they are ``inactive_fraction``, which is normal on about half the examples; the other
    count is 0 (NaN for an activation that does not declare its flat region). ``saturation``
    is the flat fraction whatever the cause (the record's original field, kept as it was).
    All three are fractions of unit x example pairs. ``dead_fraction``: units that output 0
    on every example of the batch (a dead ReLU). ``act_length_cv``: :func:`length_spread`.
    """
    deriv = act.derivative(pre, theta)
    flat = jnp.mean((jnp.abs(deriv) < SATURATION_FRACTION * act.derivative_max).astype(jnp.float32))
    unit_axes = tuple(range(0, post.ndim - 1))  # batch (and spatial) axes: a unit is a channel
    dead = jnp.all(post == 0, axis=unit_axes)
    kind = act.flat_region
    return {"act_rms": safe_norm(out) / jnp.sqrt(jnp.float32(out.size)),
            "saturation": flat,
            "tail_saturation": _flat_share(flat, kind, "tail"),
            "inactive_fraction": _flat_share(flat, kind, "off"),
            "dead_fraction": jnp.mean(dead.astype(jnp.float32)),
            "act_length_cv": length_spread(pre)}


def length_spread(pre):
    """Standard deviation over mean of the pre-activation's length q = ||h||^2 / N (N units, the
    last axis), across the examples of the batch (and positions, time steps): mean-field
    theory's q is one number per layer; at finite width it spreads."""
    q = jnp.mean(jnp.square(pre), axis=-1)
    return jnp.std(q) / jnp.mean(q)


def _flat_share(flat, kind: str | None, counted: str):
    if kind is None:
        return jnp.float32(jnp.nan)
    return flat if kind == counted else jnp.zeros_like(flat)


NAN_STATS = nan_forward()   # every forward statistic, for a layer it does not describe


def pick_samples(w, lead: int | None = None):
    """N_WEIGHT_SAMPLES fixed entries of a weight (on its diagonal-ish positions)."""
    shape = w.shape if lead is None else w.shape[1:]
    flat_size = 1
    for d in shape:
        flat_size *= d
    idx = jnp.array([(i * 7919 + 13) % flat_size for i in range(N_WEIGHT_SAMPLES)])
    if lead is None:
        return jnp.ravel(w)[idx]
    if lead == 0:
        return jnp.zeros((0, N_WEIGHT_SAMPLES), jnp.float32)
    return jnp.reshape(w, (lead, -1))[:, idx]

"""Multilayer perceptron: a stem layer, depth-1 identical hidden layers, a linear head.

Layer l computes z = h W + b (+ probe), n = norm(z), a = phi(n), h' = skip(h, a); the stem has
no skip (its input width differs), the head is linear.

Parameters are stored with the identical hidden layers stacked on a leading axis. Deep stacks
run with ``lax.scan`` over that axis (as equinox's ``MLP(scan=True)``), so compile time does not
grow with depth. Up to ``UNROLL_MAX_HIDDEN`` hidden layers of width ``UNROLL_WIDE`` or more (up
to ``UNROLL_MAX_HIDDEN_NARROW`` narrower ones), the training program instead carries the hidden
layers as a tuple of separate arrays (``compute_layout``) and ``apply`` runs them unrolled:
XLA:CPU copies each scanned layer's weight slice before every matmul, which costs wide layers
more than unrolling costs in compile time (measurements: docs/running.md, "Speed of the
training step"). ``apply``, ``per_layer`` and ``weight_samples`` accept either layout and give
the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vgbench.models.base import Model, register_model
from vgbench.models.layers import (
    NAN_STATS,
    Parts,
    delta_norm,
    layer_stats,
    pick_samples,
    stacked_axes,
    stacked_norms,
    tree_norm,
)

UNROLL_MAX_HIDDEN = 24   # hidden layers run unrolled in training up to this many, scanned beyond
UNROLL_WIDE = 128        # ... if at least this wide; narrower stacks unroll up to:
UNROLL_MAX_HIDDEN_NARROW = 8


def unrolled(n_hidden: int, width: int) -> bool:
    """Whether training runs ``n_hidden`` hidden layers of ``width`` units unrolled."""
    limit = UNROLL_MAX_HIDDEN if width >= UNROLL_WIDE else min(UNROLL_MAX_HIDDEN,
                                                               UNROLL_MAX_HIDDEN_NARROW)
    return 0 < n_hidden <= limit


def make_mlp(spec, task) -> Model:
    """Fully connected network of `depth` hidden layers of `width` units (Rumelhart et al. 1986)."""
    if len(task.input_shape) != 1:
        raise ValueError(f"model 'mlp' needs flat inputs; task {task.name!r} gives {task.input_shape}")
    parts = Parts(spec)
    d_in, width, d_out, depth = task.input_shape[0], spec.width, task.output_dim, spec.depth
    n_hidden = depth - 1

    def layer_init(key, fan_in):
        k_w, k_n = jax.random.split(key)
        w, b = parts.weight(k_w, (fan_in, width))
        norm_p, norm_s = parts.norm.init(width)
        p = {"w": w, "b": b, "norm": norm_p, "act": parts.act.init_theta(width)}
        return p, norm_s

    def hidden_init(key):
        p, s = layer_init(key, width)
        p["skip"] = parts.skip.init(width)
        return p, s

    def init(key):
        k_stem, k_hidden, k_out = jax.random.split(key, 3)
        stem_p, stem_s = layer_init(k_stem, d_in)
        hid_p, hid_s = jax.vmap(hidden_init)(jax.random.split(k_hidden, n_hidden))
        w, b = parts.weight(k_out, (width, d_out))
        params = {"stem": stem_p, "hidden": hid_p, "out": {"w": w, "b": b}}
        return params, {"stem": stem_s, "hidden": hid_s}

    def layer(p, s, h, probe, *, train, residual, diag):
        z = h @ p["w"] + p["b"]
        if probe is not None:
            z = z + probe
        n, s_new = parts.norm.apply(p["norm"], s, z, train=train)
        a = parts.act.apply(n, p["act"])
        out = parts.skip.apply(p["skip"], h, a) if residual else a
        stats = layer_stats(parts.act, n, a, p["act"], out) if diag else {}
        return out, s_new, stats

    def apply(params, state, x, *, train, probes=None):
        diag = probes is not None
        pr = probes if diag else {"stem": None, "hidden": None, "out": None}
        h, stem_s, stem_stats = layer(params["stem"], state["stem"], x, pr["stem"],
                                      train=train, residual=False, diag=diag)

        def body(h, xs):
            p, s, probe = xs
            h, s_new, stats = layer(p, s, h, probe, train=train, residual=True, diag=diag)
            return h, (s_new, stats)

        if isinstance(params["hidden"], tuple):   # the unrolled compute layout
            hid_s, hid_stats = [], []
            # split, not indexing: the gradient of n index slices is n padded full-size adds
            layer_probes = ([q[0] for q in jnp.split(pr["hidden"], n_hidden)] if diag
                            else [None] * n_hidden)
            for i, (p, probe) in enumerate(zip(params["hidden"], layer_probes)):
                s = jax.tree_util.tree_map(lambda a: a[i], state["hidden"])
                h, (s_new, stats) = body(h, (p, s, probe))
                hid_s.append(s_new)
                hid_stats.append(stats)
            hid_s, hid_stats = (jax.tree_util.tree_map(lambda *a: jnp.stack(a), *t)
                                for t in (hid_s, hid_stats))
        else:
            h, (hid_s, hid_stats) = jax.lax.scan(
                body, h, (params["hidden"], state["hidden"], pr["hidden"]))
        out = h @ params["out"]["w"] + params["out"]["b"]
        if diag:
            out = out + pr["out"]
        new_state = {"stem": stem_s, "hidden": hid_s}
        stats = {}
        if diag:
            stats = {k: jnp.concatenate([stem_stats[k][None], hid_stats[k],
                                         jnp.full((1,), NAN_STATS[k], jnp.float32)])
                     for k in stem_stats}
        return out, new_state, stats

    def probes(batch_size):
        return {"stem": jnp.zeros((batch_size, width), jnp.float32),
                "hidden": jnp.zeros((n_hidden, batch_size, width), jnp.float32),
                "out": jnp.zeros((batch_size, d_out), jnp.float32)}

    def probe_stats(g):
        hidden = jax.vmap(delta_norm)(g["hidden"]) if n_hidden else jnp.zeros((0,), jnp.float32)
        return {"delta_norm": jnp.concatenate([delta_norm(g["stem"])[None], hidden,
                                               delta_norm(g["out"])[None]])}

    def per_layer(tree):
        hidden = tree["hidden"]
        if isinstance(hidden, tuple):
            hidden_norms = jnp.stack([tree_norm(t) for t in hidden])
        else:
            hidden_norms = stacked_norms(hidden, n_hidden)
        return jnp.concatenate([tree_norm(tree["stem"])[None], hidden_norms,
                                tree_norm(tree["out"])[None]])

    def weight_samples(params):
        hidden = params["hidden"]
        if isinstance(hidden, tuple):
            hidden_samples = jnp.stack([pick_samples(t["w"]) for t in hidden])
        else:
            hidden_samples = pick_samples(hidden["w"], n_hidden)
        return jnp.concatenate([pick_samples(params["stem"]["w"])[None], hidden_samples,
                                pick_samples(params["out"]["w"])[None]])

    def compute_layout(params):
        if not unrolled(n_hidden, spec.width) or isinstance(params["hidden"], tuple):
            return params
        hidden = tuple(jax.tree_util.tree_map(lambda a: a[i], params["hidden"])
                       for i in range(n_hidden))
        return {**params, "hidden": hidden}

    names = tuple(f"dense_{i + 1}" for i in range(depth)) + ("output",)
    return Model(init=init, apply=apply, layer_names=names, probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples,
                 compute_layout=compute_layout,
                 layer_axes=lambda params: stacked_axes(params, ("hidden",)))


def _check(spec) -> None:
    return None


register_model("mlp", make_mlp, check=_check, mean_field=True)

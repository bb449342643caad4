"""Convolutional network: a stem, then blocks of two convolutions, global pooling, linear head.

Images (H, W, C) get 3x3 convolutions, one-dimensional signals (W, C) width-3 ones: the same
factory serves both, with the same axes (activation, init, norm, skip).

Each block computes n1 = norm(conv(h)), a1 = phi(n1), n2 = norm(conv(a1)), h' = phi(skip(h, n2)):
with ``skip = residual`` it is the basic block of a ResNet (He et al. 2016), with ``skip = none``
the same convolutions form a plain stack. ``depth`` counts convolution layers, stem included,
so it is 1 + 2 * blocks (odd). Blocks are stacked and scanned; spatial size and width stay fixed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vgbench.models.base import Model, register_model
from vgbench.models.conv import conv
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

KERNEL = 3


def make_cnn(spec, task) -> Model:
    """Plain conv stack or ResNet basic blocks (skip = residual) on images (LeCun et al. 1998; He et al. 2016)."""
    if len(task.input_shape) not in (2, 3):
        raise ValueError(f"model 'cnn' needs image inputs (H, W, C) or signals (W, C); task "
                         f"{task.name!r} gives {task.input_shape}")
    parts = Parts(spec)
    *spatial, c_in = task.input_shape
    spatial_axes = tuple(range(1, len(spatial) + 1))
    kernel = (KERNEL,) * len(spatial)
    width, d_out = spec.width, task.output_dim
    n_blocks = (spec.depth - 1) // 2

    def conv_init(key, c_from):
        w, b = parts.weight(key, (*kernel, c_from, width))
        norm_p, norm_s = parts.norm.init(width)
        return {"w": w, "b": b, "norm": norm_p, "act": parts.act.init_theta(width)}, norm_s

    def block_init(key):
        k1, k2 = jax.random.split(key)
        p1, s1 = conv_init(k1, width)
        p2, s2 = conv_init(k2, width)
        return {"conv1": p1, "conv2": p2, "skip": parts.skip.init(width)}, {"conv1": s1, "conv2": s2}

    def init(key):
        k_stem, k_blocks, k_out = jax.random.split(key, 3)
        stem_p, stem_s = conv_init(k_stem, c_in)
        blk_p, blk_s = jax.vmap(block_init)(jax.random.split(k_blocks, n_blocks))
        w, b = parts.weight(k_out, (width, d_out))
        return ({"stem": stem_p, "blocks": blk_p, "out": {"w": w, "b": b}},
                {"stem": stem_s, "blocks": blk_s})

    def pre(p, s, h, probe, train):
        z = conv(h, p["w"], p["b"])
        if probe is not None:
            z = z + probe
        return parts.norm.apply(p["norm"], s, z, train=train)

    def apply(params, state, x, *, train, probes=None):
        diag = probes is not None
        pr = probes if diag else {"stem": None, "blocks": None, "out": None}
        n0, stem_s = pre(params["stem"], state["stem"], x, pr["stem"], train)
        h = parts.act.apply(n0, params["stem"]["act"])
        stats0 = layer_stats(parts.act, n0, h, params["stem"]["act"], h) if diag else {}

        def body(h, xs):
            p, s, probe = xs
            probe = probe if diag else {"conv1": None, "conv2": None}
            n1, s1 = pre(p["conv1"], s["conv1"], h, probe["conv1"], train)
            a1 = parts.act.apply(n1, p["conv1"]["act"])
            n2, s2 = pre(p["conv2"], s["conv2"], a1, probe["conv2"], train)
            joined = parts.skip.apply(p["skip"], h, n2)
            out = parts.act.apply(joined, p["conv2"]["act"])
            stats = {}
            if diag:
                st1 = layer_stats(parts.act, n1, a1, p["conv1"]["act"], a1)
                st2 = layer_stats(parts.act, joined, out, p["conv2"]["act"], out)
                stats = {k: jnp.stack([st1[k], st2[k]]) for k in st1}
            return out, ({"conv1": s1, "conv2": s2}, stats)

        h, (blk_s, blk_stats) = jax.lax.scan(body, h, (params["blocks"], state["blocks"], pr["blocks"]))
        pooled = jnp.mean(h, axis=spatial_axes)
        out = pooled @ params["out"]["w"] + params["out"]["b"]
        if diag:
            out = out + pr["out"]
        stats = {}
        if diag:
            stats = {k: jnp.concatenate([stats0[k][None], jnp.reshape(blk_stats[k], (-1,)),
                                         jnp.full((1,), NAN_STATS[k], jnp.float32)])
                     for k in stats0}
        return out, {"stem": stem_s, "blocks": blk_s}, stats

    def probes(batch_size):
        fmap = jnp.zeros((batch_size, *spatial, width), jnp.float32)
        stacked = jnp.zeros((n_blocks, batch_size, *spatial, width), jnp.float32)
        return {"stem": fmap, "blocks": {"conv1": stacked, "conv2": stacked},
                "out": jnp.zeros((batch_size, d_out), jnp.float32)}

    def probe_stats(g):
        if n_blocks:
            pair = jnp.stack([jax.vmap(delta_norm)(g["blocks"]["conv1"]),
                              jax.vmap(delta_norm)(g["blocks"]["conv2"])], axis=1).reshape(-1)
        else:
            pair = jnp.zeros((0,), jnp.float32)
        return {"delta_norm": jnp.concatenate([delta_norm(g["stem"])[None], pair,
                                               delta_norm(g["out"])[None]])}

    def per_layer(tree):
        blocks = tree["blocks"]
        # the skip's parameters (if any) count with the block's second convolution
        c1 = stacked_norms(blocks["conv1"], n_blocks)
        c2 = stacked_norms({"conv2": blocks["conv2"], "skip": blocks["skip"]}, n_blocks)
        pair = jnp.stack([c1, c2], axis=1).reshape(-1)
        return jnp.concatenate([tree_norm(tree["stem"])[None], pair, tree_norm(tree["out"])[None]])

    def weight_samples(params):
        blocks = params["blocks"]
        pair = jnp.stack([pick_samples(blocks["conv1"]["w"], n_blocks),
                          pick_samples(blocks["conv2"]["w"], n_blocks)], axis=1)
        return jnp.concatenate([pick_samples(params["stem"]["w"])[None],
                                pair.reshape(-1, pair.shape[-1]),
                                pick_samples(params["out"]["w"])[None]])

    names = tuple(f"conv_{i + 1}" for i in range(spec.depth)) + ("output",)
    return Model(init=init, apply=apply, layer_names=names, probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples,
                 layer_axes=lambda params: stacked_axes(params, ("blocks",)))


def _check(spec) -> None:
    if spec.depth % 2 == 0:
        raise ValueError(f"model 'cnn': depth counts the stem plus two convolutions per block, so it "
                         f"must be odd (3, 5, 7, ..., 57); got {spec.depth}")


COST_PER_LAYER_STEP = 1.2e-3   # seconds, laptop CPU: an 8x8 convolution layer costs ~30 MLP layers

register_model("cnn", make_cnn, check=_check, defaults={"depth": 5}, input_layout="channels",
               cost=lambda spec: spec.depth * COST_PER_LAYER_STEP, eval_chunk=128)

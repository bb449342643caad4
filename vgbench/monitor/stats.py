"""``Monitor(loss_fn)``: the loss, its gradient and per-layer statistics, inside a jitted step.

The statistics are vgbench's own (the rows of :data:`vgbench.diagnostics.TABLE`), computed the
way the benchmark computes them: ``delta_norm`` from the gradient with respect to a zero probe
added to each tapped value (one backward pass gives dL/dh at every tap, alongside dL/dW),
``act_rms`` the RMS of the tapped value, ``grad_norm`` / ``weight_norm`` / ``update_ratio``
per parameter group.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vgbench.models.layers import delta_norm, safe_norm, tree_norm
from vgbench.monitor.taps import TapContext, linen_taps, tapping

LAYER_STATS = ("delta_norm", "act_rms")                      # one value per tap, in tap order
GROUP_STATS = ("grad_norm", "weight_norm", "update_ratio")   # one value per parameter group
STEP_STATS = ("loss", "grad_global_norm")                    # one value per step


def _key_text(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _natural(text: str):
    """Sort key that puts ``Dense_2`` before ``Dense_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def group_by(groups) -> Callable[[tuple[str, ...]], str]:
    """``path -> group name`` for a ``groups`` argument: None (the top-level key), an int k
    (the first k keys of the path, joined by ``/``) or a function of the path's keys."""
    if groups is None:
        groups = 1
    if isinstance(groups, int):
        if groups < 1:
            raise ValueError(f"groups={groups}: the number of leading path keys must be >= 1")
        return lambda path: "/".join(path[:groups]) or "params"
    if callable(groups):
        return lambda path: str(groups(path))
    raise TypeError(f"groups must be None, an int or a function of a parameter's path, got {groups!r}")


class Monitor:
    """Wrap ``loss_fn(params, *args) -> loss`` (or ``(loss, aux)`` with ``has_aux``) so that
    ``monitor(params, *args)`` returns ``(loss, grads, stats)``, usable inside ``jax.jit``.

    Args:
      loss_fn: the user's loss. Values it marks with :func:`vgbench.tap` are the layers.
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the call returns ``((loss, aux), grads, stats)``.
      linen: also tap every flax.linen Dense/DenseGeneral/Conv/ConvTranspose/Einsum output
        (:func:`vgbench.monitor.linen_taps`) while ``loss_fn`` runs (it calls ``module.apply``).
      groups: how parameters are grouped for ``grad_norm``, ``weight_norm``, ``update_ratio``:
        None (the top-level key of the params pytree), an int (that many leading keys) or a
        function ``path_keys -> name``. Groups are ordered as the program first calls their
        flax module (linen), else by name with numbers in numeric order.
      per_example: ``delta_norm`` is the RMS over the batch (axis 0 of the tapped value) of
        each example's ||dL/dh|| for a batch-mean loss, as vgbench records it
        (:func:`vgbench.models.layers.delta_norm`); False: the plain norm ||dL/dh||.

    ``stats`` holds arrays: ``loss`` and ``grad_global_norm`` (scalars), ``delta_norm`` and
    ``act_rms`` (one per tapped value, in tap order: :attr:`layer_names`), ``grad_norm`` and
    ``weight_norm`` (one per group: :attr:`group_names`). ``monitor(..., measure=False)``
    (a static Python bool) returns plain ``jax.value_and_grad`` results and ``{}``.
    """

    def __init__(self, loss_fn: Callable, *, has_aux: bool = False, linen: bool = False,
                 groups=None, per_example: bool = True):
        if not callable(loss_fn):
            raise TypeError(f"Monitor: loss_fn must be callable, got {loss_fn!r}")
        self.loss_fn = loss_fn
        self.has_aux = has_aux
        self.linen = linen
        self.per_example = per_example
        self._group_of = group_by(groups)
        self._layer_names: tuple[str, ...] | None = None
        self._group_names: tuple[str, ...] | None = None
        self._module_order: list[str] = []

    # ------------------------------------------------------------------ names, known once traced
    @property
    def layer_names(self) -> tuple[str, ...]:
        """The tapped values' keys, in the order the last traced call tapped them."""
        if self._layer_names is None:
            raise RuntimeError("Monitor.layer_names: call the monitor (or the jitted step) once first")
        return self._layer_names

    @property
    def group_names(self) -> tuple[str, ...]:
        """The parameter groups' names, in the order of ``grad_norm`` and ``update_ratio``."""
        if self._group_names is None:
            raise RuntimeError("Monitor.group_names: call the monitor (or the jitted step) once first")
        return self._group_names

    def _grouping(self, tree) -> list[list[int]]:
        """Leaf indices of ``tree`` per group, groups in order (and :attr:`group_names` set)."""
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        members: dict[str, list[int]] = {}
        for i, (path, _) in enumerate(leaves):
            members.setdefault(self._group_of(tuple(_key_text(k) for k in path)), []).append(i)
        called = {name: i for i, name in enumerate(self._module_order)}
        names = sorted(members, key=lambda g: (g not in called, called.get(g, 0), _natural(g)))
        self._group_names = tuple(names)
        return [members[g] for g in names]

    def group_norms(self, tree):
        """The norm of each parameter group of ``tree`` (params, grads or updates): [groups]."""
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.stack([tree_norm([leaves[i] for i in group]) for group in self._grouping(tree)])

    def update_ratio(self, params, updates):
        """||update|| / ||params|| of each parameter group (``updates`` as optax returns them)."""
        return self.group_norms(updates) / self.group_norms(params)

    # ------------------------------------------------------------------ the call
    def _run(self, params, args, context: TapContext):
        taps = linen_taps() if self.linen else contextlib.nullcontext()
        with tapping(context), taps:
            out = self.loss_fn(params, *args)
        return out if self.has_aux else (out, None)

    def __call__(self, params, *args, measure: bool = True):
        if not measure:
            value, grads = jax.value_and_grad(self.loss_fn, has_aux=self.has_aux)(params, *args)
            return value, grads, {}
        found = TapContext()   # one abstract pass: which values are tapped, with what shapes
        jax.eval_shape(lambda p, a: self._run(p, a, found)[0], params, args)
        self._module_order = found.modules
        probes = {s.key: jnp.zeros(s.shape, s.dtype) for s in found.sites}

        def objective(p, q):
            context = TapContext(q)
            loss, aux = self._run(p, args, context)
            return loss, (aux, context.act_rms)

        (loss, (aux, act_rms)), (grads, probe_grads) = jax.value_and_grad(
            objective, argnums=(0, 1), has_aux=True)(params, probes)
        keys = [s.key for s in found.sites]
        self._layer_names = tuple(keys)
        norm = delta_norm if self.per_example else safe_norm
        norm_of = lambda g: norm(g) if g.ndim else jnp.abs(g)   # a tapped scalar: |dL/dh|
        empty = jnp.zeros((0,), jnp.float32)
        stats = {"loss": jnp.asarray(loss, jnp.float32), "grad_global_norm": tree_norm(grads),
                 "delta_norm": jnp.stack([norm_of(probe_grads[k]) for k in keys]) if keys else empty,
                 "act_rms": jnp.stack([act_rms[k] for k in keys]) if keys else empty,
                 "grad_norm": self.group_norms(grads), "weight_norm": self.group_norms(params)}
        return ((loss, aux) if self.has_aux else loss), grads, stats

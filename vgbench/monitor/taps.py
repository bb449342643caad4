"""``tap(name, h)``: mark an intermediate value of any JAX function for the monitor.

Outside a :class:`vgbench.monitor.Monitor` call, ``tap`` returns ``h`` itself: the traced
program (its jaxpr) is the same as without it. While the monitor traces the user's loss it
pushes a :class:`TapContext` on a module-level stack; each ``tap`` then returns
``h + probe[name]`` (a zero probe whose gradient is dL/dh) and records the RMS of ``h``.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vgbench.models.layers import safe_norm

_STACK: list[TapContext] = []   # the monitor's contexts, innermost last (set while tracing)


class Site(NamedTuple):
    """One tapped value: its key (the name, ``@2`` on its second use in a call), shape, dtype."""

    key: str
    shape: tuple
    dtype: object


class TapContext:
    """What one traced call of the user's loss taps: the sites in call order, their RMS, and
    (``probes`` given) the zero probes added to them. ``modules``: the top-level flax module
    names in the order the program calls them (linen mode)."""

    def __init__(self, probes: dict | None = None):
        self.trace = None      # the loss's trace (set by :func:`tapping`): values of another
        self.probes = probes   # trace are inside a transform of the loss
        self.sites: list[Site] = []
        self.act_rms: dict = {}
        self.modules: list[str] = []
        self._uses: dict[str, int] = {}

    def inside_transform(self) -> bool:
        """Whether the value being tapped lives inside a ``lax.scan``, ``vmap`` or
        ``checkpoint`` body of the loss (another trace than the loss's own)."""
        from flax.core import tracers

        return tracers.current_trace() != self.trace

    def add(self, name: str, h):
        if self.inside_transform():
            raise ValueError(
                f"vgbench.tap({name!r}): the value is inside a lax.scan, vmap or checkpoint body "
                "of the loss, where its probe and RMS cannot leave the body; tap the "
                "transform's output instead (the scan's stacked outputs or final carry), or "
                "register the model with vgbench.register_flax_model, whose probes go through "
                "nn.scan and nn.RNN per iteration")
        self._uses[name] = self._uses.get(name, 0) + 1
        key = name if self._uses[name] == 1 else f"{name}@{self._uses[name]}"
        self.sites.append(Site(key, tuple(h.shape), h.dtype))
        self.act_rms[key] = safe_norm(h) / jnp.sqrt(jnp.float32(max(h.size, 1)))
        return h if self.probes is None else h + self.probes[key]


@contextlib.contextmanager
def tapping(context: TapContext):
    """Make ``context`` the one ``tap`` reports to while the block runs (in the trace of the
    function that enters it)."""
    from flax.core import tracers

    context.trace = tracers.current_trace()
    _STACK.append(context)
    try:
        yield context
    finally:
        _STACK.pop()


def tap(name: str, h):
    """``h`` unchanged; inside the monitor, ``h`` plus the zero probe of ``name``.

    Mark the output of a layer (a pre-activation, a residual stream) of any JAX function:
    plain JAX, Equinox, a flax module's ``__call__``. A name tapped twice in one call gets
    ``@2`` on its second value, ``@3`` on its third. ``h`` must be a floating-point array,
    batch axis first for the monitor's per-example ``delta_norm``. Not inside a ``lax.scan``,
    ``vmap`` or ``checkpoint`` body of the loss (its tracer would leave that body: one clear
    error says so); in ``linen`` mode a module running such a body is tapped at its output.
    """
    if not _STACK:
        return h
    h = jnp.asarray(h)
    if not jnp.issubdtype(h.dtype, jnp.inexact):
        raise TypeError(f"vgbench.tap({name!r}): a tapped value must be floating point, "
                        f"got {h.dtype}")
    return _STACK[-1].add(str(name), h)


def linen_taps():
    """A context in which the output of every flax.linen module call that the vgbench flax
    adapter counts as a layer (a module holding parameters of its own, normalisation layers
    and the network itself aside: :func:`vgbench.models.flax_adapter.default_layer`) is
    tapped, named by module path like the adapter's layers (``Block_0/Dense_1``; ``@2`` on a
    module's second call)."""
    import flax.linen as nn

    from vgbench.models.flax_adapter import default_layer

    lifting: list[bool] = []   # per module call under way: whether it ran a lifted transform

    def intercept(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if _STACK and _STACK[-1].inside_transform():
            # inside nn.scan, nn.RNN, nn.vmap or nn.remat: the module running it is tapped at
            # its output instead
            if lifting:
                lifting[-1] = True
            return next_fun(*args, **kwargs)
        module = context.module
        path = tuple(str(p) for p in module.path) if module.scope is not None else ()
        if _STACK and path and path[0] not in _STACK[-1].modules:
            _STACK[-1].modules.append(path[0])
        lifting.append(False)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            lifted = lifting.pop()
        own = module.variables.get("params", {}) if module.scope is not None else {}
        holds = any(not hasattr(v, "keys") for v in own.values())
        if lifted and path:   # its output's first floating array: an RNN's outputs, a carry
            leaves, treedef = jax.tree_util.tree_flatten(out)
            at = next((i for i, leaf in enumerate(leaves) if hasattr(leaf, "dtype")
                       and jnp.issubdtype(leaf.dtype, jnp.floating)), None)
            if at is not None:
                leaves[at] = tap("/".join(path), leaves[at])
            return jax.tree_util.tree_unflatten(treedef, leaves)
        if not (hasattr(out, "shape") and jnp.issubdtype(out.dtype, jnp.floating)
                and default_layer(module, path, holds)):
            return out
        return tap("/".join(path), out)

    return nn.intercept_methods(intercept)

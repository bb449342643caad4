"""Flax linen modules as vgbench models: ``register_flax_model(name, make_module)``.

``make_module(spec, task) -> flax.linen.Module`` builds the network for a run config; its
``__call__(x)`` maps a batch of task inputs (batch axis first) to the outputs the task's loss
reads, and may take ``train`` (a bool keyword) to switch batch norm or anything else between
training and evaluation. The adapter turns it into a :class:`vgbench.models.Model`:

* **Probes.** Every call of a ``Dense``, ``DenseGeneral``, ``Conv``, ``ConvTranspose`` or
  ``Einsum`` module gets a zero probe added to its output (through ``nn.intercept_methods``),
  and so does every output the author marks with ``self.perturb(name, x)`` (flax's own
  perturbation collection). Each probe site is one layer; the gradient with respect to the
  probes is the backpropagated signal dL/dh_l of every layer in one backward pass.
* **Layer order and names** come from the network itself: layers are ordered as the program
  computes them (input -> output), named by module path (``Block_0/Dense_1``; a module called
  twice gets ``@2`` on its second layer, a marked output ``path/name``).
* **Parameters** are grouped into layers by module path: a probed module's parameters are its
  layer's; the parameters of any other module (a LayerNorm, an embedding) join the layer of the
  last probed module called before it (the one whose output it processes), or the first layer.
  ``weight_samples`` reads each layer's ``kernel``.
* **State.** Every variable collection other than ``params`` (``batch_stats``...) is state:
  updated in training, read in evaluation, threaded through the program as a pytree.

Forward statistics: ``act_rms`` is the RMS of each probed output (a pre-activation); the
adapter cannot know which nonlinearity follows a layer, so the unit statistics
(``saturation``, ``tail_saturation``, ``inactive_fraction``, ``dead_fraction``) are NaN
(recorded as null). Modules must be deterministic (no dropout RNG).
The module's own initializers apply; ``make_module`` may read ``spec.init`` and other fields.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from vgbench.models.base import Model, register_model
from vgbench.models.layers import N_WEIGHT_SAMPLES, NAN_STATS, delta_norm, pick_samples, safe_norm, tree_norm

PROBE_PARAMS = "params"
PERTURBATIONS = "perturbations"
_DROPPED = (PERTURBATIONS, "intermediates")   # collections that are neither params nor state
_INIT_BATCH = 2


def _probed_types() -> tuple[type, ...]:
    import flax.linen as nn

    return tuple(getattr(nn, n) for n in ("Dense", "DenseGeneral", "Conv", "ConvTranspose",
                                          "Einsum") if hasattr(nn, n))


class _Site(NamedTuple):
    key: str            # the probe's key: the layer's name
    shape: tuple        # the probed output's shape at the init batch (batch axis first)
    dtype: object
    module: tuple | None   # path of the probed module (None for a marked output)


def _path_text(path) -> str:
    return "/".join(str(p) for p in path) or "root"


def _takes_train(module) -> bool:
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False
    return "train" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _interceptor(probes: dict | None, *, sites: list | None = None, order: list | None = None,
                 outputs: dict | None = None):
    """Context in which each probed module's output gets ``probes[key]`` added.

    ``sites`` collects each probed call as a :class:`_Site` and ``order`` every module call
    (``("module", path)``, then ``("site", key)`` for a probed one), in call order; ``outputs``
    collects each probed output by key (for its forward statistics).
    """
    import flax.linen as nn

    probed = _probed_types()
    calls: dict[str, int] = {}

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = tuple(module.path) if module.scope is not None else ()
        if order is not None:
            order.append(("module", path))
        out = next_fun(*args, **kwargs)
        if not isinstance(module, probed) or not hasattr(out, "shape"):
            return out
        text = _path_text(path)
        calls[text] = calls.get(text, 0) + 1
        key = text if calls[text] == 1 else f"{text}@{calls[text]}"
        if sites is not None:
            sites.append(_Site(key, tuple(out.shape), out.dtype, path))
        if order is not None:
            order.append(("site", key))
        if probes is not None:
            out = out + probes[key]
        if outputs is not None:
            outputs[key] = out
        return out

    return nn.intercept_methods(intercept)


def _key_path(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _in_program_order(apply_probed, variables, x0, sites: list[_Site]) -> list[_Site]:
    """Sites sorted by where the program first uses their probe (the probe's add).

    A jaxpr lists equations in the order they are computed, so this places outputs marked with
    ``perturb`` among the probed modules exactly; the modules' own call order is kept otherwise.
    """
    probes = {s.key: jax.ShapeDtypeStruct((_INIT_BATCH, *s.shape[1:]), s.dtype) for s in sites}
    closed = jax.make_jaxpr(apply_probed)(variables, x0, probes)
    leaves = jax.tree_util.tree_flatten_with_path(probes)[0]
    n_probe = len(leaves)
    probe_vars = closed.jaxpr.invars[-n_probe:]
    first_use = {}
    for index, eqn in enumerate(closed.jaxpr.eqns):
        for var in eqn.invars:
            if not isinstance(var, jex_core.Literal):
                first_use.setdefault(var, index)
    position = {_key_path(path)[0]: first_use.get(var, len(closed.jaxpr.eqns))
                for (path, _), var in zip(leaves, probe_vars)}
    return sorted(sites, key=lambda s: position[s.key])


def _unflatten_like(tree, leaves):
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def make_flax_model(module_factory: Callable, *, name: str = "flax") -> Callable:
    """A vgbench model factory ``make(spec, task) -> Model`` from ``module_factory(spec, task)``."""

    def make(spec, task) -> Model:
        import flax.linen as nn

        module = module_factory(spec, task)
        if not isinstance(module, nn.Module):
            raise TypeError(f"flax model {name!r}: make_module(spec, task) must return a "
                            f"flax.linen.Module, got {type(module).__name__}")
        return adapt_module(module, task.input_shape, name=name, output_dim=task.output_dim)

    return make


def adapt_module(module, input_shape: tuple[int, ...], *, name: str = "flax",
                 output_dim: int | None = None) -> Model:
    """The :class:`Model` of a flax.linen ``module`` whose inputs are ``(batch, *input_shape)``.

    ``output_dim``: where given, the size the output's last axis must have (the task's).
    """
    train_kw = _takes_train(module)
    x0 = jax.ShapeDtypeStruct((_INIT_BATCH, *input_shape), jnp.float32)
    where = f"flax model {name!r} ({type(module).__name__})"

    def kwargs(train):
        return {"train": train} if train_kw else {}

    def raw_init(key):
        return module.init(key, jnp.zeros(x0.shape, x0.dtype), **kwargs(False))

    try:
        variables = jax.eval_shape(raw_init, jax.random.PRNGKey(0))
    except Exception as err:
        raise ValueError(f"{where}: init on a batch of shape {x0.shape} failed: "
                         f"{type(err).__name__}: {err}") from err
    if PROBE_PARAMS not in variables:
        raise ValueError(f"{where}: the module has no parameters")
    marked = variables.get(PERTURBATIONS, {})
    state_cols = tuple(c for c in variables if c != PROBE_PARAMS and c not in _DROPPED)
    abstract = {c: variables[c] for c in (PROBE_PARAMS, *state_cols)}

    # one abstract forward pass: which modules are probed, in which order, with what shapes
    found: list[_Site] = []
    order: list = []

    def record(v, x):
        with _interceptor(None, sites=found, order=order):
            return module.apply(v, x, **kwargs(False))

    out_shape = jax.eval_shape(record, abstract, x0)
    marked_leaves = jax.tree_util.tree_flatten_with_path(marked)[0]
    marked_sites = [_Site(_path_text(_key_path(p)), tuple(leaf.shape), leaf.dtype, None)
                    for p, leaf in marked_leaves]
    if not found and not marked_sites:
        raise ValueError(
            f"{where}: the module calls no Dense, DenseGeneral, Conv, ConvTranspose or Einsum "
            "module and marks no output with self.perturb(name, x): there is no layer to probe")
    returned = getattr(out_shape, "shape", type(out_shape).__name__)
    if output_dim is not None and (not isinstance(returned, tuple) or returned[-1:] != (output_dim,)):
        raise ValueError(f"{where}: the task needs outputs of shape (batch, {output_dim}); "
                         f"the module returns {returned}")
    sites = found + marked_sites
    n_layers = len(sites)

    def apply(params, state, x, *, train, probes=None):
        v = {PROBE_PARAMS: params, **state}
        if probes is not None and marked_sites:
            v[PERTURBATIONS] = _unflatten_like(marked, [probes[s.key] for s in marked_sites])
        mutable = list(state_cols) if (train and state_cols) else False
        outputs: dict = {}
        ctx = _interceptor(probes, outputs=outputs) if probes is not None else contextlib.nullcontext()
        with ctx:
            result = module.apply(v, x, **kwargs(train), mutable=mutable)
        if mutable:
            out, new_state = result[0], {c: result[1][c] for c in state_cols}
        else:
            out, new_state = result, state
        stats = {}
        if probes is not None:
            nan = jnp.full((), jnp.nan, jnp.float32)
            # the unit statistics need the nonlinearity that follows a layer, unknown here
            stats = {k: jnp.full((n_layers,), v, jnp.float32) for k, v in NAN_STATS.items()}
            stats["act_rms"] = jnp.stack([
                safe_norm(outputs[s.key]) / jnp.sqrt(jnp.float32(outputs[s.key].size))
                if s.key in outputs else nan for s in sites])
        return out, new_state, stats

    if marked_sites:
        def apply_probed(v, x, q):
            state = {c: v[c] for c in state_cols}
            return apply(v[PROBE_PARAMS], state, x, train=False, probes=q)[0]
        sites = _in_program_order(apply_probed, abstract, x0, sites)
    keys = [s.key for s in sites]

    # parameters by layer: a probed module's own; another module's join the layer of the last
    # probed module called before it (whose output it processes), else the first layer
    own = {}
    for s in sites:
        if s.module is not None:
            own.setdefault(s.module, s.key)
    after = {}
    last = None
    for kind, what in order:
        if kind == "site":
            last = what
        else:
            after.setdefault(what, last)

    def layer_of(module_path: tuple) -> str:
        for cut in range(len(module_path), -1, -1):   # the deepest probed module containing it
            if module_path[:cut] in own:
                return own[module_path[:cut]]
        for cut in range(len(module_path), -1, -1):
            if after.get(module_path[:cut]) is not None:
                return after[module_path[:cut]]
        return keys[0]

    param_leaves = jax.tree_util.tree_flatten_with_path(abstract[PROBE_PARAMS])[0]
    layer_leaves: list[list[int]] = [[] for _ in keys]
    kernel_leaf: dict[int, int] = {}
    for i, (path, _) in enumerate(param_leaves):
        names = _key_path(path)
        j = keys.index(layer_of(names[:-1]))
        layer_leaves[j].append(i)
        if names[-1] == "kernel" and own.get(names[:-1]) == keys[j]:
            kernel_leaf.setdefault(j, i)
    for j, members in enumerate(layer_leaves):
        if j not in kernel_leaf and members:
            kernel_leaf[j] = members[0]

    def init(key):
        v = raw_init(key)
        return v[PROBE_PARAMS], {c: v[c] for c in state_cols}

    def probes(batch_size):
        return {s.key: jnp.zeros((batch_size, *s.shape[1:]), s.dtype) for s in sites}

    def probe_stats(g):
        return {"delta_norm": jnp.stack([delta_norm(g[k]) for k in keys])}

    def per_layer(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.stack([tree_norm([leaves[i] for i in members]) for members in layer_leaves])

    def weight_samples(params):
        leaves = jax.tree_util.tree_leaves(params)
        return jnp.stack([pick_samples(jnp.asarray(leaves[kernel_leaf[j]], jnp.float32))
                          if j in kernel_leaf else jnp.zeros((N_WEIGHT_SAMPLES,), jnp.float32)
                          for j in range(n_layers)])

    return Model(init=init, apply=apply, layer_names=tuple(keys), probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples)


def register_flax_model(name: str, make_module: Callable, *, defaults: dict | None = None,
                        input_layout: str = "flat", doc: str | None = None) -> Callable:
    """Register a flax.linen network as model ``name``: ``make_module(spec, task) -> Module``.

    The entry runs in grids, ``vgbench train`` and ``vgbench diagnose`` like the built-in
    models (see :mod:`vgbench.models.flax_adapter` for what is probed and how layers are
    named). ``defaults``: config fields a run of it takes where a command line leaves them
    out (e.g. ``{"task": "seq_digits"}``). ``input_layout``: how the module takes a task's
    examples, ``"flat"`` (one vector each) or ``"channels"`` (images ``(H, W, C)``, sequences
    ``(T, C)``), as for :func:`vgbench.models.register_model`. The first line of ``doc`` (else of
    ``make_module``'s docstring) is what ``vgbench list`` and leaderboards show.
    """
    if not callable(make_module):
        raise TypeError(f"flax model {name!r}: make_module must be callable, got {make_module!r}")
    text = doc if doc is not None else inspect.getdoc(make_module)
    return register_model(name, make_flax_model(make_module, name=name), defaults=defaults,
                          input_layout=input_layout, doc=text)

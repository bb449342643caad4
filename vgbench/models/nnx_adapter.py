"""Flax NNX modules as vgbench models: ``register_nnx_model(name, make_module)``.

``make_module(spec, task, rngs) -> flax.nnx.Module`` builds the network for a run config from
an ``nnx.Rngs`` with a ``params`` and a ``dropout`` stream; its ``__call__(x)`` maps a batch of
task inputs (batch axis first) to outputs ``(batch, task.output_dim)``. The adapter turns it
into a :class:`vgbench.models.Model`:

* **Params and state.** ``init(key)`` builds the module with ``nnx.Rngs(params=key,
  dropout=fold_in(key, 1))`` and splits it (``nnx.split``): the ``nnx.Param`` variables are
  ``params``, every other variable (``nnx.BatchStat``, the RNG streams' keys and counts) is
  ``state``, both plain nested dicts keyed by the module path. ``apply`` merges them
  (``nnx.merge``), switches the module to ``train()`` or ``eval()`` mode, runs it and, in
  training, returns the variables the call updated (batch statistics; the dropout stream's
  count, so every training step draws a new mask from the seed and the step); evaluation
  returns the state it was given and runs without dropout.
* **Probes.** Every call of a ``Linear``, ``LinearGeneral``, ``Conv``, ``ConvTranspose`` or
  ``Einsum`` instance gets a zero probe added to its output: the adapter's copy of the module
  gives each such instance a subclass whose ``__call__`` adds the value of a :class:`Probe`
  variable set on the instance. Being a variable, the probe travels through ``nnx.scan`` and
  ``nnx.vmap`` like the layer's kernel: a stack of blocks built with ``nnx.vmap`` and run with
  ``nnx.scan`` gets one probe per block (the probe has the stack's leading axis), and each
  block is its own layer. The gradient with respect to the probes is dL/dh_l of every layer.
* **Layer order and names** follow the program: layers in call order (the blocks of a scanned
  stack one after another), named by module path (``blocks/0/linear`` for block 0 of the stack
  at ``blocks``); an instance called twice gets ``@2`` on its second layer.
* **Parameters by layer**: a probed module's own parameters are its layer's; another module's
  (a BatchNorm's scale) join the layer of the last probed module called before it, or the
  first layer; in a stack, the block's own probed module (each block's slice to that block's
  layer). ``weight_samples`` reads each layer's ``kernel``.

Forward statistics: ``act_rms`` is the RMS of each probed output outside a scanned stack (NaN
inside one); the unit statistics are NaN, as for the flax.linen adapter (the nonlinearity that
follows a layer is unknown). Values marked with ``self.perturb`` are not probed.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vgbench.models.base import Model, register_model
from vgbench.models.flax_adapter import (
    _COVERAGE,
    NORM_TYPES,
    Coverage,
    _floating,
    last_site_before,
    probe_info,
)
from vgbench.models.layers import N_WEIGHT_SAMPLES, NAN_STATS, delta_norm, pick_samples, safe_norm, tree_norm

_INIT_BATCH = 2
_PATH_ATTR = "vgbench_path"
_PROBE_ATTR = "vgbench_probe"


class Probe(nnx.Perturbation):
    """The zero added to a probed module's output; its gradient is dL/dh of that layer."""


class _Run:
    """What one forward pass of the adapted module records (a context, per thread)."""

    def __init__(self, own: set, *, outputs: dict | None = None, discover: dict | None = None):
        self.own = own                      # paths of the modules holding parameters of their own
        self.calls: dict[int, tuple] = {}   # id(instance) -> (instance, calls so far)
        self.outputs = outputs              # site key -> probed output (outside stacks)
        self.discover = discover            # module path -> first parameter's shape
        self.sites: list[_Site] = []
        self.events: list[tuple] = []       # ("module", path) or ("site", key), in call order


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("vgbench_nnx_run", default=None)


class _Site(NamedTuple):
    key: str            # the probe's key: module path, "@n" for the n-th call of an instance
    shape: tuple        # the probed output's shape at the init batch (batch axis first)
    dtype: object
    module: tuple       # path of the probed module
    stack: tuple = ()   # leading axes of the module's variables it runs sliced out of


def _path_text(path) -> str:
    return "/".join(str(p) for p in path) or "root"


def _norm_types() -> tuple[type, ...]:
    return tuple(getattr(nnx, n) for n in NORM_TYPES if hasattr(nnx, n))


def _probed(module, path: tuple, own: set) -> bool:
    """A layer: a module holding an ``nnx.Param`` of its own (``path`` in ``own``), not a
    normalisation layer and not the network itself."""
    return bool(path) and path in own and not isinstance(module, _norm_types())


def _first_param_shape(module) -> tuple | None:
    leaves = jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))
    return tuple(leaves[0].shape) if leaves else None


def _call(self, base, args, kwargs):
    run = _RUN.get()
    if run is None:
        return base.__call__(self, *args, **kwargs)
    path = getattr(self, _PATH_ATTR, ())
    run.events.append(("module", path))
    out = base.__call__(self, *args, **kwargs)
    if not _probed(self, path, run.own) or not _floating(out):
        return out
    instance, count = run.calls.get(id(self), (self, 0))
    run.calls[id(self)] = (instance, count + 1)   # the instance is kept: its id is not reused
    key = _path_text(path) + (f"@{count + 1}" if count else "")
    run.events.append(("site", key))
    if run.discover is not None:
        outer, inner = run.discover.get(path), _first_param_shape(self)
        stack = outer[:len(outer) - len(inner)] if outer and inner else ()
        run.sites.append(_Site(key, tuple(out.shape), out.dtype, path, stack))
    probe = getattr(self, _PROBE_ATTR + (f"_{count + 1}" if count else ""), None)
    if probe is not None:
        out = out + probe[...]
    if run.outputs is not None:   # read for layers outside a stack only (no leaked tracer)
        run.outputs[key] = out
    return out


_RECORDING: dict[type, type] = {}


def _recording(cls: type) -> type | None:
    """``cls`` with a ``__call__`` that records the call and adds a probe (None: cannot)."""
    if cls not in _RECORDING:
        def __call__(self, *args, **kwargs):
            return _call(self, cls, args, kwargs)

        try:
            _RECORDING[cls] = type(cls.__name__, (cls,), {
                "__call__": __call__, "__module__": cls.__module__,
                "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})
        except TypeError:
            _RECORDING[cls] = None
    return _RECORDING[cls]


def _instrument(module) -> None:
    """Give every module of ``module`` its path and a recording ``__call__`` (in place)."""
    for path, sub in list(nnx.iter_modules(module)):
        cls = type(sub)
        if not callable(sub) or cls in _RECORDING.values():
            continue
        recording = _recording(cls)
        if recording is not None:
            sub.__class__ = recording
            setattr(sub, _PATH_ATTR, tuple(path))


def _flat(state) -> list[tuple[tuple, object]]:
    return [(tuple(path), var) for path, var in nnx.to_flat_state(state)]


def _nest(paths, values) -> dict:
    """Values as nested dicts keyed by each path's parts (as text)."""
    tree: dict = {}
    for path, value in zip(paths, values):
        node = tree
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = value
    return tree


def _unnest(tree, paths) -> list:
    out = []
    for path in paths:
        node = tree
        for part in path:
            node = node[str(part)]
        out.append(node)
    return out


def _is_key(value) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _pure(var):
    """A variable's value as stored in params/state (RNG keys as their raw uint32 data)."""
    value = var.get_value()
    return jax.random.key_data(value) if _is_key(value) else value


def adapt_nnx_module(module, input_shape: tuple[int, ...], *, name: str = "nnx",
                     output_dim: int | None = None, build: Callable | None = None,
                     input_dtype=jnp.float32):
    """The :class:`Model` of a flax.nnx ``module`` whose inputs are ``(batch, *input_shape)``,
    and the module's own ``(params, state)``.

    ``build(key) -> module`` makes a fresh module of the same structure for ``Model.init``;
    with it, ``module`` may be abstract (``nnx.eval_shape``) and the values returned are shapes.
    Without it, ``Model.init`` returns the values of ``module`` whatever the key.
    ``output_dim``: where given, the outputs must be ``(batch, output_dim)``.
    """
    where = f"nnx model {name!r} ({type(module).__name__})"
    module = nnx.clone(module)
    _instrument(module)
    graphdef, full = nnx.split(module)
    flat = _flat(full)
    param_items = [(p, v) for p, v in flat if isinstance(v, nnx.Param)]
    state_items = [(p, v) for p, v in flat if not isinstance(v, nnx.Param)]
    if not param_items:
        raise ValueError(f"{where}: the module has no nnx.Param")
    param_paths = [p for p, _ in param_items]
    state_paths = [p for p, _ in state_items]
    templates = dict(flat)
    key_paths = {p for p, v in state_items if _is_key(v.get_value())}
    # params as a pytree list their leaves by key text: parameter i is leaf position[i]
    order = jax.tree_util.tree_leaves(_nest(param_paths, list(range(len(param_paths)))))
    position = {i: k for k, i in enumerate(order)}

    def values_of(m) -> tuple[dict, dict]:
        by_path = dict(_flat(nnx.state(m)))
        return (_nest(param_paths, [_pure(by_path[p]) for p in param_paths]),
                _nest(state_paths, [_pure(by_path[p]) for p in state_paths]))

    def merged(params, state):
        values = dict(zip(param_paths, _unnest(params, param_paths)))
        values.update(zip(state_paths, _unnest(state, state_paths)))
        variables = [(p, templates[p].copy(jax.random.wrap_key_data(v) if p in key_paths else v))
                     for p, v in values.items()]
        return nnx.merge(graphdef, nnx.from_flat_state(variables))

    if build is None:
        own_params, own_state = values_of(module)
    else:
        own_params, own_state = jax.eval_shape(lambda k: values_of(build(k)),
                                               jax.random.PRNGKey(0))
    x0 = jax.ShapeDtypeStruct((_INIT_BATCH, *input_shape), input_dtype)
    first_shape = {}
    for path, var in param_items:
        first_shape.setdefault(path[:-1], tuple(var.get_value().shape))
    own = {p[:-1] for p in param_paths}
    record = _Run(own, discover=first_shape)

    def discover(params, state, x):
        m = merged(params, state)
        m.eval()
        token = _RUN.set(record)
        try:
            return m(x)
        finally:
            _RUN.reset(token)

    try:
        out_shape = jax.eval_shape(discover, own_params, own_state, x0)
    except Exception as err:
        raise ValueError(f"{where}: a forward pass on a batch of shape {x0.shape} failed: "
                         f"{type(err).__name__}: {err}") from err
    sites = list({s.key: s for s in reversed(record.sites)}.values())[::-1]   # first traces
    if not sites:
        raise ValueError(f"{where}: the module calls no module holding an nnx.Param of its own "
                         "(normalisation layers aside): there is no layer to probe")
    returned = tuple(getattr(out_shape, "shape", ())) or type(out_shape).__name__
    if output_dim is not None and returned != (_INIT_BATCH, output_dim):
        raise ValueError(f"{where}: the task needs outputs of shape (batch, {output_dim}); "
                         f"the module returns {returned} on a batch of {_INIT_BATCH}"
                         + (" (one output per position: reduce over the positions, e.g. "
                            "x.mean(axis=1), before the head)"
                            if isinstance(returned, tuple) and len(returned) > 2 else ""))
    plan = _plan(sites, record.events, param_items)
    _COVERAGE[name] = _coverage(plan, sites, param_items)
    info = probe_info(_COVERAGE[name], None, plan.names)
    init = ((lambda key: values_of(build(key))) if build is not None
            else (lambda key: (own_params, own_state)))
    def state_of(m) -> dict:
        return values_of(m)[1]

    model = _model(plan, sites, merged, init, state_of, position, own)
    return model._replace(info=info), own_params, own_state


class _Plan(NamedTuple):
    names: tuple[str, ...]               # layer names, input -> output
    layers: list[tuple[str, tuple]]      # per layer: (site key, index into the site's stack)
    members: list[list[tuple[int, tuple]]]   # per layer: (param leaf, index) it counts
    kernels: dict[int, tuple[int, tuple]]    # layer -> (param leaf, index) of its kernel


def _owner(site: _Site, param_items) -> int:
    """How many parts of the site's module path name the stacked module it runs in."""
    for cut in range(len(site.module) + 1):
        under = [v for p, v in param_items if p[:cut] == site.module[:cut]]
        if all(tuple(v.get_value().shape[:len(site.stack)]) == site.stack for v in under):
            return cut
    return len(site.module)


def _plan(sites: list[_Site], events: list, param_items) -> _Plan:
    """Layers (stacks unrolled, in call order), and which parameters each one counts."""
    layers, names = [], []
    index_of: dict[tuple[str, tuple], int] = {}
    owners = {s.key: _owner(s, param_items) if s.stack else 0 for s in sites}
    i = 0
    while i < len(sites):
        group = [sites[i]]
        while (i + len(group) < len(sites) and sites[i + len(group)].stack
               and sites[i + len(group)].stack == group[0].stack
               and sites[i + len(group)].module[:owners[group[0].key]]
               == group[0].module[:owners[group[0].key]]):
            group.append(sites[i + len(group)])
        if not group[0].stack:
            group = group[:1]
        for index in _indices(group[0].stack):
            for site in group:
                cut = owners[site.key]
                text = site.key.split("/") if not site.stack else [
                    *map(str, site.module[:cut]), *map(str, index),
                    *site.key.split("/")[cut:]]
                index_of[(site.key, index)] = len(layers)
                layers.append((site.key, index))
                names.append("/".join(text))
        i += len(group)

    by_key = {s.key: s for s in sites}
    own = {}
    for s in sites:
        own.setdefault(s.module, s.key)
    after = last_site_before(events)

    def site_for(module_path: tuple) -> str | None:
        for table in (own, after):
            for cut in range(len(module_path), -1, -1):
                if table.get(module_path[:cut]) is not None:
                    return table[module_path[:cut]]
        return None

    members: list[list] = [[] for _ in layers]
    kernels: dict[int, tuple] = {}
    for leaf, (path, var) in enumerate(param_items):
        key = site_for(path[:-1])
        site = by_key.get(key)
        shape = tuple(var.get_value().shape)
        if site is not None and site.stack and shape[:len(site.stack)] == site.stack and (
                path[:owners[key]] == site.module[:owners[key]]):
            for index in _indices(site.stack):
                members[index_of[(key, index)]].append((leaf, index))
            continue
        if site is None:
            j = 0
        else:
            j = index_of[(key, _indices(site.stack)[-1])]
        members[j].append((leaf, ()))
    for j, (key, index) in enumerate(layers):
        for leaf, at in members[j]:
            path = param_items[leaf][0]
            if path[-1] == "kernel" and own.get(path[:-1]) == key:
                kernels.setdefault(j, (leaf, at))
        if j not in kernels and members[j]:
            kernels[j] = members[j][0]
    return _Plan(tuple(names), layers, members, kernels)


def _indices(stack: tuple) -> list[tuple]:
    """Every index into an array of leading shape ``stack`` in order (``[()]`` for none)."""
    out = [()]
    for size in stack:
        out = [(*index, k) for index in out for k in range(size)]
    return out


def _coverage(plan: _Plan, sites: list[_Site], param_items) -> Coverage:
    """Layers, the share of the parameters that probed modules hold, the modules not probed."""
    probed = {s.module for s in sites}
    covered = total = 0
    not_probed: list[str] = []
    for path, var in param_items:
        size = int(np.prod(var.get_value().shape))
        total += size
        if path[:-1] in probed:
            covered += size
        elif _path_text(path[:-1]) not in not_probed:
            not_probed.append(_path_text(path[:-1]))
    return Coverage(len(plan.layers), covered / max(total, 1), tuple(not_probed))


def _model(plan: _Plan, sites, merged, init, state_of, position, own: set) -> Model:
    n_layers = len(plan.layers)
    by_key = {s.key: s for s in sites}
    members = [[(position[i], at) for i, at in layer] for layer in plan.members]
    kernels = {j: (position[i], at) for j, (i, at) in plan.kernels.items()}

    def attach(module, probes):
        instances = {getattr(m, _PATH_ATTR, None): m for _, m in nnx.iter_modules(module)}
        for site in sites:
            count = site.key.partition("@")[2]
            attr = _PROBE_ATTR + (f"_{count}" if count else "")
            setattr(instances[site.module], attr, Probe(probes[site.key]))

    def apply(params, state, x, *, train, probes=None):
        module = merged(params, state)
        module.train() if train else module.eval()
        outputs: dict = {}
        if probes is not None:
            attach(module, probes)
        token = _RUN.set(_Run(own, outputs=outputs))
        try:
            out = module(x)
        finally:
            _RUN.reset(token)
        new_state = state_of(module) if train else state
        stats = {}
        if probes is not None:
            nan = jnp.full((), jnp.nan, jnp.float32)
            stats = {k: jnp.full((n_layers,), v, jnp.float32) for k, v in NAN_STATS.items()}
            stats["act_rms"] = jnp.stack([
                safe_norm(outputs[key]) / jnp.sqrt(jnp.float32(outputs[key].size))
                if key in outputs and not by_key[key].stack else nan
                for key, _ in plan.layers])
        return out, new_state, stats

    def probes(batch_size):
        return {s.key: jnp.zeros((*s.stack, batch_size, *s.shape[1:]), s.dtype) for s in sites}

    def probe_stats(g):
        return {"delta_norm": jnp.stack([delta_norm(g[key][index]) for key, index in plan.layers])}

    def per_layer(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.stack([tree_norm([leaves[i][at] for i, at in layer]) for layer in members])

    def weight_samples(params):
        leaves = jax.tree_util.tree_leaves(params)
        return jnp.stack([
            pick_samples(jnp.asarray(leaves[kernels[j][0]][kernels[j][1]], jnp.float32))
            if j in kernels else jnp.zeros((N_WEIGHT_SAMPLES,), jnp.float32)
            for j in range(n_layers)])

    return Model(init=init, apply=apply, layer_names=plan.names, probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples)


def _checked(module, where: str):
    if isinstance(module, nnx.Module):
        return module
    try:
        import flax.linen as nn
        linen = isinstance(module, nn.Module)
    except ImportError:   # pragma: no cover - flax ships both
        linen = False
    if linen:
        raise TypeError(f"{where}: make_module returned a flax.linen.Module "
                        f"({type(module).__name__}); register it with "
                        "vgbench.register_flax_model(name, make_module) and "
                        "make_module(spec, task) instead")
    raise TypeError(f"{where}: make_module(spec, task, rngs) must return a flax.nnx.Module, "
                    f"got {type(module).__name__}")


def make_nnx_model(module_factory: Callable, *, name: str = "nnx") -> Callable:
    """A vgbench model factory ``make(spec, task) -> Model`` from
    ``module_factory(spec, task, rngs)``."""
    where = f"nnx model {name!r}"

    def make(spec, task) -> Model:
        def build(key):
            rngs = nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1))
            return _checked(module_factory(spec, task, rngs), where)

        abstract = nnx.eval_shape(lambda: build(jax.random.PRNGKey(0)))
        x, _ = jax.eval_shape(lambda k: task.sample(k, _INIT_BATCH), jax.random.PRNGKey(0))
        return adapt_nnx_module(abstract, task.input_shape, name=name,
                                output_dim=task.output_dim, build=build, input_dtype=x.dtype)[0]

    return make


def register_nnx_model(name: str, make_module: Callable, *, defaults: dict | None = None,
                       input_layout: str = "flat", doc: str | None = None) -> Callable:
    """Register a flax.nnx network as model ``name``: ``make_module(spec, task, rngs) -> Module``.

    ``rngs`` is an ``nnx.Rngs`` with ``params`` and ``dropout`` streams drawn from the run's
    seed. The entry runs in grids, ``vgbench train`` and ``vgbench diagnose`` like the built-in
    models (see :mod:`vgbench.models.nnx_adapter` for what is probed). ``defaults``,
    ``input_layout`` and ``doc`` are as for :func:`vgbench.register_flax_model`.
    """
    if not callable(make_module):
        raise TypeError(f"nnx model {name!r}: make_module must be callable, got {make_module!r}")
    text = doc if doc is not None else inspect.getdoc(make_module)
    return register_model(name, make_nnx_model(make_module, name=name), defaults=defaults,
                          input_layout=input_layout, doc=text)

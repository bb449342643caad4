"""Flax linen modules as vgbench models: ``register_flax_model(name, make_module)``.

``make_module(spec, task) -> flax.linen.Module`` builds the network for a run config; its
``__call__(x)`` maps a batch of task inputs (batch axis first) to the outputs the task's loss
reads, and may take ``train`` (a bool keyword) to switch batch norm or anything else between
training and evaluation. The adapter turns it into a :class:`vgbench.models.Model`:

* **Probes.** Every call of a module that holds parameters of its own (``Dense``, ``Conv``,
  ``ConvLocal``, ``Embed``, ``Einsum``, a custom layer's ``self.param``; normalisation layers
  and the network itself aside, whose parameters join a layer by position) gets a zero probe added to its
  floating-point output (through ``nn.intercept_methods``); ``probe=`` declares another set.
  So does every output the author marks with ``self.perturb(name, x)`` (flax's own
  perturbation collection). Each probe site is one layer; the gradient with respect to the
  probes is the backpropagated signal dL/dh_l of every layer in one backward pass.
* **Scans, per iteration.** Every flax scan (``nn.scan``, ``nn.RNN``: all run
  ``flax.core.axes_scan``) gets its probes as one more scanned input. A scanned stack (the
  block's parameters sliced per iteration, ``variable_axes={"params": 0}``) has each probed
  module of each block as its own layer (``layers/3/Dense_0``); a scan over time (the same
  parameters at every step: ``nn.RNN(cell)``) is one layer whose probe is added to the carry
  h_t the step returns, so its gradient is dL/dh_t through the recurrence, and its
  ``time_delta_norm`` is recorded as for the built-in RNNs. A module around any other lifted
  transform (``nn.vmap``, ``nn.remat`` alone) is probed at its output as one layer.
  :func:`coverage` says what was probed: layers, the share of the parameters that probed
  modules hold, and the modules with parameters that no probe covers.
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
(recorded as null). The module's own initializers apply; ``make_module`` may read ``spec.init``
and other fields.

* **Training and evaluation.** A ``__call__`` keyword ``train`` or ``training`` gets True in
  training steps and False in evaluation, ``deterministic`` the opposite (``train_flag=``
  names another; ``"not name"`` for one that is True in evaluation).
* **RNG streams.** Streams the module asks for in training (``Dropout``'s ``"dropout"``, any
  ``self.make_rng(name)``) are found when the model is built and get a new key every training
  step: ``fold_in(fold_in(base, stream), step)``, ``base`` drawn from the seed's init key, the
  step counted in the model's state. Evaluation passes ``train=False`` and is deterministic
  (a stream still asked for there gets the same key at every evaluation).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import operator
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from vgbench.models.base import Model, register_model
from vgbench.models.layers import N_WEIGHT_SAMPLES, NAN_STATS, delta_norm, pick_samples, safe_norm, tree_norm

PROBE_PARAMS = "params"
PERTURBATIONS = "perturbations"
_DROPPED = (PERTURBATIONS, "intermediates")   # collections that are neither params nor state
_INIT_BATCH = 2


# normalisation layers hold parameters (a scale, a bias) but are not layers of their own: their
# parameters join the layer they normalise
NORM_TYPES = ("BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm", "SpectralNorm",
              "WeightNorm")
TRAIN_FLAGS = ("train", "training")          # True in training
EVAL_FLAGS = ("deterministic", "eval", "evaluation", "use_running_average")   # True in evaluation
RNG_STATE = "vgbench_rng"                    # the state collection of the per-step RNG keys
_MAX_STREAMS = 8


def _norm_types() -> tuple[type, ...]:
    import flax.linen as nn

    return tuple(getattr(nn, n) for n in NORM_TYPES if hasattr(nn, n))


def default_layer(module, path: tuple, holds_params: bool) -> bool:
    """Whether a module call is a layer by default: the module holds parameters of its own
    (``holds_params``), is not a normalisation layer (:data:`NORM_TYPES`) and is not the
    network itself (``path`` empty: its output is the network's output)."""
    return bool(path) and holds_params and not isinstance(module, _norm_types())


def _probe_rule(probe, own: set):
    """``probed(module, path) -> bool`` for a ``probe`` declaration: None (modules holding
    parameters of their own, normalisation aside), a tuple of module types or class names, or
    a callable ``(module) -> bool``."""
    if probe is None:
        return lambda module, path: default_layer(module, path, path in own)
    if callable(probe) and not isinstance(probe, (tuple, list, type)):
        return lambda module, path: bool(probe(module))
    kinds = tuple(probe) if isinstance(probe, (tuple, list)) else (probe,)
    types = tuple(k for k in kinds if isinstance(k, type))
    names = {k for k in kinds if isinstance(k, str)}
    if len(types) + len(names) != len(kinds):
        raise TypeError(f"probe must be module types, class names or a callable, got {probe!r}")
    return lambda module, path: isinstance(module, types) or type(module).__name__ in names


class _Site(NamedTuple):
    key: str            # the probe's key (for a plain site also the layer's name)
    shape: tuple        # the probed output's shape at the init batch (batch axis first); one
                        # iteration's for a site inside a scan
    dtype: object
    module: tuple | None   # path of the probed module (None for a marked output)
    lifted: tuple = ()     # the modules it runs inside a lifted transform: of a module around
                           # nn.vmap, nn.remat... (probed at its output as one layer), or of the
                           # body of a scan over time (whose parameters are the time site's)
    scan: str = ""         # "layers": a probe per iteration of a scanned stack, each iteration
                           # its own layer; "time": a probe per step on the carry h_t, one layer
    length: int = 0        # the scan's iterations: the probe's leading axis
    base: str = ""         # "layers": the stack's name ("blocks/3/Dense_0": block 3's Dense_0)
    rel: tuple = ()        # "layers": the module's path inside one block
    body: tuple = ()       # "layers": the path of the module one iteration runs


def _path_text(path) -> str:
    return "/".join(str(p) for p in path) or "root"


def _mode_flag(module, declared: str | None, where: str):
    """``(keyword, value_in_training)`` of the module's train/eval switch, or None.

    ``declared``: a keyword True in training, or ``"not <keyword>"`` for one True in
    evaluation; else the first of :data:`TRAIN_FLAGS` and :data:`EVAL_FLAGS` that ``__call__``
    takes (``train`` also where it takes ``**kwargs``)."""
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        params = {}
    if declared is not None:
        name = declared.removeprefix("not ").strip()
        if name not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ValueError(f"{where}: train_flag {declared!r}: __call__ takes no keyword {name!r}; "
                             f"it takes {', '.join(p for p in params if p != 'self') or 'nothing'}")
        return name, not declared.startswith("not ")
    for name in TRAIN_FLAGS:
        if name in params:
            return name, True
    for name in EVAL_FLAGS:
        if name in params:
            return name, False
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return "train", True
    return None


def _own_param_paths(params) -> set:
    """Paths (tuples of names) of the modules that hold parameters of their own."""
    return {_key_path(path)[:-1] for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


class _Scan:
    """One flax scan (``nn.scan``, ``nn.RNN``) the module runs, as the recording pass saw it."""

    def __init__(self, sid: str, length: int):
        self.sid, self.length = sid, length
        self.outer_key = None    # the site of the module around it, where that is probed
        self.body = None         # path of the module one iteration runs
        self.body_params = None  # shapes of its parameters as one iteration sees them
        self.carry = None        # (index among the carry's leaves, shape, dtype) of h_t
        self.inner: list = []    # (key, path in the body, shape, dtype) of its probed modules
        self.order: list = []    # module calls and probe sites of one iteration, in call order
        self.mode = None         # "layers", "time" or None (not probed per iteration)
        self.keys: dict = {}     # probing: inner key -> probe key ("time": {"": key})


class _Slot:
    """The body of a scan being traced; ``probes`` its iteration's probes (None: recording)."""

    def __init__(self, scan: _Scan, recording: bool):
        self.scan, self.recording = scan, recording
        self.probes = None
        self.trace = None        # the body's trace, set by its first module call
        self.calls: dict = {}


def _carry_leaf(out):
    """Index of the carry leaf at which a scan body's ``(carry, y)`` output is probed: the
    one it also returns as ``y`` (an LSTM's h, not its c), else the last floating one; None
    where the output is no ``(carry, y)`` pair."""
    if not (isinstance(out, tuple) and len(out) == 2):
        return None
    carry = jax.tree_util.tree_leaves(out[0])
    ys = jax.tree_util.tree_leaves(out[1])
    floating = [i for i, leaf in enumerate(carry) if _floating(leaf)]
    shared = [i for i in floating if any(carry[i] is y for y in ys)]
    return (shared or floating or [None])[-1]


def _add_to_carry(out, index: int, probe):
    """``out`` with ``probe`` added to its carry leaf ``index``, wherever that array appears."""
    leaves, treedef = jax.tree_util.tree_flatten(out)
    target = jax.tree_util.tree_leaves(out[0])[index]
    new = target + probe
    return jax.tree_util.tree_unflatten(treedef, [new if leaf is target else leaf
                                                  for leaf in leaves])


class _LaxProxy:
    """``jax.lax`` whose ``scan`` calls the hook active in the current thread (or task), if any:
    installed once in ``flax.core.axes_scan`` (thread-safe, unlike swapping it per call)."""

    def __init__(self, real):
        self._real = real

    def scan(self, f, init, xs=None, length=None, **kw):
        hook = _SCAN_HOOK.get()
        if hook is None:
            return self._real.scan(f, init, xs, length=length, **kw)
        return hook(self._real.scan, f, init, xs, length=length, **kw)

    def __getattr__(self, name):
        return getattr(self._real, name)


_SCAN_HOOK: contextvars.ContextVar = contextvars.ContextVar("vgbench_flax_scan_hook", default=None)


@contextlib.contextmanager
def _scan_hook(hook):
    """Within the context (in this thread), flax's lifted scans (``nn.scan``, ``nn.RNN``: all
    pass through ``flax.core.axes_scan``) call ``hook(lax.scan, f, init, xs, ...)`` for
    ``lax.scan``."""
    from flax.core import axes_scan

    if not isinstance(axes_scan.lax, _LaxProxy):
        axes_scan.lax = _LaxProxy(axes_scan.lax)
    token = _SCAN_HOOK.set(hook)
    try:
        yield
    finally:
        _SCAN_HOOK.reset(token)


@contextlib.contextmanager
def _interceptor(probes: dict | None, probed, *, sites: list | None = None,
                 order: list | None = None, outputs: dict | None = None,
                 inner: set | None = None, scans: list | None = None,
                 plans: dict | None = None):
    """Context in which each probed module's output gets ``probes[key]`` added.

    ``sites`` collects each probed call as a :class:`_Site` and ``order`` every module call
    (``("module", path)``, then ``("site", key)`` for a probed one; ``("scan", id)`` where a
    scan returns), in call order; ``outputs`` collects each probed output by key (for its
    forward statistics); ``inner`` the paths of the modules called inside a lifted transform.

    Scans: recording (``scans`` a list), every flax scan the module runs is saved as a
    :class:`_Scan` with what one iteration calls. Probing, ``plans`` maps a scan's id to its
    :class:`_Scan` with a mode: a scanned stack ("layers") gets a probe per iteration on each
    probed module of its block, a scan over time ("time") a probe per step on its carry h_t;
    either goes into the body as one more scanned input. A module around any other lifted
    transform (nn.vmap, nn.remat) is probed at its output as one layer.
    """
    import flax.linen as nn
    from flax.core import tracers

    calls: dict[str, int] = {}
    scan_ids: dict[str, int] = {}
    stack: list = []     # [path, trace, inner module paths, scans] of the module calls under way
    slots: list[_Slot] = []

    def hooked_scan(real_scan, f, init, xs=None, length=None, **kw):
        if not stack or slots or (scans is None and not plans):
            return real_scan(f, init, xs, length=length, **kw)
        text = _path_text(stack[-1][0])
        scan_ids[text] = scan_ids.get(text, 0) + 1
        sid = f"{text}#{scan_ids[text]}"
        if scans is not None:
            n = length if length is not None else jax.tree_util.tree_leaves(xs)[0].shape[0]
            scan = _Scan(sid, int(n))
            scans.append(scan)
            stack[-1][3].append(scan)
            slot, extra = _Slot(scan, True), None
        else:
            scan = plans.get(sid)
            if scan is None or scan.mode is None:
                return real_scan(f, init, xs, length=length, **kw)
            slot = _Slot(scan, False)
            extra = {k: probes[p] for k, p in scan.keys.items()}

        def body(carry, inputs):
            x, slot.probes = inputs
            slot.trace, slot.calls = None, {}
            slots.append(slot)
            try:
                return f(carry, x)
            finally:
                slots.pop()

        result = real_scan(body, init, (xs, extra), length=length, **kw)
        if order is not None:
            order.append(("scan", sid))
        return result

    def in_body(next_fun, args, kwargs, module, path, trace, slot: _Slot):
        scan = slot.scan
        first = slot.trace is None
        if first:
            slot.trace = trace
            scan.body = path
            if slot.recording:
                scan.order, scan.inner = [], []
        rel = path[len(scan.body):] if path[:len(scan.body)] == scan.body else path
        if slot.recording:
            scan.order.append(("module", path))
        out = next_fun(*args, **kwargs)
        if first and slot.recording:
            scan.body_params = jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                dict(module.variables.get(PROBE_PARAMS, {})))
            at = _carry_leaf(out)
            if at is not None:
                leaf = jax.tree_util.tree_leaves(out[0])[at]
                scan.carry = (at, tuple(leaf.shape), leaf.dtype)
        if first and not slot.recording and scan.mode == "time":
            return _add_to_carry(out, scan.carry[0], slot.probes[""])
        if not (probed(module, path) and _floating(out)):
            return out
        text = _path_text(rel) if rel else ""
        slot.calls[text] = slot.calls.get(text, 0) + 1
        key = text if slot.calls[text] == 1 else f"{text}@{slot.calls[text]}"
        if slot.recording:
            scan.inner.append((key, rel, tuple(out.shape), out.dtype))
            scan.order.append(("site", key))
            return out
        return out + slot.probes[key] if scan.mode == "layers" and key in slot.probes else out

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = tuple(module.path) if module.scope is not None else ()
        trace = tracers.current_trace()
        if stack and trace != stack[0][1]:
            # inside a lifted transform (nn.scan, nn.RNN, nn.vmap, nn.remat): its values live
            # in another trace: probed per iteration in a scan's body, else the outermost
            # module around it is probed at its output
            stack[-1][2].add(path)
            if inner is not None:
                inner.add(path)
            slot = slots[-1] if slots else None
            if slot is not None and slot.trace in (None, trace):
                return in_body(next_fun, args, kwargs, module, path, trace, slot)
            return next_fun(*args, **kwargs)
        if order is not None:
            order.append(("module", path))
        stack.append([path, trace, set(), []])
        try:
            out = next_fun(*args, **kwargs)
        finally:
            _, _, within, ran = stack.pop()
        # the module network itself (the root) is never probed for what it lifts: its
        # output is the network's output
        lifted = bool(within) and bool(path)
        leaves, treedef = jax.tree_util.tree_flatten(out)
        # a lifted module's (carry, outputs): its carry, the first floating array, is probed
        at = next((i for i, leaf in enumerate(leaves) if _floating(leaf)), None) if lifted else (
            0 if _floating(out) else None)
        if within and at is None and stack:
            stack[-1][2].update(within)   # nothing to probe here: its caller's output is
            stack[-1][3].extend(ran)
        if at is None or not (probed(module, path) or lifted):
            return out
        if lifted:
            out = leaves[at]
        text = _path_text(path)
        calls[text] = calls.get(text, 0) + 1
        key = text if calls[text] == 1 else f"{text}@{calls[text]}"
        for scan in ran:
            scan.outer_key = key
        if sites is not None:
            sites.append(_Site(key, tuple(out.shape), out.dtype, path,
                               tuple(sorted(within)) if lifted else ()))
        if order is not None:
            order.append(("site", key))
        if probes is not None and key in probes:
            out = out + probes[key]
        if outputs is not None:
            outputs[key] = out
        if lifted:
            leaves[at] = out
            return jax.tree_util.tree_unflatten(treedef, leaves)
        return out

    with nn.intercept_methods(intercept), _scan_hook(hooked_scan):
        yield


def _probe_shape(site: _Site, batch: int) -> tuple:
    """A site's probe: its output's shape at ``batch``, after the scan's axis inside a scan."""
    return ((site.length,) if site.scan else ()) + (batch, *site.shape[1:])


def _subtree(tree, path: tuple):
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def _plan_scans(scans: list[_Scan], params) -> list[_Site]:
    """Each scan's mode, and its sites: a scan whose block's parameters are the slices of
    parameters with the scan's axis first (``variable_axes={"params": 0}``) is a stack
    ("layers": its probed modules, per iteration); one whose parameters are the same at every
    step (``nn.RNN``, a cell under ``nn.scan`` with ``variable_broadcast="params"``) runs over
    time ("time": its carry h_t, per step). Anything else is probed around it."""
    sites, names = [], set()

    def unique(name):
        n, out = 1, name
        while out in names:
            n += 1
            out = f"{name}@{n}"
        names.add(out)
        return out

    for scan in scans:
        if scan.body is None:
            continue
        full = _subtree(params, tuple(str(p) for p in scan.body))
        seen = scan.body_params or {}
        stacked = bool(jax.tree_util.tree_leaves(seen)) and full is not None and (
            jax.tree_util.tree_structure(full) == jax.tree_util.tree_structure(seen)) and all(
            tuple(f.shape) == (scan.length, *s.shape) for f, s in zip(
                jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(seen)))
        if stacked and scan.inner:
            scan.mode = "layers"
            base = unique(_path_text(scan.body))
            for key, rel, shape, dtype in scan.inner:
                scan.keys[key] = f"{base}/*" + (f"/{key}" if key else "")
                sites.append(_Site(scan.keys[key], shape, dtype, tuple(scan.body) + tuple(rel),
                                   scan="layers", length=scan.length, base=base, rel=key,
                                   body=tuple(scan.body)))
        elif not stacked and scan.carry is not None:
            scan.mode = "time"
            base = unique(scan.outer_key or _path_text(scan.body))
            scan.keys[""] = f"{base}/*"
            called = tuple(sorted({p for kind, p in scan.order if kind == "module"}))
            sites.append(_Site(scan.keys[""], scan.carry[1], scan.carry[2], None, called,
                               scan="time", length=scan.length, base=base))
    return sites


def _layer_name(site: _Site, index) -> str:
    if site.scan == "layers":
        return f"{site.base}/{index}" + (f"/{site.rel}" if site.rel else "")
    return site.base if site.scan == "time" else site.key


def _unrolled(sites: list[_Site]) -> list[tuple]:
    """The layers ``(site, iteration or None)`` in program order: a stack's probed modules
    block by block."""
    layers, i = [], 0
    while i < len(sites):
        group = [sites[i]]
        while (sites[i].scan == "layers" and i + len(group) < len(sites)
               and sites[i + len(group)].scan == "layers"
               and sites[i + len(group)].base == sites[i].base):
            group.append(sites[i + len(group)])
        if group[0].scan == "layers":
            layers += [(s, it) for it in range(group[0].length) for s in group]
        else:
            layers.append((group[0], None))
        i += len(group)
    return layers


def last_site_before(events) -> dict:
    """module path -> the key of the last probe site called before the module's first call
    (None: none), from ``events`` in call order: ``("module", path)`` and ``("site", key)``.
    A module that is no layer of its own processes that site's output: its parameters join
    that layer."""
    after, last = {}, None
    for kind, what in events:
        if kind == "site":
            last = what
        else:
            after.setdefault(what, last)
    return after


def _floating(leaf) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def _key_path(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


class Graph(NamedTuple):
    """How the probed layers depend on one another in the traced program.

    ``chain``: the longest path of layers from the input to an output (indices in layer
    order): the network's depth as the signal travels it, what the verdict reads. ``side``:
    the layers off that path (an attention's key and value beside its query, a second head).
    ``outputs``: the layers nothing else reads, whose output the network returns (two for an
    actor-critic's policy and value heads). ``unused``: layers the output does not depend on.
    """

    chain: tuple
    side: tuple
    outputs: tuple
    unused: tuple


def _trace(apply_probed, variables, x0, sites: list[_Site]) -> tuple[list[_Site], Graph]:
    """The sites in program order (where the program first uses each probe, its add: a jaxpr
    lists equations in the order they are computed, so outputs marked with ``perturb`` fall
    among the probed modules exactly), and their :class:`Graph`.

    Each variable of the jaxpr carries the set of probes it depends on (a bit mask, forward
    through every equation; an equation with a sub-program counts each output as depending
    on all its inputs). A site depends on the sites in the mask of the value its probe is
    added to.
    """
    probes = {s.key: jax.ShapeDtypeStruct(_probe_shape(s, _INIT_BATCH), s.dtype) for s in sites}
    closed = jax.make_jaxpr(apply_probed)(variables, x0, probes)
    leaves = jax.tree_util.tree_flatten_with_path(probes)[0]
    names = [_key_path(path)[0] for path, _ in leaves]
    probe_vars = closed.jaxpr.invars[-len(leaves):]
    bit = {var: 1 << i for i, var in enumerate(probe_vars)}
    mask: dict = dict(bit)
    first_use, before = {}, {}
    for index, eqn in enumerate(closed.jaxpr.eqns):
        masks = [0 if isinstance(v, jex_core.Literal) else mask.get(v, 0) for v in eqn.invars]
        for var, m in zip(eqn.invars, masks):
            if not isinstance(var, jex_core.Literal):
                first_use.setdefault(var, index)
                if var in bit and var not in before:   # what the probe is added to
                    before[var] = functools.reduce(operator.or_, masks, 0) & ~bit[var]
        total = functools.reduce(operator.or_, masks, 0)
        for out in eqn.outvars:
            mask[out] = total
    n_eqns = len(closed.jaxpr.eqns)
    position = {n: first_use.get(v, n_eqns) for n, v in zip(names, probe_vars)}
    ordered = sorted(sites, key=lambda s: position[s.key])
    index = {s.key: i for i, s in enumerate(ordered)}
    depends = [0] * len(ordered)   # per site: the bit mask (in layer order) of sites before it
    for n, v in zip(names, probe_vars):
        m = before.get(v, 0)
        depends[index[n]] = sum(1 << index[names[i]] for i in range(len(names)) if m >> i & 1)
    reaches = functools.reduce(operator.or_, [mask.get(v, 0) for v in closed.jaxpr.outvars
                                              if not isinstance(v, jex_core.Literal)], 0)
    used = {index[names[i]] for i in range(len(names)) if reaches >> i & 1}
    read = {i for d in depends for i in range(len(ordered)) if d >> i & 1}
    outputs = tuple(i for i in range(len(ordered)) if i in used and i not in read)
    length = [0] * len(ordered)
    for j in range(len(ordered)):   # longest path ending at each site (layer order is a topological order)
        preds = [i for i in range(j) if depends[j] >> i & 1]
        length[j] = 1 + max((length[i] for i in preds), default=0)
    chain = []
    if outputs:
        j = max(outputs, key=lambda o: (length[o], -o))
        while True:
            chain.append(j)
            preds = [i for i in range(j) if depends[j] >> i & 1]
            if not preds:
                break
            j = max(preds, key=lambda i: (length[i], -i))
    chain = tuple(reversed(chain))
    side = tuple(i for i in sorted(used) if i not in chain)
    unused = tuple(i for i in range(len(ordered)) if i not in used)
    return ordered, Graph(chain, side, outputs, unused)


def _unflatten_like(tree, leaves):
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


class Coverage(NamedTuple):
    """What the probes of a flax (linen or NNX) model cover."""

    layers: int               # probe sites (layers)
    probed_share: float       # share of the parameters that probed modules hold themselves
    not_probed: tuple         # paths of modules holding parameters that no probe covers
    lifted: tuple = ()        # modules around nn.vmap, nn.remat...: one layer at their output
    scans: tuple = ()         # how each scan is probed ("blocks: 4 blocks x 1 module, per block")

    def line(self, name: str) -> str:
        missing = ", ".join(self.not_probed[:6]) + (" ..." if len(self.not_probed) > 6 else "")
        return (f"model {name!r}: {self.layers} layers probed; probed modules hold "
                f"{100 * self.probed_share:.1f} % of the parameters"
                + (f"; scans probed per iteration: {'; '.join(self.scans)}" if self.scans else "")
                + (f"; not probed (their parameters join a probed layer): {missing}"
                   if self.not_probed else "")
                + (f"; probed at their output as one layer each, not per iteration (they run "
                   f"a lifted transform other than a scan: nn.vmap, nn.remat, nn.jit): "
                   f"{', '.join(self.lifted)}" if self.lifted else ""))


def _scan_text(site: _Site, scan: _Scan) -> str:
    """How a scan is probed, for the coverage line."""
    if site.scan == "time":
        return (f"{site.base}: over time, the carry h_t at each of {site.length} steps "
                f"(one layer; its module {_path_text(scan.body)} runs each step)")
    n = len(scan.keys)
    return (f"{site.base}: a stack of {site.length} blocks, {n} probed module{'s' if n != 1 else ''}"
            f" in each block, one layer per block and module")


def make_flax_model(module_factory: Callable, *, name: str = "flax", train_flag: str | None = None,
                    output_fn: Callable | None = None, probe=None) -> Callable:
    """A vgbench model factory ``make(spec, task) -> Model`` from ``module_factory(spec, task)``."""

    def make(spec, task) -> Model:
        import flax.linen as nn

        module = module_factory(spec, task)
        if not isinstance(module, nn.Module):
            hint = ""
            try:
                from flax import nnx
                if isinstance(module, nnx.Module):
                    hint = " (a flax.nnx module: register it with vgbench.register_nnx_model)"
            except ImportError:   # pragma: no cover - flax without nnx
                pass
            raise TypeError(f"flax model {name!r}: make_module(spec, task) must return a "
                            f"flax.linen.Module, got {type(module).__name__}{hint}")
        x, y = jax.eval_shape(lambda k: task.sample(k, _INIT_BATCH), jax.random.PRNGKey(0))
        return adapt_module(module, task.input_shape, name=name, output_dim=task.output_dim,
                            output_shape=(*y.shape[1:], task.output_dim), input_dtype=x.dtype,
                            train_flag=train_flag, output_fn=output_fn, probe=probe)

    return make


def _explained(err: Exception, where: str, action: str) -> Exception:
    """One clear error for the failures a flax module commonly has here, naming the fix."""
    text = str(err)
    if type(err).__name__ == "InvalidRngError":
        return ValueError(f"{where}: {action} failed: {text.split(' (https')[0]}; vgbench passes "
                          "a key for every stream the module asks for in training and none in "
                          "evaluation: let the layer be deterministic when train is False "
                          "(nn.Dropout(rate, deterministic=not train))")
    if "unbound axis name" in text:
        found = re.search(r"unbound axis name: ([^.\s]+)", text)
        axis = found[1] if found else "?"
        return ValueError(f"{where}: {action} failed: a layer reduces over the named axis {axis!r} "
                          "(BatchNorm(axis_name=...)), which exists only under vmap or pmap; "
                          "vgbench runs the module on a whole batch: leave axis_name out")
    return ValueError(f"{where}: {action} failed: {type(err).__name__}: {text}")


def adapt_module(module, input_shape: tuple[int, ...], *, name: str = "flax",
                 output_dim: int | None = None, output_shape: tuple | None = None,
                 input_dtype=jnp.float32, train_flag: str | None = None,
                 output_fn: Callable | None = None, probe=None) -> Model:
    """The :class:`Model` of a flax.linen ``module`` whose inputs are ``(batch, *input_shape)``.

    ``output_shape``: where given, the shape (batch axis aside) the output must have (the
    task's: ``(output_dim,)``, ``(T, output_dim)`` for per-step targets); else ``output_dim``,
    the size of its last axis. ``input_dtype``: the task's (integer tokens stay integers).
    ``train_flag``, ``probe``: see the module docstring. ``output_fn``: applied to what the
    module returns (a tuple's first element, a per-token head's last token ...).
    """
    where = f"flax model {name!r} ({type(module).__name__})"
    flag = _mode_flag(module, train_flag, where)
    x0 = jax.ShapeDtypeStruct((_INIT_BATCH, *input_shape), input_dtype)
    finish = output_fn if output_fn is not None else (lambda out: out)

    def kwargs(train):
        return {} if flag is None else {flag[0]: train == flag[1]}

    def raw_init(key):
        return module.init(key, jnp.zeros(x0.shape, x0.dtype), **kwargs(False))

    try:
        variables = jax.eval_shape(raw_init, jax.random.PRNGKey(0))
    except Exception as err:
        raise _explained(err, where, f"init on a batch of shape {x0.shape}") from err
    if PROBE_PARAMS not in variables:
        raise ValueError(f"{where}: the module has no parameters")
    marked = variables.get(PERTURBATIONS, {})
    state_cols = tuple(c for c in variables if c != PROBE_PARAMS and c not in _DROPPED)
    abstract = {c: variables[c] for c in (PROBE_PARAMS, *state_cols)}
    own = _own_param_paths(abstract[PROBE_PARAMS])
    probed = _probe_rule(probe, own)
    streams = _streams(module, abstract, x0, kwargs, where)

    def run(v, x, train, rng_state, **extra):
        rngs = _stream_keys(streams, rng_state, train)
        return module.apply(v, x, **kwargs(train), **({"rngs": rngs} if rngs else {}), **extra)

    # one abstract forward pass: which modules are probed, in which order, with what shapes
    found: list[_Site] = []
    order: list = []
    rng0 = _rng_state(jax.random.PRNGKey(0), streams)

    scans: list[_Scan] = []

    def record(v, x):
        with _interceptor(None, probed, sites=found, order=order, scans=scans):
            return run(v, x, True, rng0, mutable=list(state_cols) or False)

    try:
        out_shape = jax.eval_shape(record, abstract, x0)
    except Exception as err:
        raise _explained(err, where, "a training step") from err
    out_shape = jax.eval_shape(finish, out_shape[0] if state_cols else out_shape)
    marked_leaves = jax.tree_util.tree_flatten_with_path(marked)[0]
    marked_sites = [_Site(_path_text(_key_path(p)), tuple(leaf.shape), leaf.dtype, None)
                    for p, leaf in marked_leaves]
    scan_sites = _plan_scans(scans, abstract[PROBE_PARAMS])
    plans = {scan.sid: scan for scan in scans}
    replaced = {scan.outer_key for scan in scans if scan.mode and scan.outer_key}
    if not found and not marked_sites and not scan_sites:
        raise ValueError(
            f"{where}: no module with parameters of its own is called (normalisation layers "
            "aside) and no output is marked with self.perturb(name, x): there is no layer to probe")
    returned = getattr(out_shape, "shape", type(out_shape).__name__)
    wanted = (_INIT_BATCH, *output_shape) if output_shape is not None else None
    if wanted is not None and returned != wanted:
        raise ValueError(f"{where}: the task needs outputs of shape (batch, "
                         f"{', '.join(map(str, wanted[1:]))}); the module returns {returned} for a "
                         f"batch of {_INIT_BATCH}" + (" (a tuple or a per-token head: pass output_fn "
                                                      "to register_flax_model)"
                                                      if not isinstance(returned, tuple)
                                                      or len(returned) != len(wanted) else ""))
    if wanted is None and output_dim is not None and (not isinstance(returned, tuple)
                                                      or returned[-1:] != (output_dim,)):
        raise ValueError(f"{where}: the task needs outputs of shape (batch, {output_dim}); "
                         f"the module returns {returned}")
    sites = [s for s in found if s.key not in replaced] + scan_sites + marked_sites
    scan_of = {s.key: scan for scan in scans if scan.mode for s in scan_sites
               if s.key in scan.keys.values()}

    def apply(params, state, x, *, train, probes=None, _stats=True):
        rng_state = state.get(RNG_STATE)
        v = {PROBE_PARAMS: params, **{c: state[c] for c in state_cols}}
        if probes is not None and marked_sites:
            v[PERTURBATIONS] = _unflatten_like(marked, [probes[s.key] for s in marked_sites])
        mutable = list(state_cols) if (train and state_cols) else False
        outputs: dict = {}
        ctx = (_interceptor(probes, probed, outputs=outputs, plans=plans) if probes is not None
               else contextlib.nullcontext())
        with ctx:
            result = run(v, x, train, rng_state, mutable=mutable)
        out = result[0] if mutable else result
        new_state = state           # evaluation reads the state, never updates it
        if train:
            new_state = {c: (result[1] if mutable else state)[c] for c in state_cols}
            if rng_state is not None:   # the next training step's keys
                new_state[RNG_STATE] = _next_rng(rng_state)
        stats = {}
        if probes is not None and _stats:
            nan = jnp.full((), jnp.nan, jnp.float32)
            # the unit statistics need the nonlinearity that follows a layer, unknown here
            stats = {k: jnp.full((len(layers),), v, jnp.float32) for k, v in NAN_STATS.items()}
            stats["act_rms"] = jnp.stack([
                safe_norm(outputs[s.key]) / jnp.sqrt(jnp.float32(outputs[s.key].size))
                if s.key in outputs and not s.scan else nan for s, _ in layers])
        return finish(out), new_state, stats

    state0 = {**{c: abstract[c] for c in state_cols}, **({RNG_STATE: rng0} if streams else {})}

    def apply_probed(v, x, q):
        return apply(v[PROBE_PARAMS], v["state"], x, train=False, probes=q, _stats=False)[0]
    sites, site_graph = _trace(apply_probed, {PROBE_PARAMS: abstract[PROBE_PARAMS], "state": state0},
                               x0, sites)
    layers = _unrolled(sites)
    names = tuple(_layer_name(s, it) for s, it in layers)
    layer_index = {(s.key, it): j for j, (s, it) in enumerate(layers)}
    of_site = [[j for j, (s, _) in enumerate(layers) if s.key == site.key] for site in sites]
    _GRAPH[name] = Graph(*(tuple(sorted(j for i in part for j in of_site[i]))
                           for part in (site_graph.chain, site_graph.side)),
                         tuple(of_site[i][-1] for i in site_graph.outputs),
                         tuple(sorted(j for i in site_graph.unused for j in of_site[i])))

    # parameters by layer: a probed module's own; another module's join the layer of the last
    # probed module called before it (whose output it processes), else the first layer; in a
    # stack, block i's slice is block i's
    own_layer = {s.module: layer_index[(s.key, None)] for s in reversed(sites)
                 if s.module is not None and not s.scan}
    inner_layer = {p: layer_index[(s.key, None)] for s in sites for p in s.lifted}
    last_of = {}
    for scan in scans:
        if scan.mode:
            last_of[scan.sid] = max(layer_index[(k, it)] for k in scan.keys.values()
                                    for it in ((None,) if scan.mode == "time"
                                               else range(scan.length)) if (k, it) in layer_index)
    key_layer = {s.key: layer_index[(s.key, None)] for s in sites if not s.scan}
    events = [(kind, what) if kind != "scan" else ("site", ("scan", what))
              for kind, what in order if kind != "scan" or what in last_of]
    after = last_site_before(events)

    def joined(key) -> int | None:
        if key is None:
            return None
        return last_of[key[1]] if isinstance(key, tuple) else key_layer.get(key)

    stacks = [s for s in sites if s.scan == "layers"]

    def stack_site(module_path: tuple, shape: tuple):
        """The stack site whose block holds a parameter of ``module_path`` (shape: its leaf's)
        and whether that module is probed itself."""
        for s in stacks:
            body = s.body
            if module_path[:len(body)] != body or not shape or shape[0] != s.length:
                continue
            group = [g for g in stacks if g.base == s.base]
            for g in group:
                if g.module == module_path:
                    return g, True
            scan = scan_of[s.key]
            inner_after = last_site_before(scan.order)
            for cut in range(len(module_path), len(body) - 1, -1):
                key = inner_after.get(module_path[:cut])
                if key is not None:
                    return next(g for g in group if g.rel == key), False
            return group[0], False
        return None, False

    def layer_of(module_path: tuple) -> int:
        for cut in range(len(module_path), -1, -1):   # the deepest probed module containing it
            if module_path[:cut] in own_layer:
                return own_layer[module_path[:cut]]
            if module_path[:cut] in inner_layer:
                return inner_layer[module_path[:cut]]
        for cut in range(len(module_path), -1, -1):
            j = joined(after.get(module_path[:cut]))
            if j is not None:
                return j
        return 0

    param_leaves = jax.tree_util.tree_flatten_with_path(abstract[PROBE_PARAMS])[0]
    members: list[list[tuple]] = [[] for _ in layers]   # per layer: (leaf, slice or None)
    kernel_leaf: dict[int, tuple] = {}
    covered = total = 0
    not_probed = []
    for i, (path, leaf) in enumerate(param_leaves):
        leaf_names = _key_path(path)
        module_path = leaf_names[:-1]
        size = int(np.prod(leaf.shape))
        total += size
        site, own = stack_site(module_path, tuple(leaf.shape))
        if site is not None:
            for it in range(site.length):
                j = layer_index[(site.key, it)]
                members[j].append((i, it))
                if own and leaf_names[-1] in ("kernel", "embedding"):
                    kernel_leaf.setdefault(j, (i, it))
            is_covered = own
        else:
            j = layer_of(module_path)
            members[j].append((i, None))
            is_covered = (module_path in own_layer
                          or any(module_path[:cut] in inner_layer for cut in range(len(leaf_names))))
            if leaf_names[-1] in ("kernel", "embedding") and own_layer.get(module_path) == j:
                kernel_leaf.setdefault(j, (i, None))
        if is_covered:
            covered += size
        elif _path_text(module_path) not in not_probed:
            not_probed.append(_path_text(module_path))
    for j, leaves_of in enumerate(members):   # else a kernel it holds (a cell's), else any
        kernels = [m for m in leaves_of if _key_path(param_leaves[m[0]][0])[-1] == "kernel"]
        if j not in kernel_leaf and leaves_of:
            kernel_leaf[j] = (kernels or leaves_of)[0]
    cover = Coverage(len(layers), covered / max(total, 1), tuple(not_probed),
                     tuple(_path_text(s.module) for s in sites if s.lifted and not s.scan),
                     tuple(_scan_text(s, scan_of[s.key]) for s in sites
                           if s.scan == "time" or (s.scan == "layers" and s in stacks
                                                   and s is next(g for g in stacks if g.base == s.base))))
    _COVERAGE[name] = cover
    time_sites = [s for s, _ in layers if s.scan == "time"]

    def init(key):
        v = raw_init(key)
        state = {c: v[c] for c in state_cols}
        if streams:   # the streams' keys: from the init key, apart from what init drew
            state[RNG_STATE] = _rng_state(jax.random.fold_in(key, _RNG_SALT), streams)
        return v[PROBE_PARAMS], state

    def probes(batch_size):
        return {s.key: jnp.zeros(_probe_shape(s, batch_size), s.dtype) for s in sites}

    def sequence_delta(g):
        """RMS over the batch of ‖∂L/∂h_{1..T}‖ from g = ∂(batch-mean L)/∂h, [T, B, ...]."""
        return jnp.sqrt(jnp.float32(g.shape[1])) * safe_norm(g)

    def probe_stats(g):
        stats = {"delta_norm": jnp.stack([
            sequence_delta(g[s.key]) if s.scan == "time" else
            delta_norm(g[s.key] if it is None else g[s.key][it]) for s, it in layers])}
        if time_sites:   # the first scan over time: ‖∂L/∂h_t‖ at every step
            t = g[time_sites[0].key]
            stats["time_delta_norm"] = jnp.sqrt(jnp.float32(t.shape[1])) * safe_norm(
                t, axis=tuple(range(1, t.ndim)))
        return stats

    def part(leaves, i, at):
        return leaves[i] if at is None else leaves[i][at]

    def per_layer(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.stack([tree_norm([part(leaves, i, at) for i, at in layer]) for layer in members])

    def weight_samples(params):
        leaves = jax.tree_util.tree_leaves(params)
        return jnp.stack([pick_samples(jnp.asarray(part(leaves, *kernel_leaf[j]), jnp.float32))
                          if j in kernel_leaf else jnp.zeros((N_WEIGHT_SAMPLES,), jnp.float32)
                          for j in range(len(layers))])

    return Model(init=init, apply=apply, layer_names=names, probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples,
                 info=probe_info(cover, _GRAPH[name], names))


def probe_info(cover: Coverage, graph: Graph | None, names) -> dict:
    """What a run record says of an adapted model's probes (``probes``): its coverage, and
    where a layer graph was traced, the layers on the signal path (which the verdict reads),
    beside it, read by nothing, and returned as outputs."""
    info = {"layers": cover.layers, "probed_share": cover.probed_share,
            "not_probed": list(cover.not_probed), "lifted": list(cover.lifted),
            "scans": list(cover.scans)}
    if graph is not None:
        info.update({field: [names[i] for i in getattr(graph, part)] for field, part in (
            ("signal_path", "chain"), ("side_branches", "side"), ("outputs", "outputs"),
            ("unused", "unused"))})
    return info


_COVERAGE: dict[str, Coverage] = {}   # model name -> the coverage of its last build
_GRAPH: dict[str, Graph] = {}         # model name -> the layer graph of its last build
_RNG_SALT = 0x5EED


def graph(name: str) -> Graph | None:
    """How the layers of the flax model ``name`` depend on one another (its last build)."""
    return _GRAPH.get(name)


def coverage(name: str) -> Coverage | None:
    """What the probes of the flax model ``name`` cover, as of its last build (None: not built)."""
    return _COVERAGE.get(name)


def _streams(module, abstract, x0, kwargs, where) -> tuple[str, ...]:
    """The RNG streams a training call of ``module`` asks for ("params" aside), found by
    calling it abstractly until it asks for no new one."""
    streams: list[str] = []
    mutable = [c for c in abstract if c != PROBE_PARAMS] or False
    for _ in range(_MAX_STREAMS):
        rngs = {s: jax.random.PRNGKey(0) for s in streams}
        try:
            jax.eval_shape(lambda v, x: module.apply(v, x, **kwargs(True), rngs=rngs,
                                                     mutable=mutable), abstract, x0)
            return tuple(streams)
        except Exception as err:
            asked = re.search(r'needs PRNG for "([^"]+)"', str(err))
            if type(err).__name__ != "InvalidRngError" or asked is None or asked[1] in streams:
                raise _explained(err, where, "a training step") from err
            streams.append(asked[1])
    raise ValueError(f"{where}: asks for more than {_MAX_STREAMS} RNG streams")


def _rng_state(key, streams) -> dict:
    return {"key": jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            else key, "step": jnp.zeros((), jnp.int32)} if streams else {}


def _next_rng(rng_state: dict) -> dict:
    return {"key": rng_state["key"], "step": rng_state["step"] + 1}


def _stream_keys(streams, rng_state, train: bool) -> dict:
    """Each stream's key for this call: folded from the run's base key, the stream and the
    training step (evaluation: one fixed key, so that it is deterministic)."""
    if not streams or rng_state is None:
        return {}
    step = rng_state["step"] if train else jnp.int32(-1)
    return {s: jax.random.fold_in(jax.random.fold_in(rng_state["key"], i), step)
            for i, s in enumerate(streams)}


def register_flax_model(name: str, make_module: Callable, *, defaults: dict | None = None,
                        input_layout: str = "flat", doc: str | None = None,
                        train_flag: str | None = None, output_fn: Callable | None = None,
                        probe=None) -> Callable:
    """Register a flax.linen network as model ``name``: ``make_module(spec, task) -> Module``.

    The entry runs in grids, ``vgbench train`` and ``vgbench diagnose`` like the built-in
    models (see :mod:`vgbench.models.flax_adapter` for what is probed and how layers are
    named). ``defaults``: config fields a run of it takes where a command line leaves them
    out (e.g. ``{"task": "seq_digits"}``). ``input_layout``: how the module takes a task's
    examples, ``"flat"`` (one vector each) or ``"channels"`` (images ``(H, W, C)``, sequences
    ``(T, C)``), as for :func:`vgbench.models.register_model`. The first line of ``doc`` (else of
    ``make_module``'s docstring) is what ``vgbench list`` and leaderboards show.
    ``train_flag``: the ``__call__`` keyword that switches training and evaluation, where it is
    not ``train``, ``training`` or ``deterministic`` (``"not name"``: True in evaluation).
    ``output_fn``: applied to what the module returns (``lambda out: out[0]`` for a tuple,
    ``lambda out: out[:, -1]`` for the last token of a per-token head). ``probe``: which modules
    are layers (default: every module holding parameters of its own, normalisation aside), as
    module types, class names or a predicate ``(module) -> bool``.
    """
    if not callable(make_module):
        raise TypeError(f"flax model {name!r}: make_module must be callable, got {make_module!r}")
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"flax model {name!r}: output_fn must be callable, got {output_fn!r}")
    text = doc if doc is not None else inspect.getdoc(make_module)
    factory = make_flax_model(make_module, name=name, train_flag=train_flag, output_fn=output_fn,
                              probe=probe)
    return register_model(name, factory, defaults=defaults, input_layout=input_layout, doc=text)

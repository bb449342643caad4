"""Every registered model against the Model contract, at a tiny size.

For each case: the probe gradients are the loss's finite differences and sit where the layer's
bias enters; probe statistics, per-layer norms and weight samples give one value per declared
layer, every probe and parameter entry counted in exactly one; evaluation equals training
where the model has no batch statistics (and, with them, training with the running averages
set to the batch's statistics); an entry alone equals the same entry inside a vmap.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

import vgbench
from vgbench import models, norms, tasks
from vgbench.models.layers import NAN_STATS
from vgbench.spec import RunSpec

BATCH = 3
ENTRIES = 3          # entries (seeds) of the vmapped program
FD_STEP = 1e-5       # central differences in float64: truncation ~1e-10, rounding ~1e-11
FD_RTOL = 1e-6       # of ||dL/dprobe_l|| ||direction||, the scale a wrong gradient shows at


class FlaxSmall(nn.Module):
    """Dense, a marked output, LayerNorm, a 1-D Conv over the units, a Dense head."""

    width: int
    out: int

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(self.width)(x))
        h = self.perturb("mid", h)
        h = nn.LayerNorm()(h)
        h = nn.Conv(2, (3,))(h[..., None]).reshape(h.shape[0], -1)
        return nn.Dense(self.out)(nn.relu(h))


class FlaxBatchNorm(nn.Module):
    """Dense, batch norm (the built-in norm's momentum), tanh, a Dense head."""

    width: int
    out: int

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(self.width)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=norms.BN_MOMENTUM,
                         epsilon=norms.EPS)(h)
        return nn.Dense(self.out)(nn.tanh(h))


class FlaxScanBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return nn.tanh(nn.Dense(h.shape[-1])(h)), None


class FlaxScanned(nn.Module):
    """flax.linen: nn.RNN over a GRUCell (probed at every step), then two blocks in one
    nn.scan (probed per block), a Dense head."""

    width: int
    out: int

    @nn.compact
    def __call__(self, x):
        # the initial carry in the input's dtype (flax's default is float32, also under x64)
        h0 = jnp.zeros((x.shape[0], self.width), x.dtype)
        h = nn.RNN(nn.GRUCell(self.width))(x, initial_carry=h0)[:, -1]
        blocks = nn.scan(FlaxScanBlock, variable_axes={"params": 0},
                         split_rngs={"params": True}, length=2)
        h, _ = blocks(name="blocks")(h, None)
        return nn.Dense(self.out)(h)


FLAX_MODULES = {"test_common_flax": FlaxSmall, "test_common_flax_bn": FlaxBatchNorm,
                "test_common_flax_scan": FlaxScanned}


class NnxBlock(nnx.Module):
    def __init__(self, width, rngs):
        self.linear = nnx.Linear(width, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.norm(self.linear(h)))


class NnxSmall(nnx.Module):
    """flax.nnx: Linear, two blocks stacked by nnx.vmap and run by nnx.scan, a 1-D Conv over the
    units, a Linear head."""

    def __init__(self, din, width, out, rngs):
        self.stem = nnx.Linear(din, width, rngs=rngs)

        @nnx.split_rngs(splits=2)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return NnxBlock(width, rngs)

        self.blocks = blocks(rngs)
        self.conv = nnx.Conv(1, 2, (3,), rngs=rngs)
        self.head = nnx.Linear(2 * width, out, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(h, block):
            return block(h)

        h = run(jnp.tanh(self.stem(x)), self.blocks)
        h = self.conv(h[..., None]).reshape(h.shape[0], -1)
        return self.head(nnx.relu(h))


class NnxBatchNorm(nnx.Module):
    """flax.nnx: Linear, batch norm (the built-in norm's momentum), tanh, a Linear head."""

    def __init__(self, din, width, out, rngs):
        self.linear = nnx.Linear(din, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=norms.BN_MOMENTUM, epsilon=norms.EPS, rngs=rngs)
        self.head = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.norm(self.linear(x))))


NNX_MODULES = {"test_common_nnx": NnxSmall, "test_common_nnx_bn": NnxBatchNorm}


class Case(NamedTuple):
    id: str
    fields: dict                    # RunSpec fields
    probes_on_preactivation: bool = True   # rnn: probes sit on the hidden states h_t


TINY = dict(depth=3, width=6)
TEACHER = dict(task="teacher", input_dim=5)
ADDING = dict(model="rnn", task="adding", seq_len=4, depth=2, width=5)

CASES = [
    Case("mlp", dict(model="mlp", **TINY, **TEACHER, activation="tanh")),
    Case("mlp-images-batchnorm-residual", dict(model="mlp", **TINY, task="digits",
                                               norm="batchnorm", skip="residual")),
    Case("cnn-images-batchnorm-residual", dict(model="cnn", depth=3, width=4, task="digits",
                                               norm="batchnorm", skip="residual")),
    Case("cnn-signal-layernorm-skipinit", dict(model="cnn", depth=3, width=4, task="adding",
                                               seq_len=6, norm="layernorm", skip="skipinit",
                                               activation="prelu")),
    # the Elman cell on a wide input (projected before the loop) with one output per step; the
    # LSTM on a narrow one (projected inside the loop); the GRU (blockwise, never inside)
    Case("rnn-tanh-copy-per-step", dict(model="rnn", task="copy", seq_len=1, depth=2, width=4,
                                        cell="rnn", activation="tanh"), False),
    Case("rnn-lstm", dict(**ADDING, cell="lstm"), False),
    Case("rnn-gru", dict(**ADDING, cell="gru"), False),
    Case("flax", dict(model="test_common_flax", **TEACHER, width=6)),
    Case("flax-batchnorm", dict(model="test_common_flax_bn", **TEACHER, width=6)),
    Case("flax-rnn-and-scanned-stack", dict(model="test_common_flax_scan", task="adding",
                                            seq_len=4, width=5), False),
    Case("nnx-scanned-stack", dict(model="test_common_nnx", **TEACHER, width=6)),
    Case("nnx-batchnorm", dict(model="test_common_nnx_bn", **TEACHER, width=6)),
]


@pytest.fixture(scope="module", autouse=True)
def flax_entries():
    for name, module in FLAX_MODULES.items():
        vgbench.register_flax_model(name, lambda spec, task, module=module:
                                    module(spec.width, task.output_dim),
                                    doc=f"{module.__doc__} (test entry).",
                                    input_layout="channels" if module is FlaxScanned else "flat")
    for name, module in NNX_MODULES.items():
        vgbench.register_nnx_model(name, lambda spec, task, rngs, module=module:
                                   module(task.input_shape[0], spec.width, task.output_dim, rngs),
                                   doc=f"{module.__doc__} (test entry).")
    yield
    for name in [*FLAX_MODULES, *NNX_MODULES]:
        models.MODELS.unregister(name)


@functools.cache
def make_task(task: str, seq_len: int, input_dim: int):
    return tasks.make(RunSpec(task=task, seq_len=seq_len, input_dim=input_dim))


# ---------------------------------------------------------------------------- helpers

def as_dtype(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def random_like(seed: int, tree):
    """A tree of ``tree``'s shapes and dtypes drawn from a standard normal (on the host)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), tree)


def layer_masks(per_layer, like, seed: int):
    """Per leaf of ``like``, a boolean ``[L, *leaf.shape]``: which entries layer l counts.

    An entry counts in layer l when moving it moves ``per_layer(tree)[l]``: at a random tree,
    each entry is moved to two far values in turn, all entries at once under a vmap.
    """
    flat, unravel = ravel_pytree(random_like(seed, like))

    @jax.jit
    def moved(flat):
        def moves(i):
            return (per_layer(unravel(flat.at[i].add(1e3)))
                    != per_layer(unravel(flat.at[i].add(2e3))))

        by_entry = jax.vmap(moves)(jnp.arange(flat.size))              # [entries, L]
        return jax.vmap(unravel)(by_entry.T.astype(flat.dtype))        # leaves [L, ...]

    return jax.tree_util.tree_map(lambda m: np.asarray(m) == 1, moved(flat))


def masked(tree, masks, layer):
    return jax.tree_util.tree_map(lambda a, m: np.asarray(a) * m[layer], tree, masks)


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def tree_norm(tree):
    return float(np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in leaves(tree))))


def has_state(state) -> bool:
    return bool(jax.tree_util.tree_leaves(state))


def diagnostic_step(model, task, params, state, x, y, probes):
    """The values the training program reads at a log point: the loss, outputs, new state and
    forward statistics, the gradients with respect to the parameters and the probes, the
    per-layer measures of them, and the evaluation outputs (``eval_out``, ``eval_state``)."""
    def loss(params, probes):
        out, new_state, stats = model.apply(params, state, x, train=True, probes=probes)
        return task.loss(out, y), (out, new_state, stats)

    (value, (out, new_state, stats)), (grads, probe_grads) = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True)(params, probes)
    return {"loss": value, "out": out, "state": new_state, "stats": stats, "grads": grads,
            "probe_grads": probe_grads, "d_out": jax.grad(task.loss)(out, y),
            "delta_norm": model.probe_stats(probe_grads)["delta_norm"],
            "weight_norm": model.per_layer(params), "grad_norm": model.per_layer(grads),
            "weight_samples": model.weight_samples(params),
            **dict(zip(("eval_out", "eval_state"), model.apply(params, state, x, train=False)))}


# what the float64 checks read of diagnostic_step (XLA drops the rest from their program)
FLOAT64_KEYS = ("loss", "out", "state", "grads", "probe_grads", "d_out", "eval_out", "eval_state")


class Built(NamedTuple):
    """One case's model at a point away from initialization, a batch, and jitted functions."""

    model: models.Model
    params: dict
    state: dict
    x: np.ndarray
    y: np.ndarray
    probes_on_preactivation: bool
    probe_masks: dict   # layer_masks of probe_stats' delta_norm over the probes
    param_masks: dict   # layer_masks of per_layer over the parameters
    init: object        # seed -> (params, state, x): params away from initialization, a batch
                        # (the task's test examples: no sampler to compile)
    step: object        # jitted diagnostic_step(params, state, x, y, probes)
    step64: object      # the same in float64 (call it with x64 enabled)
    vstep: object       # jitted step vmapped over params, state and x

    def probes(self, dtype=np.float32):
        """Zero probes (float64 for ``step64``: its every call then has one signature)."""
        return jax.tree_util.tree_map(lambda a: np.zeros(a.shape, dtype), self.model.probes(BATCH))

    def layouts(self, params):
        """``params`` as stored and, where it differs, in the layout training carries."""
        if self.model.compute_layout is None:
            return [params]
        computed = self.model.compute_layout(params)
        same = jax.tree_util.tree_structure(computed) == jax.tree_util.tree_structure(params)
        return [params] if same else [params, computed]


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def built(request, flax_entries) -> Built:
    case = request.param
    spec = RunSpec(**case.fields)
    task = make_task(spec.task, spec.seq_len, spec.input_dim)
    model = models.make(spec, task)
    model_init = jax.jit(model.init)
    examples, labels = (np.asarray(a) for a in task.eval_test)

    def init(seed):
        # a point away from initialization, where zero-initialized gains (skipinit) pass signal
        params, state = jax.tree_util.tree_map(np.asarray, model_init(jax.random.PRNGKey(seed)))
        params = jax.tree_util.tree_map(lambda p, r: p + 0.1 * r, params,
                                        random_like(seed, params))
        return params, state, examples[seed * BATCH:(seed + 1) * BATCH]

    params, state, x = init(0)
    step = jax.jit(functools.partial(diagnostic_step, model, task))
    built = Built(
        model=model, params=params, state=state, x=x, y=labels[:BATCH],
        probes_on_preactivation=case.probes_on_preactivation,
        probe_masks=layer_masks(lambda g: model.probe_stats(g)["delta_norm"],
                                model.probes(BATCH), 1),
        param_masks=layer_masks(model.per_layer, params, 2),
        init=init, step=step, vstep=jax.jit(jax.vmap(step, in_axes=(0, 0, 0, None, None))),
        step64=jax.jit(lambda *args: {
            k: v for k, v in diagnostic_step(model, task, *as_dtype(args, jnp.float64)).items()
            if k in FLOAT64_KEYS}))
    probes = built.probes()

    def float64():
        with jax.enable_x64(True):
            built.step64(params, state, x, built.y, built.probes(np.float64))

    def vmapped():
        layout = model.compute_layout or (lambda params: params)
        entries = [init(seed) for seed in range(1, ENTRIES + 1)]
        stacked = jax.tree_util.tree_map(lambda *a: np.stack(a), *entries)
        built.vstep(jax.vmap(layout)(stacked[0]), *stacked[1:], built.y, probes)

    # Compiling the case's programs is most of this file's time, and each compilation uses one
    # core: they are compiled side by side here, and the tests find them compiled.
    warm = [float64, vmapped] + [functools.partial(built.step, p, state, x, built.y, probes)
                                 for p in built.layouts(params)]
    with concurrent.futures.ThreadPoolExecutor(len(warm)) as pool:
        list(pool.map(lambda f: f(), warm))
    return built


def test_every_builtin_and_the_flax_adapters_have_a_case():
    covered = {c.fields["model"] for c in CASES}
    builtin = {n for n in models.MODELS.names() if models.MODELS.origin(n) == "vgbench"}
    assert builtin - set(FLAX_MODULES) - set(NNX_MODULES) <= covered, builtin - covered
    assert set(FLAX_MODULES) | set(NNX_MODULES) <= covered


# ---------------------------------------------------------------------------- 1. probes are dL/dh_l

def test_probe_gradients_are_finite_differences_of_the_loss(built):
    """dL/dprobe_l along a random direction of layer l's probes is the central difference of
    the loss along it (float64), for every layer; the last layer's probe gradient is
    dL/d(output). (Every parameter layout gives the same probe gradients: see below.)"""
    b = built
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        at_zero = b.step64(b.params, b.state, b.x, b.y, b.probes(np.float64))
        grads = at_zero["probe_grads"]
        for layer, name in enumerate(b.model.layer_names):
            d = masked(jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), grads),
                       b.probe_masks, layer)
            plus, minus = (jax.tree_util.tree_map(lambda v, s=sign: s * FD_STEP * v, d)
                           for sign in (1, -1))
            numeric = (b.step64(b.params, b.state, b.x, b.y, plus)["loss"]
                       - b.step64(b.params, b.state, b.x, b.y, minus)["loss"]) / (2 * FD_STEP)
            analytic = sum(np.vdot(g, v) for g, v in zip(leaves(grads), leaves(d)))
            scale = tree_norm(masked(grads, b.probe_masks, layer)) * tree_norm(d)
            assert scale > 0, name
            assert abs(float(analytic - numeric)) <= FD_RTOL * scale, (
                f"{name}: dL/dprobe . d = {float(analytic):.10g}, finite difference "
                f"{float(numeric):.10g}")
    last = [g for g, m in zip(leaves(grads), leaves(b.probe_masks)) if m[-1].all()]
    assert len(last) == 1
    np.testing.assert_allclose(last[0], at_zero["d_out"], rtol=1e-12, atol=1e-15)


def test_probes_sit_where_the_layer_bias_enters(built):
    """dL/db_l is the probe gradient summed over examples (and positions): the probe of layer l
    is added to its pre-activation z = h W + b. Some parameter of layer l with one entry per unit
    of z must have exactly that gradient (layers without parameters, a marked output, are
    skipped)."""
    b = built
    if not b.probes_on_preactivation:
        pytest.skip("the recurrent model's probes sit on the hidden states h_t, not on the "
                    "cell's pre-activation (vgbench/models/rnn.py)")
    with jax.enable_x64(True):
        values = b.step64(b.params, b.state, b.x, b.y, b.probes(np.float64))
    for layer, name in enumerate(b.model.layer_names):
        probed = [g[m[layer]].reshape(-1, m.shape[-1]) for g, m in
                  zip(leaves(values["probe_grads"]), leaves(b.probe_masks)) if m[layer].any()]
        assert len(probed) == 1, name
        summed = probed[0].sum(axis=0)
        owned = [(g, m[layer]) for g, m in zip(leaves(values["grads"]), leaves(b.param_masks))
                 if m[layer].any()]
        if not owned:
            continue
        tol = 1e-9 * np.linalg.norm(probed[0])
        assert any(m.sum() == summed.size and np.max(np.abs(g[m] - summed)) <= tol
                   for g, m in owned), (
            f"{name}: no parameter of the layer has the summed probe gradient as its gradient")


# ---------------------------------------------------------------------------- 2. one value per layer

def test_one_value_per_declared_layer(built):
    """probe_stats, per_layer (of parameters and of gradients), weight_samples and the forward
    statistics give one value per declared layer; each probe entry and each parameter counts
    in exactly one layer, whose value is their norm; every parameter layout agrees."""
    b = built
    n_layers = len(b.model.layer_names)
    assert len(set(b.model.layer_names)) == n_layers
    values = b.step(b.params, b.state, b.x, b.y, b.probes())
    for key in ("delta_norm", "weight_norm", "grad_norm"):
        assert values[key].shape == (n_layers,), key
    assert values["weight_samples"].shape[0] == n_layers
    assert np.all(np.asarray(values["delta_norm"]) > 0)
    for key in NAN_STATS:
        assert values["stats"][key].shape == (n_layers,), key

    for key, tree, masks, scale in (
            ("delta_norm", values["probe_grads"], b.probe_masks, np.sqrt(BATCH)),
            ("grad_norm", values["grads"], b.param_masks, 1.0),
            ("weight_norm", b.params, b.param_masks, 1.0)):
        for m in leaves(masks):
            assert m.shape[0] == n_layers
            np.testing.assert_array_equal(m.sum(axis=0), 1, err_msg=key)
        by_hand = [scale * tree_norm(masked(tree, masks, layer)) for layer in range(n_layers)]
        np.testing.assert_allclose(values[key], by_hand, rtol=1e-5, err_msg=key)

    for params in b.layouts(b.params)[1:]:
        again = b.step(params, b.state, b.x, b.y, b.probes())
        for key in ("loss", "out", "probe_grads", "delta_norm", "weight_norm", "grad_norm",
                    "weight_samples"):
            for got, want in zip(leaves(again[key]), leaves(values[key])):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=key)


# ---------------------------------------------------------------------------- 3. evaluation

def test_evaluation_equals_training_up_to_batch_statistics(built):
    """Without state, evaluation is the training forward pass. With batch norm's running
    averages, evaluation with the averages set to the batch's statistics is training on it."""
    b = built
    with jax.enable_x64(True):
        trained = b.step64(b.params, b.state, b.x, b.y, b.probes(np.float64))
        out_eval = trained["eval_out"]
        # evaluation reads the state, never updates it
        jax.tree_util.tree_map(np.testing.assert_array_equal, trained["eval_state"], b.state)
        if not has_state(b.state):
            np.testing.assert_allclose(out_eval, trained["out"], rtol=1e-12, atol=1e-14)
            return
        m = norms.BN_MOMENTUM
        batch_stats = jax.tree_util.tree_map(
            lambda new, old: (np.asarray(new) - m * np.float64(old)) / (1 - m), trained["state"],
            b.state)
        assert not np.allclose(out_eval, trained["out"])
        with_batch_stats = b.step64(b.params, batch_stats, b.x, b.y, b.probes(np.float64))
        np.testing.assert_allclose(with_batch_stats["eval_out"], trained["out"],
                                   rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- 4. vmap

def test_an_entry_alone_equals_the_entry_inside_a_vmap(built):
    """The diagnostic step's values of one entry are the same alone and vmapped beside other
    entries (parameters from other seeds, other batches), in the layout training carries."""
    b = built
    layout = b.model.compute_layout or (lambda params: params)
    entries = [b.init(seed) for seed in range(1, ENTRIES + 1)]
    params, state, x = jax.tree_util.tree_map(lambda *a: np.stack(a), *entries)
    together = b.vstep(jax.vmap(layout)(params), state, x, b.y, b.probes())
    for i, (params, state, x) in enumerate(entries):
        alone = b.step(layout(params), state, x, b.y, b.probes())
        for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(alone)[0],
                                     leaves(together)):
            want = np.asarray(want)
            finite = np.abs(want[np.isfinite(want)])
            np.testing.assert_allclose(got[i], want, rtol=2e-5,
                                       atol=2e-6 * np.max(finite, initial=1e-30),
                                       err_msg=jax.tree_util.keystr(path))

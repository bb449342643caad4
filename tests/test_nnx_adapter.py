"""The flax.nnx adapter: NNX modules train in vgbench, probes are dL/dh, state is threaded."""

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vgbench
from vgbench import cli, diagnose, models, tasks, train
from vgbench.models.nnx_adapter import make_nnx_model
from vgbench.spec import RunSpec


class NnxMLP(nnx.Module):
    """depth Linear+tanh layers and a Linear head."""

    def __init__(self, din, depth, width, out, rngs):
        sizes = [din] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.head = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x):
        for layer in self.hidden:
            x = jnp.tanh(layer(x))
        return self.head(x)


class NnxCNN(nnx.Module):
    """Conv, BatchNorm, relu, Dropout, pooled, a Linear head (images (H, W, C))."""

    def __init__(self, channels, width, out, rngs):
        self.conv = nnx.Conv(channels, width, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.norm(self.conv(x))))
        return self.head(h.mean(axis=(1, 2)))


class Block(nnx.Module):
    def __init__(self, width, rngs):
        self.linear = nnx.Linear(width, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.norm(self.linear(x)))


class NnxScanned(nnx.Module):
    """A Linear, a stack of identical blocks (built with nnx.vmap, run with nnx.scan), a head."""

    def __init__(self, din, depth, width, out, rngs):
        self.stem = nnx.Linear(din, width, rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return Block(width, rngs)

        self.blocks = blocks(rngs)
        self.head = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(h, block):
            return block(h)

        return self.head(run(self.stem(x), self.blocks))


def make_mlp(spec, task, rngs):
    return NnxMLP(task.input_shape[0], spec.depth, spec.width, task.output_dim, rngs)


def make_cnn(spec, task, rngs):
    return NnxCNN(task.input_shape[-1], spec.width, task.output_dim, rngs)


def make_scanned(spec, task, rngs):
    return NnxScanned(task.input_shape[0], spec.depth, spec.width, task.output_dim, rngs)


@contextlib.contextmanager
def nnx_entry(name, make_module, **kwargs):
    """Model ``name`` registered from ``make_module`` for the length of a test."""
    vgbench.register_nnx_model(name, make_module, doc=f"{name} (test entry).", **kwargs)
    try:
        yield name
    finally:
        models.MODELS.unregister(name)


def build(make_module, **fields):
    spec = RunSpec(**fields)
    task = tasks.make(spec)
    return make_nnx_model(make_module)(spec, task), task


# ---------------------------------------------------------------------------- training runs

@pytest.mark.parametrize("make_module,fields,names", [
    (make_mlp, dict(task="teacher", input_dim=5, depth=2, width=6),
     ("hidden/0", "hidden/1", "head")),
    (make_cnn, dict(task="digits", width=3), ("conv", "head")),
    (make_scanned, dict(task="teacher", input_dim=5, depth=3, width=6),
     ("stem", "blocks/0/linear", "blocks/1/linear", "blocks/2/linear", "head")),
], ids=["mlp", "cnn-batchnorm-dropout", "scanned-stack"])
def test_nnx_models_run_in_the_training_program(make_module, fields, names):
    layout = "channels" if make_module is make_cnn else "flat"
    with nnx_entry("test_nnx_model", make_module, input_layout=layout) as name:
        spec = RunSpec(model=name, steps=4, log_every=2, batch_size=8, **fields)
        program, raw = train.train(spec, [0, 1])
    assert program.model.layer_names == names
    logs = raw.outputs["logs"]
    assert logs["delta_norm"].shape[-1] == len(names)
    assert np.all(np.isfinite(logs["loss"]))
    assert np.all(np.isfinite(logs["delta_norm"])) and np.all(logs["delta_norm"] > 0)
    assert np.all(np.isfinite(logs["grad_norm"]))
    assert not np.allclose(logs["weight_samples"][:, 0], logs["weight_samples"][:, -1])


# ---------------------------------------------------------------------------- probes

def test_probes_match_finite_differences_in_a_scanned_stack():
    """dL/dprobe along a random direction at one layer (one block of the stack) is the central
    difference of the loss along it, in float64."""
    model, _ = build(make_scanned, task="teacher", input_dim=4, depth=2, width=5)
    params, state = model.init(jax.random.PRNGKey(1))
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 10))
    stacked = {"stem": None, "blocks/0/linear": 0, "blocks/1/linear": 1, "head": None}
    assert model.layer_names == tuple(stacked)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)

        def loss(probes):
            out, _, _ = model.apply(params64, state, x, train=True, probes=probes)
            return jnp.mean(jnp.square(out - y))

        zero = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, jnp.float64), model.probes(3))
        grads = jax.grad(loss)(zero)
        eps = 1e-5
        for name, index in stacked.items():
            key = "blocks/linear" if index is not None else name
            direction = np.zeros(zero[key].shape)
            if index is None:
                direction[...] = rng.standard_normal(direction.shape)
            else:
                direction[index] = rng.standard_normal(direction.shape[1:])
            numeric = (loss({**zero, key: eps * direction})
                       - loss({**zero, key: -eps * direction})) / (2 * eps)
            np.testing.assert_allclose(np.vdot(grads[key], direction), numeric, rtol=1e-6,
                                       err_msg=name)
        delta = model.probe_stats(grads)["delta_norm"]
        np.testing.assert_allclose(delta[2], np.sqrt(3) * np.linalg.norm(grads["blocks/linear"][1]),
                                   rtol=1e-6)
        # each block's parameters (its LayerNorm's too) are its own layer's slice
        norms = np.asarray(model.per_layer(params))
        block = params["blocks"]
        by_hand = np.sqrt(sum(np.sum(np.square(block[m][p][1])) for m, p in
                              [("linear", "kernel"), ("linear", "bias"), ("norm", "scale"),
                               ("norm", "bias")]))
        np.testing.assert_allclose(norms[2], by_hand, rtol=1e-6)


# ---------------------------------------------------------------------------- state

def test_dropout_draws_a_new_mask_each_training_step_and_evaluation_is_deterministic():
    model, _ = build(make_cnn, task="digits", width=3)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    out1, state1, _ = model.apply(params, state, x, train=True)
    out2, _, _ = model.apply(params, state1, x, train=True)
    again, _, _ = model.apply(params, state, x, train=True)
    assert not np.allclose(out1, out2)              # a new mask from the stream's count
    np.testing.assert_array_equal(out1, again)      # the same state gives the same mask
    assert state1["drop"]["rngs"]["count"] == state["drop"]["rngs"]["count"] + 1
    eval1, same, _ = model.apply(params, state1, x, train=False)
    eval2, _, _ = model.apply(params, state1, x, train=False)
    assert same is state1
    np.testing.assert_array_equal(eval1, eval2)


def test_batch_norm_statistics_update_in_training_only():
    model, _ = build(make_cnn, task="digits", width=3)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1)) + 2.0
    _, new_state, _ = model.apply(params, state, x, train=True)
    conv = params["conv"]
    z = jax.lax.conv_general_dilated(x, conv["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
    # running = momentum * running + (1 - momentum) * batch mean (momentum 0.9, started at 0)
    np.testing.assert_allclose(new_state["norm"]["mean"], 0.1 * z.mean((0, 1, 2)), rtol=1e-4,
                               atol=1e-6)
    _, after_eval, _ = model.apply(params, new_state, x, train=False)
    assert after_eval is new_state
    old, _, _ = model.apply(params, state, x, train=False)
    new, _, _ = model.apply(params, new_state, x, train=False)
    assert not np.allclose(old, new)


def test_layer_table_of_an_nnx_module_in_ones_own_code():
    module = NnxMLP(5, 3, 6, 2, nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    y = jax.random.normal(jax.random.PRNGKey(2), (7, 2))
    before = np.asarray(module.hidden[0].kernel[...])
    table = diagnose.nnx_layer_table(module, x, y, lambda out, y: jnp.mean(jnp.square(out - y)))
    assert list(table["layer_name"]) == ["hidden/0", "hidden/1", "hidden/2", "head"]
    np.testing.assert_allclose(table["weight_norm"][3], np.sqrt(
        np.sum(np.square(module.head.kernel[...])) + np.sum(np.square(module.head.bias[...]))),
        rtol=1e-6)
    assert np.all(table["delta_norm"] > 0)
    np.testing.assert_array_equal(module.hidden[0].kernel[...], before)
    assert type(module.hidden[0]) is nnx.Linear   # the user's module is left as it was


def test_diagnose_runs_an_nnx_plugin(tmp_path, capsys):
    plugin = tmp_path / "my_nnx.py"
    plugin.write_text(
        "from flax import nnx\nimport vgbench\n\n"
        "class Net(nnx.Module):\n"
        "    def __init__(self, din, width, out, rngs):\n"
        "        self.a = nnx.Linear(din, width, rngs=rngs)\n"
        "        self.b = nnx.Linear(width, out, rngs=rngs)\n\n"
        "    def __call__(self, x):\n"
        "        return self.b(nnx.tanh(self.a(x)))\n\n"
        "vgbench.register_nnx_model('test_nnx_plugin', lambda spec, task, rngs: Net(\n"
        "    task.input_shape[0], spec.width, task.output_dim, rngs), doc='Two layers (test).')\n")
    out = tmp_path / "d.json"
    try:
        code = cli.main(["diagnose", "--plugin", str(plugin), "--model", "test_nnx_plugin",
                         "--task", "teacher", "--width", "4", "--out", str(out)])
    finally:
        models.MODELS.unregister("test_nnx_plugin")
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["diagnostics"]["layer_names"] == ["a", "b"]


# ---------------------------------------------------------------------------- errors

class NoLinear(nnx.Module):
    def __init__(self, rngs):
        self.scale = nnx.Param(jnp.ones((64,)))

    def __call__(self, x):
        return x * self.scale[...]


class PerToken(nnx.Module):
    def __init__(self, rngs):
        self.head = nnx.Linear(1, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1, 1))


def make_linen(spec, task, rngs):
    import flax.linen as nn

    return nn.Dense(10)


@pytest.mark.parametrize("make_module,error,match", [
    (make_linen, TypeError, "test_nnx_bad.*flax.linen.Module.*register_flax_model"),
    (lambda spec, task, rngs: object(), TypeError, "test_nnx_bad.*flax.nnx.Module.*object"),
    (lambda spec, task, rngs: NoLinear(rngs), ValueError, "test_nnx_bad.*no layer to probe"),
    (lambda spec, task, rngs: PerToken(rngs), ValueError,
     r"test_nnx_bad.*\(batch, 10\).*\(2, 64, 10\).*one output per position"),
    (lambda spec, task, rngs: NnxMLP(64, 1, 4, 3, rngs), ValueError,
     r"test_nnx_bad.*\(batch, 10\).*\(2, 3\)"),
], ids=["linen", "not-a-module", "no-layer", "per-token", "output-size"])
def test_bad_modules_get_one_clear_error(make_module, error, match):
    with nnx_entry("test_nnx_bad", make_module) as name:
        spec = RunSpec(task="digits", model=name)
        with pytest.raises(error, match=match):
            models.make(spec, tasks.make(spec))


# ---------------------------------------------------------------------------- coverage

class Gain(nnx.Module):
    """A hand-written layer: a learnable gain per unit (a Param of its own)."""

    def __init__(self, width):
        self.g = nnx.Param(jnp.full((width,), 0.5))

    def __call__(self, x):
        return x * self.g[...]


class TokenNet(nnx.Module):
    """Integer tokens -> nnx.Embed -> LayerNorm -> a hand-written gain -> Linear head."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(11, 6, rngs=rngs)
        self.norm = nnx.LayerNorm(6, rngs=rngs)
        self.gain = Gain(6)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, tokens):
        h = self.gain(self.norm(self.embed(tokens).mean(axis=1)))
        return self.head(h)


def test_every_module_with_parameters_is_probed_and_coverage_says_what_is_not():
    from vgbench.models.flax_adapter import coverage
    from vgbench.models.nnx_adapter import adapt_nnx_module

    model, params, state = adapt_nnx_module(TokenNet(nnx.Rngs(0)), (5,), name="tokens",
                                            output_dim=3, input_dtype=jnp.int32)
    assert model.layer_names == ("embed", "gain", "head")
    cover = coverage("tokens")
    assert cover.layers == 3 and cover.not_probed == ("norm",)
    assert cover.probed_share == pytest.approx((66 + 6 + 21) / (66 + 12 + 6 + 21))
    assert "'tokens': 3 layers probed" in cover.line("tokens") and "norm" in cover.line("tokens")
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 5), 0, 11)
    y = jax.random.normal(jax.random.PRNGKey(2), (4, 3))

    def loss(probes):
        out, _, _ = model.apply(params, state, tokens, train=True, probes=probes)
        return jnp.sum(jnp.square(out - y))

    zero = model.probes(4)
    assert zero["embed"].shape == (4, 5, 6)                  # the embedding of every token
    grads = jax.grad(loss)(zero)
    for key in zero:
        direction = jax.random.normal(jax.random.PRNGKey(3), zero[key].shape)
        numeric = (loss({**zero, key: 1e-2 * direction})
                   - loss({**zero, key: -1e-2 * direction})) / 2e-2
        np.testing.assert_allclose(jnp.vdot(grads[key], direction), numeric, rtol=2e-3,
                                   err_msg=key)

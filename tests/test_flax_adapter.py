"""The flax.linen adapter: a registered flax MLP is the built-in MLP, probes are dL/dh."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vgbench
from vgbench import activations, models, tasks, train
from vgbench.models.flax_adapter import adapt_module
from vgbench.spec import RunSpec


class FlaxMLP(nn.Module):
    """The built-in MLP's network written in flax: depth Dense+activation layers, a linear head."""

    depth: int
    width: int
    out: int
    act: object

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = self.act(nn.Dense(self.width, name=f"dense_{i + 1}")(x))
        return nn.Dense(self.out, name="output")(x)


class BatchNormMLP(nn.Module):
    out: int = 3

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(6)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(self.out)(nn.tanh(x))


def make_flax_mlp(spec, task):
    """Flax MLP of the config's depth, width and activation (test entry)."""
    act = activations.get(spec.activation).bind(spec)
    return FlaxMLP(spec.depth, spec.width, task.output_dim, lambda z: act.apply(z))


@pytest.fixture
def flax_mlp():
    vgbench.register_flax_model("test_flax_mlp", make_flax_mlp)
    yield "test_flax_mlp"
    models.MODELS.unregister("test_flax_mlp")


def builtin_to_flax(params, depth):
    """The built-in MLP's (seed-stacked) parameters in FlaxMLP's layout."""
    layers = [params["stem"]] + [jax.tree_util.tree_map(lambda a: a[:, i], params["hidden"])
                                 for i in range(depth - 1)] + [params["out"]]
    names = [f"dense_{i + 1}" for i in range(depth)] + ["output"]
    return {n: {"kernel": p["w"], "bias": p["b"]} for n, p in zip(names, layers)}


@pytest.mark.parametrize("activation,init", [("tanh", "xavier_normal"), ("sigmoid", "naive")])
def test_flax_mlp_matches_builtin_mlp(flax_mlp, activation, init):
    base = RunSpec(task="digits", model="mlp", depth=5, width=16, activation=activation,
                   init=init, steps=6, log_every=2, batch_size=16, lr=0.5)
    seeds = [0, 1]
    prog_b = train.build_program(base)
    params, state, keys = train.init_params(base, seeds, task=prog_b.task)
    lrs = jnp.full((2,), base.lr)
    out_b = jax.tree_util.tree_map(np.asarray, prog_b.run(params, state, keys, lrs))

    spec_f = base.replace(model=flax_mlp)
    prog_f = train.build_program(spec_f)
    assert prog_f.model.layer_names == prog_b.model.layer_names
    out_f = jax.tree_util.tree_map(
        np.asarray, prog_f.run(builtin_to_flax(params, 5), {}, keys, lrs))
    for key in ("loss", "test_loss", "delta_norm", "grad_norm", "weight_norm", "update_ratio",
                "weight_samples"):
        np.testing.assert_allclose(out_f["logs"][key], out_b["logs"][key], rtol=2e-5, atol=0,
                                   err_msg=key)
    for split in ("train", "test"):
        for key, value in out_b["final"][split].items():
            np.testing.assert_allclose(out_f["final"][split][key], value, rtol=2e-5, err_msg=key)
    # the signal really moves: a sigmoid stack attenuates it by orders of magnitude at init
    delta0 = out_f["logs"]["delta_norm"][:, 0]
    if activation == "sigmoid":
        assert np.all(delta0[:, 0] < 1e-2 * delta0[:, -2])


def test_layer_order_and_names_follow_the_call_order():
    class Marked(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4, name="b_first")(x)            # called first despite its name
            h = self.perturb("mid", nn.relu(h))
            h = nn.LayerNorm()(h)
            shared = nn.Dense(4, name="a_shared")
            return nn.Dense(2, name="head")(shared(shared(h)))

    model = adapt_module(Marked(), (3,))
    assert model.layer_names == ("b_first", "mid", "a_shared", "a_shared@2", "head")
    params, _ = model.init(jax.random.PRNGKey(0))
    norms = np.asarray(model.per_layer(params))
    # LayerNorm (scale 1, bias 0 -> norm 2) joins b_first's layer; the marked output owns none
    w = params["b_first"]["kernel"]
    np.testing.assert_allclose(norms[0], np.sqrt(np.sum(np.square(w)) + 4.0), rtol=1e-6)
    assert norms[1] == 0.0 and norms[3] == 0.0
    np.testing.assert_allclose(norms[2], np.linalg.norm(params["a_shared"]["kernel"]), rtol=1e-6)


def test_probes_match_finite_differences():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.tanh(nn.Dense(5)(x))
            h = self.perturb("after_tanh", h)
            h = nn.tanh(nn.Conv(3, (2,))(h[..., None]).mean(-1))
            return nn.Dense(2)(h)

    model = adapt_module(Net(), (4,))
    params, state = model.init(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 4))
    y = jax.random.normal(jax.random.PRNGKey(3), (3, 2))

    def loss(probes):
        out, _, _ = model.apply(params, state, x, train=True, probes=probes)
        return jnp.mean(jnp.square(out - y))

    zero = model.probes(3)
    grads = jax.grad(loss)(zero)
    eps = 1e-2
    for k, key in enumerate(model.layer_names):
        direction = jax.random.normal(jax.random.PRNGKey(10 + k), zero[key].shape)
        plus = {**zero, key: eps * direction}
        minus = {**zero, key: -eps * direction}
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(grads[key], direction), numeric, rtol=2e-3, atol=1e-6,
                                   err_msg=key)
    stats = model.probe_stats(grads)["delta_norm"]
    np.testing.assert_allclose(stats[0], np.sqrt(3) * np.linalg.norm(grads["Dense_0"]), rtol=1e-6)


def test_batch_norm_statistics_are_threaded():
    model = adapt_module(BatchNormMLP(), (4,))
    params, state = model.init(jax.random.PRNGKey(0))
    assert set(state) == {"batch_stats"}
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 4)) + 3.0
    _, new_state, _ = model.apply(params, state, x, train=True)
    z = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    # flax's BatchNorm: running = momentum * running + (1 - momentum) * batch statistic
    np.testing.assert_allclose(new_state["batch_stats"]["BatchNorm_0"]["mean"],
                               0.1 * z.mean(0), rtol=1e-5)
    out_eval_old, _, _ = model.apply(params, state, x, train=False)
    out_eval_new, same, _ = model.apply(params, new_state, x, train=False)
    assert same is new_state   # evaluation reads the statistics, never updates them
    assert not np.allclose(out_eval_old, out_eval_new)


@contextlib.contextmanager
def flax_entry(name, make_module):
    """Model ``name`` registered from ``make_module`` for the length of a test."""
    vgbench.register_flax_model(name, make_module, doc=f"{name} (test entry).")
    try:
        yield name
    finally:
        models.MODELS.unregister(name)


def test_batch_norm_model_runs_in_the_training_program():
    with flax_entry("test_flax_bn", lambda spec, task: BatchNormMLP(task.output_dim)) as name:
        spec = RunSpec(task="teacher", model=name, steps=4, log_every=2, batch_size=8)
        program, raw = train.train(spec, [0, 1])
    assert program.model.layer_names == ("Dense_0", "Dense_1")
    assert np.all(np.isfinite(raw.outputs["logs"]["delta_norm"]))
    assert np.all(raw.outputs["logs"]["delta_norm"] > 0)
    assert np.all(np.isfinite(raw.outputs["logs"]["loss"]))


class OnlyNorm(nn.Module):
    """Parameters only in a normalisation layer: nothing that is a layer of its own."""

    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm()(x)[..., :10]


@pytest.mark.parametrize("name,make_module,error,match", [
    ("test_flax_nodense", lambda spec, task: OnlyNorm(), ValueError,
     "test_flax_nodense.*no module with parameters of its own.*perturb"),
    ("test_flax_out3", lambda spec, task: BatchNormMLP(3), ValueError,
     r"test_flax_out3.*\(batch, 10\).*\(2, 3\)"),
    ("test_flax_bad", lambda spec, task: object(), TypeError,
     "test_flax_bad.*flax.linen.Module.*object"),
])
def test_bad_modules_get_one_clear_error(name, make_module, error, match):
    with flax_entry(name, make_module):
        spec = RunSpec(task="digits", model=name)
        with pytest.raises(error, match=match):
            models.make(spec, tasks.make(spec))


# ---------------------------------------------------------------------------- models as people write them

class DropoutMLP(nn.Module):
    """Flax's dropout guide: the flag is called ``training``."""

    out: int = 3

    @nn.compact
    def __call__(self, x, training: bool):
        x = nn.relu(nn.Dense(8)(x))
        x = nn.Dropout(0.5, deterministic=not training)(x)
        return nn.Dense(self.out)(x)


class DeterministicMLP(nn.Module):
    """The other convention: ``deterministic`` is True in evaluation."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.Dropout(0.5)(nn.relu(nn.Dense(8)(x)), deterministic=deterministic)
        return nn.Dense(3)(x)


@pytest.mark.parametrize("net", [DropoutMLP(), DeterministicMLP()])
def test_dropout_gets_a_new_key_every_training_step_and_none_in_evaluation(net):
    model = adapt_module(net, (4,), output_dim=3)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((6, 4))
    out1, state1, _ = model.apply(params, state, x, train=True)
    out2, state2, _ = model.apply(params, state1, x, train=True)
    assert not np.allclose(out1, out2)                   # a new mask each step
    again, _, _ = model.apply(params, state, x, train=True)
    np.testing.assert_array_equal(out1, again)           # the same step: the same mask
    assert int(state2["vgbench_rng"]["step"]) == 2
    ev1, same, _ = model.apply(params, state1, x, train=False)
    ev2, _, _ = model.apply(params, state2, x, train=False)
    np.testing.assert_array_equal(ev1, ev2)              # evaluation: deterministic
    assert same is state1
    other = model.init(jax.random.PRNGKey(1))[1]         # another seed, another stream
    assert not np.allclose(model.apply(params, other, x, train=True)[0], out1)


def test_a_dropout_model_trains_in_the_training_program():
    with flax_entry("test_flax_dropout", lambda spec, task: DropoutMLP(task.output_dim)) as name:
        spec = RunSpec(task="teacher", model=name, steps=4, log_every=2, batch_size=8)
        program, raw = train.train(spec, [0, 1])
    assert program.model.layer_names == ("Dense_0", "Dense_1")
    logs = raw.outputs["logs"]
    assert np.all(np.isfinite(logs["loss"])) and np.all(logs["delta_norm"] > 0)


class LocalNet(nn.Module):
    """Layers that are not Dense or Conv: a ConvLocal stack, an Embed, a custom parameter."""

    @nn.compact
    def __call__(self, x):
        h = nn.Embed(11, 4)(x)                                       # integer tokens
        h = nn.tanh(nn.ConvLocal(3, (2,))(h))
        h = nn.LayerNorm()(h)
        h = h.mean(axis=1) * self.param("gain", nn.initializers.ones, (3,))
        return nn.Dense(2)(h)


def test_every_module_with_parameters_is_probed_and_coverage_says_what_is_not():
    from vgbench.models.flax_adapter import coverage

    model = adapt_module(LocalNet(), (5,), name="local", output_dim=2, input_dtype=jnp.int32)
    # the custom parameter sits on the network itself, whose output is the network's output:
    # not a layer of its own; it joins a layer by position
    assert model.layer_names == ("Embed_0", "ConvLocal_0", "Dense_0")
    cover = coverage("local")
    params, state = model.init(jax.random.PRNGKey(0))
    sizes = {k: sum(a.size for a in jax.tree_util.tree_leaves(v)) for k, v in params.items()}
    assert cover.not_probed == ("LayerNorm_0", "root")
    assert cover.probed_share == pytest.approx(
        1 - (sizes["LayerNorm_0"] + sizes["gain"]) / sum(sizes.values()))
    assert "3 layers probed" in cover.line("local") and "LayerNorm_0" in cover.line("local")
    x = jnp.array([[1, 2, 3, 4, 5], [0, 0, 1, 1, 2]], jnp.int32)     # tokens keep their dtype
    out, _, _ = model.apply(params, state, x, train=False)
    assert out.shape == (2, 2)


class PerToken(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape(x.shape[0], 8, 8)), None      # (B, T, C) and an extra


def test_a_per_token_or_tuple_output_is_caught_when_the_model_is_built():
    with flax_entry("test_flax_tokens", lambda spec, task: PerToken()) as name:
        spec = RunSpec(task="digits", model=name)
        with pytest.raises(ValueError, match=r"test_flax_tokens.*\(batch, 10\).*output_fn"):
            models.make(spec, tasks.make(spec))
    vgbench.register_flax_model("test_flax_head", lambda spec, task: PerToken(),
                                output_fn=lambda out: out[0][:, -1], doc="Last token (test entry).")
    try:
        spec = RunSpec(task="digits", model="test_flax_head")
        model = models.make(spec, tasks.make(spec))
        assert model.layer_names == ("Dense_0",)
    finally:
        models.MODELS.unregister("test_flax_head")


class NamedAxisBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.BatchNorm(use_running_average=not train, axis_name="batch")(nn.Dense(4)(x))
        return nn.Dense(3)(x)


def test_a_batch_norm_over_a_named_axis_gets_one_clear_error():
    with pytest.raises(ValueError, match=r"'bn'.*named axis 'batch'.*leave axis_name out"):
        adapt_module(NamedAxisBN(), (4,), name="bn", output_dim=3)


class ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.tanh(nn.Dense(8)(x)), None


class ScannedStack(nn.Module):
    """Flax's guide to scanning over layers: four blocks in one nn.scan."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8)(x)
        blocks = nn.scan(ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=4)
        x, _ = blocks()(x, None)
        return nn.Dense(3)(x)


class RecurrentNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.RNN(nn.LSTMCell(6))(x)[:, -1])


def _fd_check(model, params, state, x, loss_of, *, train=True, eps=1e-2):
    """Every probe's gradient against central finite differences along a random direction
    (float32: ``eps`` large enough for round-off, small enough for the curvature)."""
    def loss(probes):
        out, _, _ = model.apply(params, state, x, train=train, probes=probes)
        return loss_of(out)

    zero = model.probes(x.shape[0])
    grads = jax.grad(loss)(zero)
    for k, key in enumerate(zero):
        direction = jax.random.normal(jax.random.PRNGKey(20 + k), zero[key].shape)
        numeric = (loss({**zero, key: eps * direction})
                   - loss({**zero, key: -eps * direction})) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(grads[key], direction), numeric, rtol=2e-3,
                                   atol=1e-6, err_msg=key)
    return grads


def test_a_scanned_stack_is_probed_block_by_block():
    from vgbench.models.flax_adapter import coverage, graph

    stack = adapt_module(ScannedStack(), (5,), name="stack", output_dim=3)
    blocks = tuple(f"ScanScanBlock_0/{i}/Dense_0" for i in range(4))
    assert stack.layer_names == ("Dense_0", *blocks, "Dense_1")
    cover = coverage("stack")
    assert cover.layers == 6 and cover.probed_share == 1.0 and not cover.not_probed
    assert "a stack of 4 blocks" in cover.line("stack")
    assert graph("stack").chain == tuple(range(6))
    params, state = stack.init(jax.random.PRNGKey(0))
    kernel = params["ScanScanBlock_0"]["Dense_0"]["kernel"]          # [4, 8, 8]: block i's slice
    bias = params["ScanScanBlock_0"]["Dense_0"]["bias"]
    np.testing.assert_allclose(stack.per_layer(params)[1:5],
                               np.sqrt(np.sum(np.square(kernel), (1, 2))
                                       + np.sum(np.square(bias), 1)), rtol=1e-6)
    samples = np.asarray(stack.weight_samples(params))
    assert len({tuple(row) for row in samples[1:5]}) == 4              # each block its own weights
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    grads = _fd_check(stack, params, state, x, lambda out: jnp.sum(jnp.square(out)))
    g = grads["ScanScanBlock_0/*/Dense_0"]
    assert g.shape == (4, 3, 8)
    np.testing.assert_allclose(stack.probe_stats(grads)["delta_norm"][1:5],
                               np.sqrt(3) * np.linalg.norm(g.reshape(4, -1), axis=1), rtol=1e-6)


def test_an_rnn_is_probed_at_every_step_through_the_recurrence():
    from vgbench.models.flax_adapter import coverage

    rnn = adapt_module(RecurrentNet(), (7, 2), name="rnn", output_dim=3)
    assert rnn.layer_names == ("RNN_0", "Dense_0")
    cover = coverage("rnn")
    assert cover.probed_share == 1.0 and not cover.not_probed and not cover.lifted
    assert "over time, the carry h_t at each of 7 steps" in cover.line("rnn")
    params, state = rnn.init(jax.random.PRNGKey(0))
    assert rnn.per_layer(params)[0] > 0                       # the cell's weights: RNN_0's layer
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 2))
    grads = _fd_check(rnn, params, state, x, lambda out: jnp.sum(jnp.square(out)))
    g = grads["RNN_0/*"]
    assert g.shape == (7, 3, 6)                               # time-major, as the built-in RNN's
    # the loss reads only the last h: every earlier step's gradient comes through the recurrence
    assert np.all(np.linalg.norm(g[:-1].reshape(6, -1), axis=1) > 0)
    time = rnn.probe_stats(grads)["time_delta_norm"]
    np.testing.assert_allclose(time, np.sqrt(3) * np.linalg.norm(g.reshape(7, -1), axis=1),
                               rtol=1e-6)


class RematBlock(nn.Module):
    train: bool = True

    @nn.compact
    def __call__(self, x, _):
        h = nn.Dense(16)(nn.LayerNorm()(x))
        h = nn.Dropout(0.5, deterministic=not self.train)(nn.gelu(h))
        return x + nn.Dense(8)(h), None


class Encoder(nn.Module):
    """A pre-norm residual stack written as flax's guides write it: nn.scan over nn.remat, with
    dropout split over the blocks, inside a submodule."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x)
        blocks = nn.scan(nn.remat(RematBlock), variable_axes={"params": 0},
                         split_rngs={"params": True, "dropout": True}, length=3)
        x, _ = blocks(train, name="layers")(x, None)
        return nn.Dense(3)(nn.LayerNorm()(x))


class Cell(nn.Module):
    @nn.compact
    def __call__(self, h, x):
        h = jnp.tanh(nn.Dense(6, name="wx")(x) + nn.Dense(6, use_bias=False, name="wh")(h))
        return h, h


class ScanOverTime(nn.Module):
    """A hand-written cell under nn.scan over the time axis, its weights shared by every step."""

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(Cell, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
        h, _ = scan()(jnp.zeros((x.shape[0], 6)), x)
        return nn.Dense(3)(h)


def test_remat_blocks_with_dropout_and_a_scanned_cell_are_probed_per_iteration():
    from vgbench.models.flax_adapter import coverage

    enc = adapt_module(Encoder(), (5,), name="enc", output_dim=3)
    assert enc.layer_names == ("Dense_0", *(f"layers/{i}/Dense_{j}" for i in range(3)
                                            for j in range(2)), "Dense_1")
    cover = coverage("enc")
    assert set(cover.not_probed) == {"layers/LayerNorm_0", "LayerNorm_0"}
    params, state = enc.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    # (layer norm's curvature: central differences at 1e-2 are off by 0.7 %, exact at 1e-4 in
    # float64)
    _fd_check(enc, params, state, x, lambda out: jnp.sum(jnp.square(out)), train=False, eps=2e-3)
    # training draws a dropout mask in every block: the outputs differ from evaluation's
    train_out = enc.apply(params, state, x, train=True, probes=enc.probes(4))[0]
    eval_out = enc.apply(params, state, x, train=False, probes=enc.probes(4))[0]
    assert not np.allclose(train_out, eval_out)

    cell = adapt_module(ScanOverTime(), (7, 2), name="cell", output_dim=3)
    assert cell.layer_names == ("ScanCell_0", "Dense_0") and coverage("cell").probed_share == 1.0
    params, state = cell.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 2))
    grads = _fd_check(cell, params, state, x, lambda out: jnp.sum(jnp.square(out)))
    assert grads["ScanCell_0/*"].shape == (7, 3, 6)


def test_the_layer_table_takes_integer_tokens_and_dropout():
    from vgbench.diagnose import flax_layer_table

    class Tokens(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.Dropout(0.2, deterministic=not train)(nn.Embed(11, 4)(x))
            return nn.Dense(3)(h.mean(axis=1))

    x = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
    variables = Tokens().init(jax.random.PRNGKey(0), x)
    table = flax_layer_table(Tokens(), variables, x, jnp.array([0, 2]),
                             lambda out, y: -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(2), y]))
    assert list(table["layer_name"]) == ["Embed_0", "Dense_0"]
    assert np.all(table["delta_norm"] > 0)


class ActorCritic(nn.Module):
    """A policy and a value head on one trunk, the value computed last; an auxiliary head the
    output does not use; a two-layer path to the policy."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8, name="trunk_1")(x))
        h = nn.relu(nn.Dense(8, name="trunk_2")(h))
        logits = nn.Dense(3, name="policy")(h)
        value = nn.Dense(1, name="value")(h)
        nn.Dense(2, name="aux")(h)
        return jnp.concatenate([logits, value], -1)


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        q, k, v = (nn.Dense(4, name=n)(x) for n in ("query", "key", "value"))
        return nn.Dense(2, name="out")(jax.nn.softmax(q @ k.T) @ v)


def test_the_layer_graph_finds_the_signal_path_side_branches_and_unused_layers():
    from vgbench.diagnose import flax_layer_table, verdict_text
    from vgbench.models.flax_adapter import graph

    adapt_module(ActorCritic(), (5,), name="ac", output_dim=4)
    g = graph("ac")   # layers: trunk_1, trunk_2, policy, value, aux
    assert g.chain == (0, 1, 2) and g.side == (3,) and g.outputs == (2, 3) and g.unused == (4,)
    adapt_module(Attention(), (5,), name="attention", output_dim=2)
    g = graph("attention")   # the key and value are beside the query, not deeper than it
    assert g.chain == (0, 3) and g.side == (1, 2)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
    variables = ActorCritic().init(jax.random.PRNGKey(1), x)
    table = flax_layer_table(ActorCritic(), variables, x, jnp.zeros((6, 4)),
                             lambda out, y: jnp.mean(jnp.square(out - y)))
    assert list(table["path"]) == ["signal", "signal", "signal", "side", "unused"]
    assert table.loc[4, "delta_norm"] == 0.0                 # no gradient reaches aux
    text = verdict_text(table)
    assert "off the signal path: value" in text and "no gradient): aux" in text


class ZeroScaleBlock(nn.Module):
    """Flax's ResNet block: the residual branch's last BatchNorm scale starts at 0."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(8)(x)
        y = nn.relu(nn.Dense(8)(x))
        y = nn.BatchNorm(use_running_average=not train, scale_init=nn.initializers.zeros)(
            nn.Dense(8)(y))
        return nn.Dense(3)(nn.relu(x + y))


def test_exact_zeros_from_a_zero_scale_are_no_gradient_not_a_vanished_or_exploded_signal():
    from vgbench import diagnostics
    from vgbench.diagnose import flax_layer_table, verdict_text

    x = jax.random.normal(jax.random.PRNGKey(0), (16, 5))
    variables = ZeroScaleBlock().init(jax.random.PRNGKey(1), x)
    table = flax_layer_table(ZeroScaleBlock(), variables, x, jnp.zeros((16, 3)),
                             lambda out, y: jnp.mean(jnp.square(out - y)))
    # the branch's two layers get exactly 0: the zero scale blocks every path back to them
    assert list(table["delta_norm"] == 0) == [False, True, True, False]
    text = verdict_text(table)
    assert "exactly 0, no gradient" in text and "Dense_1, Dense_2" in text
    verdict = text.split(";")[0]          # the verdict itself, before the layers named apart
    assert "exploding" not in verdict and "vanishing" not in verdict
    # an underflow is not an exact zero: the profile falls through tiny values to it
    assert not diagnostics.exact_zeros([0.0, 1e-30, 1e-10, 1.0]).any()
    assert list(diagnostics.exact_zeros([0.5, 0.0, 0.0, 1.0])) == [False, True, True, False]


class FlaxLSTM(nn.Module):
    """Flax's recurrent API as its guide writes it: nn.RNN over an LSTMCell, a head on h_T."""

    out: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.out)(nn.RNN(nn.LSTMCell(8))(x)[:, -1])


def test_a_flax_rnn_records_its_time_profile_like_the_builtin_rnn(tmp_path, capsys):
    import json

    from vgbench import cli

    name = "test_flax_lstm"
    vgbench.register_flax_model(name, lambda spec, task: FlaxLSTM(task.output_dim),
                                input_layout="channels", doc="nn.RNN(LSTMCell) (test entry).")
    try:
        args = ["--model", name, "--task", "adding", "--seq-len", "12", "--width", "8"]
        train_out, diag_out = tmp_path / "t.json", tmp_path / "d.json"
        assert cli.main(["train", *args, "--steps", "4", "--log-every", "2", "--batch-size", "8",
                         "--optimizer", "adam", "--lr", "1e-3", "--seeds", "2",
                         "--out", str(train_out)]) == 0
        assert cli.main(["diagnose", *args, "--out", str(diag_out)]) == 0
    finally:
        models.MODELS.unregister(name)
    rec = json.loads(train_out.read_text())["diagnostics"]
    assert rec["layer_names"] == ["RNN_0", "Dense_0"]
    time = np.asarray(rec["time_delta_norm"])                  # [seed, log point, t]
    assert time.shape == (2, 3, 12) and np.all(time > 0)       # ‖∂L/∂h_t‖ for every t
    assert "RNN_0: over time, the carry h_t at each of 12 steps" in capsys.readouterr().out
    assert json.loads(diag_out.read_text())["diagnostics"]["layer_names"] == ["RNN_0", "Dense_0"]


def test_a_record_carries_coverage_and_the_verdict_reads_the_signal_path():
    from vgbench import record, verdict

    class Heads(nn.Module):
        out: int

        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(8, name="trunk_2")(nn.relu(nn.Dense(8, name="trunk_1")(x))))
            value = nn.Dense(1, name="value")(h)
            return jnp.concatenate([nn.Dense(self.out - 1, name="policy")(h), value], -1)

    with flax_entry("test_flax_heads", lambda spec, task: Heads(task.output_dim)) as name:
        spec = RunSpec(task="digits", model=name, steps=4, log_every=2, batch_size=8)
        program, raw = train.train(spec, [0])
        rec = record.build_record(spec, [0], raw.outputs, task=program.task,
                                  layer_names=program.model.layer_names, compile_s=0.0,
                                  run_s=0.0, model_info=program.model.info)
    probes = rec["probes"]
    assert probes["probed_share"] == 1.0 and probes["layers"] == len(program.model.layer_names)
    assert probes["signal_path"] == ["trunk_1", "trunk_2", "value"]   # the longest, first found
    assert probes["side_branches"] == ["policy"] and probes["unused"] == []
    path = verdict.path_indices(program.model.layer_names, probes)
    assert [program.model.layer_names[j] for j in path] == probes["signal_path"]
    # the verdict is the one of the signal path's profile alone, as recomputed from the record
    delta = np.asarray(rec["diagnostics"]["delta_norm"])[0]
    alone = verdict.seed_verdict(delta[0][path], delta[-1][path],
                                 layer_names=probes["signal_path"])
    assert rec["summary"]["signal_fall_init"][0] == pytest.approx(alone["signal_fall_init"], abs=1e-5)
    assert verdict.record_verdicts(rec)[0]["verdict_init"] == rec["summary"]["verdict_init"][0]

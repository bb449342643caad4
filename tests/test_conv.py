"""The patches (im2col) convolution against XLA's native one, and the CNN's probes against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import models, tasks
from vgbench.models import conv as conv_mod
from vgbench.models.conv import conv, conv_method, conv_native, conv_patches, patches_matmul, same_padding
from vgbench.spec import RunSpec
from vgbench.train import init_params

SHAPES = [  # (input [N, *spatial, C_in], kernel [*k, C_in, C_out])
    ((3, 8, 8, 1), (3, 3, 1, 4)),
    ((2, 7, 5, 3), (3, 3, 3, 5)),      # odd, non-square map: uneven SAME padding
    ((2, 6, 6, 4), (5, 5, 4, 2)),
    ((2, 40, 1), (3, 1, 8)),           # a one-dimensional signal
    ((3, 11, 4), (5, 4, 6)),
]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape", SHAPES)
def test_patches_equal_native_convolution_values_and_gradients(x_shape, w_shape, stride):
    kx, kw, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape) / np.sqrt(np.prod(w_shape[:-1]))
    native = conv_native(x, w, stride)
    patches = conv_patches(x, w, stride)
    assert patches.shape == native.shape
    np.testing.assert_allclose(patches, native, rtol=1e-5, atol=1e-5)
    cot = jax.random.normal(kc, native.shape)

    def loss(fn):
        return lambda x, w: jnp.sum(fn(x, w, stride) * cot)

    g_native = jax.grad(loss(conv_native), argnums=(0, 1))(x, w)
    g_patches = jax.grad(loss(conv_patches), argnums=(0, 1))(x, w)
    for a, b in zip(g_patches, g_native):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_backward_pass_keeps_the_input_not_its_patches():
    """conv_patches forms the 9x larger patch matrix again in its backward pass; plain autodiff keeps it."""
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 16))
    w = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 16, 16))

    def kept(fn):   # floats held by the vector-Jacobian product between the two passes
        return sum(leaf.size for leaf in jax.tree_util.tree_leaves(jax.vjp(fn, x, w)[1]))

    assert kept(patches_matmul) >= 9 * x.size
    assert kept(conv_patches) <= x.size + w.size
    cot = jax.random.normal(jax.random.PRNGKey(5), (4, 8, 8, 16))
    for a, b in zip(jax.vjp(conv_patches, x, w)[1](cot), jax.vjp(patches_matmul, x, w)[1](cot)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_same_padding_matches_lax():
    for size in range(1, 12):
        for kernel in (1, 3, 5):
            for stride in (1, 2, 3):
                expected = jax.lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")[0]
                assert same_padding(size, kernel, stride) == tuple(expected)


def test_method_follows_the_backend_and_the_override(monkeypatch):
    monkeypatch.delenv(conv_mod.ENV_VAR, raising=False)
    assert conv_method() == ("patches" if jax.default_backend() == "cpu" else "native")
    monkeypatch.setenv(conv_mod.ENV_VAR, "native")
    assert conv_method() == "native"
    monkeypatch.setenv(conv_mod.ENV_VAR, "im2col")
    with pytest.raises(ValueError, match="VGBENCH_CONV='im2col'.*patches, native"):
        conv_method()


def test_conv_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        conv(jnp.zeros((2, 8, 8, 1)), jnp.zeros((3, 1, 4)), jnp.zeros(4))


def test_vmapped_patches_equal_a_loop_over_seeds():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    ws = jax.random.normal(jax.random.PRNGKey(2), (4, 3, 3, 3, 5))
    batched = jax.vmap(lambda w: conv_patches(x, w))(ws)
    for i in range(4):
        np.testing.assert_allclose(batched[i], conv_native(x, ws[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("skip", ["none", "residual"])
def test_cnn_probe_gradients_match_finite_differences(skip):
    """dL/dh at a pre-activation, from the probe, equals a central difference along a random direction."""
    spec = RunSpec(model="cnn", task="digits", depth=5, width=4, activation="tanh",
                   init="xavier_normal", skip=skip)
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state, _ = init_params(spec, [0], task=task)
    params = jax.tree_util.tree_map(lambda a: a[0], params)
    state = jax.tree_util.tree_map(lambda a: a[0], state)
    x, y = task.sample(jax.random.PRNGKey(3), 4)

    def loss(probes):
        out, _, _ = model.apply(params, state, x, train=True, probes=probes)
        return task.loss(out, y)

    zero = model.probes(4)
    grads = jax.grad(loss)(zero)
    leaves, treedef = jax.tree_util.tree_flatten(zero)
    g_leaves = jax.tree_util.tree_leaves(grads)
    key = jax.random.PRNGKey(4)
    for i, leaf in enumerate(leaves):
        key, sub = jax.random.split(key)
        direction = jax.random.normal(sub, leaf.shape)
        eps = 1e-2
        plus = [l + eps * direction if j == i else l for j, l in enumerate(leaves)]
        minus = [l - eps * direction if j == i else l for j, l in enumerate(leaves)]
        fd = (loss(jax.tree_util.tree_unflatten(treedef, plus))
              - loss(jax.tree_util.tree_unflatten(treedef, minus))) / (2 * eps)
        analytic = jnp.sum(g_leaves[i] * direction)
        assert float(analytic) == pytest.approx(float(fd), rel=2e-2, abs=1e-5)


def test_one_dimensional_cnn_runs_on_signals():
    from vgbench.tasks import Task
    spec = RunSpec(model="cnn", task="digits", depth=5, width=4, activation="relu", init="he_normal")
    digits = tasks.make(RunSpec(task="digits"))
    signal = Task(**{**digits._asdict(), "input_shape": (64, 1)})
    model = models.make(spec, signal)
    params, state = model.init(jax.random.PRNGKey(0))
    assert params["stem"]["w"].shape == (3, 1, 4)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 64, 1))
    out, _, stats = model.apply(params, state, x, train=True, probes=model.probes(6))
    assert out.shape == (6, 10)
    assert len(stats["act_rms"]) == len(model.layer_names) == 6


@pytest.mark.parametrize("n, chunk", [(7, 3), (9, 3), (5, 8), (359, 128)])
def test_evaluation_in_chunks_equals_one_pass(n, chunk):
    """The CNN evaluates its validation and test sets in equal chunks (ModelFacts.eval_chunk):
    the outputs equal one forward pass over the whole set, padding never reaches them."""
    from vgbench.train import forward_in_chunks

    spec = RunSpec(model="cnn", task="digits", depth=3, width=4, norm="batchnorm")
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.asarray(task.eval_test[0][:n])
    whole = model.apply(params, state, x, train=False)[0]
    chunked = forward_in_chunks(model, params, state, x, chunk)
    assert chunked.shape == whole.shape == (n, task.output_dim)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)
    assert models.facts("cnn").eval_chunk == 128 and models.facts("mlp").eval_chunk is None


@pytest.mark.parametrize("sequential", [False, True], ids=["vmapped", "in_sequence"])
def test_entries_side_by_side_evaluate_like_each_alone(monkeypatch, sequential):
    """A vmapped program of 3 entries gives each a third of the CNN's evaluation chunk (a
    sequential one, the whole chunk); its metrics equal those of each entry run alone."""
    from vgbench import train

    monkeypatch.setitem(models._FACTS, "cnn", models.facts("cnn")._replace(eval_chunk=96))
    spec = RunSpec(model="cnn", task="digits", depth=3, width=4, batch_size=8, steps=4,
                   log_every=2, norm="batchnorm", optimizer="sgd", lr=0.05)
    program = train.build_program(spec, sequential=sequential)
    params, state, keys = train.init_params(spec, [0, 1, 2], task=program.task)
    lrs = jnp.asarray([0.05, 0.1, 0.2], jnp.float32)
    together = program.run(params, state, keys, lrs)
    for i in range(3):
        alone = program.run(*jax.tree_util.tree_map(lambda a: a[i:i + 1], (params, state, keys, lrs)))
        for split in ("val", "test"):
            for name, value in alone["final"][split].items():
                np.testing.assert_allclose(value[0], together["final"][split][name][i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone["logs"]["val_metric"][0], together["logs"]["val_metric"][i])

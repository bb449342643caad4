"""The worked plugins in examples/plugins: their defining properties, and a short run each."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import activations, inits, plugins, train
from vgbench.inits import InitHyper
from vgbench.spec import RunSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"


@pytest.fixture(scope="module", autouse=True)
def loaded():
    plugins.load(["shifted_softplus.py", "delta_orthogonal.py"], base=EXAMPLES)


def test_shifted_softplus_is_zero_at_the_origin_with_sigmoid_derivative():
    act = activations.get("shifted_softplus").bind(RunSpec())
    x = jnp.linspace(-6, 6, 101)
    np.testing.assert_allclose(act.apply(jnp.zeros(())), 0.0, atol=1e-7)
    np.testing.assert_allclose(act.derivative(x), jax.nn.sigmoid(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(act.apply(jnp.array(30.0)), 30.0 - math.log(2), rtol=1e-6)
    assert activations.ACTIVATIONS.origin("shifted_softplus").endswith("shifted_softplus.py")


def test_delta_orthogonal_is_orthogonal_on_the_centre_tap_only():
    w = np.array(inits.get("delta_orthogonal").weight(
        jax.random.PRNGKey(0), (3, 3, 8, 8), 72, 72, InitHyper(sigma_w=1.2)))
    centre = w[1, 1]
    np.testing.assert_allclose(centre.T @ centre, 1.44 * np.eye(8), atol=1e-5)
    w[1, 1] = 0
    assert np.all(w == 0)
    dense = np.asarray(inits.get("delta_orthogonal").weight(
        jax.random.PRNGKey(0), (16, 16), 16, 16, InitHyper()))
    np.testing.assert_allclose(dense.T @ dense, np.eye(16), atol=1e-5)


def test_delta_orthogonal_keeps_a_deep_linear_cnn_isometric():
    # identity activation, no skip: every convolution is an orthogonal map of the channels at
    # each position, so the backpropagated signal is the same at every hidden layer
    spec = RunSpec(model="cnn", depth=9, width=8, activation="identity", init="delta_orthogonal",
                   steps=0, log_every=1, batch_size=8)
    _, raw = train.train(spec, [0])
    delta = raw.outputs["logs"]["delta_norm"][0, 0]
    np.testing.assert_allclose(delta[1:-1], delta[-2], rtol=1e-4)


def test_plugin_configs_carry_the_plugin_hash_and_builtin_configs_do_not():
    mine = RunSpec(activation="shifted_softplus")
    theirs = RunSpec(activation="relu")
    assert mine.plugin_hash is not None and theirs.plugin_hash is None
    both = RunSpec(model="cnn", depth=3, activation="shifted_softplus", init="delta_orthogonal")
    assert both.plugin_hash not in (None, mine.plugin_hash)


def test_every_shipped_example_grid_loads_and_fits_its_models():
    # the worked examples must keep running with `make bench GRID=...`: their plugins load,
    # and each model takes its task's inputs (the Transformer a (T, channels) sequence)
    from vgbench import grid

    root = EXAMPLES.parent
    files = sorted(root.glob("*/*.toml"))
    assert {f.name for f in files} >= {"plugin_study.toml", "transformer_study.toml"}
    grid.check_fit(grid.load_many(files))

"""Recurrent model: cells against flax and a Python loop, the hand-written backward pass against
autodiff, per-time-step diagnostics against finite differences and theory, records and the CLI."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vgbench import cli, diagnostics, models, optimizers, tasks
from vgbench.models import rnn
from vgbench.spec import RunSpec

T, B, W, C = 7, 3, 5, 4
KEYS = jax.random.split(jax.random.PRNGKey(0), 8)


def random_inputs(cell, seed=0, scale=1.0, channels=C):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    k = cell.blocks * W
    x = jax.random.normal(keys[0], (T, B, channels))
    w_x = scale * jax.random.normal(keys[1], (channels, k)) / np.sqrt(channels)
    b = 0.3 * jax.random.normal(keys[2], (k,))
    w_h = scale * jax.random.normal(keys[3], (W, k)) / np.sqrt(W)
    state0 = tuple(0.5 * jax.random.normal(kk, (B, W)) for kk in jax.random.split(keys[4], cell.state_size))
    return x, w_x, b, w_h, state0, keys[5]


def tanh_act():
    from vgbench import activations

    return activations.get("tanh").bind(RunSpec())


def blocks(a, n):
    return np.split(np.asarray(a), n, axis=-1)


# ---------------------------------------------------------------------------- cells

@pytest.mark.parametrize("recurrence", [rnn.fused_recurrence, rnn.scan_recurrence])
def test_lstm_matches_flax_lstm_cell(recurrence):
    cell = rnn.get_cell("lstm")
    x, w_x, b, w_h, state0, _ = random_inputs(cell)
    hs = recurrence(cell, None, {}, x, w_x, b, w_h, state0)
    wi, wf, wg, wo = blocks(w_x, 4)
    hi, hf, hg, ho = blocks(w_h, 4)
    bi, bf, bg, bo = blocks(b, 4)
    params = {"params": {"ii": {"kernel": wi}, "if": {"kernel": wf}, "ig": {"kernel": wg},
                         "io": {"kernel": wo}, "hi": {"kernel": hi, "bias": bi},
                         "hf": {"kernel": hf, "bias": bf}, "hg": {"kernel": hg, "bias": bg},
                         "ho": {"kernel": ho, "bias": bo}}}
    flax_cell = nn.LSTMCell(features=W)
    carry = state0
    for t in range(T):
        carry, h = flax_cell.apply(params, carry, x[t])
        np.testing.assert_allclose(hs[t], h, atol=2e-6)


@pytest.mark.parametrize("recurrence", [rnn.fused_recurrence, rnn.scan_recurrence])
def test_gru_matches_flax_gru_cell(recurrence):
    cell = rnn.get_cell("gru")
    x, w_x, b, w_h, (h0,), key = random_inputs(cell)
    b_hn = 0.3 * jax.random.normal(key, (W,))
    hs = recurrence(cell, None, {"b_hn": b_hn}, x, w_x, b, w_h, (h0,))
    wr, wz, wn = blocks(w_x, 3)
    hr, hz, hn = blocks(w_h, 3)
    br, bz, bn = blocks(b, 3)
    params = {"params": {"ir": {"kernel": wr, "bias": br}, "iz": {"kernel": wz, "bias": bz},
                         "in": {"kernel": wn, "bias": bn}, "hr": {"kernel": hr},
                         "hz": {"kernel": hz}, "hn": {"kernel": hn, "bias": np.asarray(b_hn)}}}
    flax_cell = nn.GRUCell(features=W)
    carry = h0
    for t in range(T):
        carry, h = flax_cell.apply(params, carry, x[t])
        np.testing.assert_allclose(hs[t], h, atol=2e-6)


@pytest.mark.parametrize("name,activation,phi", [
    ("rnn", "tanh", np.tanh), ("rnn", "softsign", lambda z: z / (1 + np.abs(z))),
    ("irnn", "tanh", lambda z: np.maximum(z, 0.0)),   # irnn is ReLU whatever the run's activation
])
def test_elman_cells_match_a_python_loop(name, activation, phi):
    spec = RunSpec(task="adding", model="rnn", cell=name, activation=activation, depth=1,
                   width=W, seq_len=T)
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state = model.init(KEYS[0])
    x, _ = task.sample(KEYS[1], B)
    out, _, _ = jax.jit(lambda p: model.apply(p, state, x, train=False))(params)
    p = jax.tree_util.tree_map(np.asarray, params)
    h = np.zeros((B, W))
    for t in range(T):
        h = phi(np.asarray(x[:, t]) @ p["first"]["w_x"] + p["first"]["b"] + h @ p["first"]["w_h"])
    np.testing.assert_allclose(out, h @ p["out"]["w"] + p["out"]["b"], rtol=1e-5, atol=1e-5)
    if name == "irnn":  # identity recurrent init (Le et al. 2015), gain sigma_w
        np.testing.assert_array_equal(p["first"]["w_h"], np.eye(W))


def test_sigmoid_through_tanh_is_the_logistic_function():
    z = jnp.linspace(-30.0, 30.0, 100_001)
    np.testing.assert_allclose(rnn.sigmoid(z), jax.nn.sigmoid(z), rtol=0, atol=2e-7)
    np.testing.assert_allclose(jax.vmap(jax.grad(rnn.sigmoid))(z),
                               jax.vmap(jax.grad(jax.nn.sigmoid))(z), rtol=0, atol=2e-7)


# ---------------------------------------------------------------------------- the recurrence

def python_loop(cell, act, cp, u, w_x, b, w_h, state0, probes):
    state, hs = tuple(state0), []
    for t in range(u.shape[0]):
        state = cell.pointwise(act, cp, u[t] @ w_x + b, state[-1] @ w_h, state)
        state = (*state[:-1], state[-1] + probes[t])
        hs.append(state[-1])
    return jnp.stack(hs)


@pytest.mark.parametrize("channels", [C, W + 1])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_scan_and_fused_backward_equal_the_unrolled_loop(name, channels):
    """Values and every gradient (inputs, weights, initial state, probes, cell parameters).

    The fused recurrence projects a narrow input (C < W) of an additive cell (rnn, lstm) inside
    its loop, and a wide one (a stacked layer's) or the gru's before it: every path is here.
    """
    cell = rnn.get_cell(name)
    x, w_x, b, w_h, state0, key = random_inputs(cell, seed=1, channels=channels)
    probes = 0.1 * jax.random.normal(key, (T, B, W))
    cp = {"rnn": {"act": None}, "lstm": {}, "gru": {"b_hn": 0.2 * jnp.ones(W)}}[name]
    act = tanh_act()
    weights = jnp.arange(1.0, W + 1)

    def loss(recurrence, *args):
        return jnp.sum(jnp.sin(recurrence(cell, act, *args)) * weights)

    args = (cp, x, w_x, b, w_h, state0, probes)
    grads = {}
    for label, recurrence in {"loop": python_loop, "scan": rnn.scan_recurrence,
                              "fused": rnn.fused_recurrence}.items():
        np.testing.assert_allclose(recurrence(cell, act, *args), python_loop(cell, act, *args),
                                   atol=1e-6, err_msg=label)
        grads[label] = jax.grad(functools.partial(loss, recurrence), argnums=range(7))(*args)
    for label in ("scan", "fused"):
        for a, b_ in zip(jax.tree_util.tree_leaves(grads[label]), jax.tree_util.tree_leaves(grads["loop"])):
            np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5, err_msg=label)
    jitted = jax.jit(lambda *a: rnn.fused_recurrence(cell, act, *a))(*args)
    np.testing.assert_allclose(jitted, rnn.fused_recurrence(cell, act, *args), atol=1e-6)


def test_input_projection_and_its_backward_equal_the_plain_einsum():
    """Values and ∂/∂(u, w_x, b) of the hand-written backward pass, also vmapped over seeds."""
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    u, g = jax.random.normal(keys[0], (T, B, C)), jax.random.normal(keys[1], (T, B, 3 * W))
    w_x, b = jax.random.normal(keys[2], (C, 3 * W)), jax.random.normal(keys[3], (3 * W,))

    def loss(projection, u, w_x, b):
        return jnp.sum(jnp.sin(projection(u, w_x, b)) * g)

    def plain(u, w_x, b):
        return jnp.einsum("tbc,ck->tbk", u, w_x) + b

    np.testing.assert_allclose(rnn.input_projection(u, w_x, b), plain(u, w_x, b), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(functools.partial(loss, f), argnums=(0, 1, 2))(u, w_x, b)
             for f in (rnn.input_projection, plain)]
    for a, b_ in zip(*grads):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)
    stacked = jnp.stack([w_x, -0.5 * w_x])
    vmapped = jax.vmap(jax.grad(functools.partial(loss, rnn.input_projection), argnums=1),
                       in_axes=(None, 0, None))(u, stacked, b)
    for i in range(2):
        np.testing.assert_allclose(vmapped[i], jax.grad(functools.partial(loss, plain), argnums=1)(
            u, stacked[i], b), rtol=1e-5, atol=1e-5)


def test_fused_backward_works_under_vmap_over_seeds():
    cell = rnn.get_cell("lstm")
    x, w_x, b, w_h, state0, _ = random_inputs(cell)
    stack = jnp.stack([w_h, 0.5 * w_h])

    def grad_w(recurrence, w):
        return jax.grad(lambda w: jnp.sum(recurrence(cell, None, {}, x, w_x, b, w, state0) ** 2))(w)

    np.testing.assert_allclose(jax.vmap(functools.partial(grad_w, rnn.fused_recurrence))(stack),
                               jnp.stack([grad_w(rnn.scan_recurrence, w) for w in stack]),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- diagnostics

def probe_setup(name="lstm", task="adding", length=T, batch=B, depth=1, **changes):
    spec = RunSpec(task=task, model="rnn", cell=name, depth=depth, width=W, seq_len=length,
                   **changes)
    task_ = tasks.make(spec)
    model = models.make(spec, task_)
    params, state = model.init(KEYS[2])
    x, y = task_.sample(KEYS[3], batch)

    def loss(params, probes):
        out, _, stats = model.apply(params, state, x, train=True, probes=probes)
        return task_.loss(out, y), stats

    grad = jax.jit(jax.value_and_grad(loss, argnums=1, has_aux=True))
    (_, stats), g = grad(params, model.probes(batch))
    return model, params, g, stats, (x, y, state, task_)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_time_step_probe_gradient_equals_finite_differences(name):
    model, params, g, _, (x, y, state, task) = probe_setup(name, batch=8, activation="tanh")
    direction = jax.tree_util.tree_map(
        lambda a: jax.random.normal(KEYS[4], a.shape), model.probes(8))

    @jax.jit
    def loss_at(eps):
        probes = jax.tree_util.tree_map(lambda d: eps * d, direction)
        return task.loss(model.apply(params, state, x, train=True, probes=probes)[0], y)

    eps = 1e-2
    numeric = (float(loss_at(eps)) - float(loss_at(-eps))) / (2 * eps)
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                         jax.tree_util.tree_leaves(direction)))
    assert numeric == pytest.approx(analytic, rel=2e-3)


def test_time_delta_norm_is_rms_over_the_batch_of_per_example_gradient_norms():
    model, params, g, _, (x, y, state, task) = probe_setup("gru", batch=4)
    time_delta = np.asarray(model.probe_stats(g)["time_delta_norm"])

    def example_loss(probe_first, xi, yi):
        probes = {**model.probes(1), "first": probe_first}
        return task.loss(model.apply(params, state, xi[None], train=True, probes=probes)[0], yi[None])

    per_example = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))(
        jnp.zeros((T, 1, W)), x, y)                                      # [B, T, 1, W]
    norms = np.linalg.norm(np.asarray(per_example).reshape(4, T, W), axis=-1)
    np.testing.assert_allclose(time_delta, np.sqrt(np.mean(norms ** 2, axis=0)), rtol=1e-5)
    assert time_delta.shape == (T,)


@pytest.mark.parametrize("gain", [1.0, 0.8])
def test_linear_orthogonal_rnn_scales_the_time_signal_by_its_gain(gain):
    """h_t = x_t W_x + h_{t-1} W_h: ∂L/∂h_t = W_h ∂L/∂h_{t+1}, so with W_h = gain * Q it is
    multiplied by exactly `gain` at every step back in time."""
    model, _, g, _, _ = probe_setup("rnn", length=12, activation="identity", sigma_w=gain)
    time_delta = np.asarray(model.probe_stats(g)["time_delta_norm"], np.float64)
    np.testing.assert_allclose(time_delta[:-1] / time_delta[1:], gain, rtol=1e-4)


def test_tanh_rnn_signal_shrinks_at_least_as_fast_as_the_recurrent_norm():
    """|tanh'| <= 1, so per example ‖∂L/∂h_t‖ <= ‖W_h‖₂ ‖∂L/∂h_{t+1}‖ (loss at the last step)."""
    model, params, g, _, _ = probe_setup("rnn", length=20, activation="tanh", recurrent_init="naive")
    time_delta = np.asarray(model.probe_stats(g)["time_delta_norm"], np.float64)
    norm = np.linalg.norm(np.asarray(params["first"]["w_h"]), 2)
    assert norm < 1
    assert np.all(time_delta[:-1] <= norm * time_delta[1:] * (1 + 1e-5))
    assert time_delta[0] / time_delta[-1] < norm ** 19 * (1 + 1e-4)


def test_spectral_radius_matches_eigenvalues():
    rng = np.random.default_rng(0)
    for w in (rng.normal(size=(16, 16)) / 4, rng.normal(size=(8, 8)) * 3):
        expected = np.max(np.abs(np.linalg.eigvals(w)))
        assert float(rnn.spectral_radius(jnp.asarray(w, jnp.float32))) == pytest.approx(expected, rel=1e-4)
    q = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    assert float(rnn.spectral_radius(jnp.asarray(0.5 * q, jnp.float32))) == pytest.approx(0.5, rel=1e-5)
    assert float(rnn.spectral_radius(jnp.triu(jnp.ones((6, 6)), 1))) == 0.0   # nilpotent


def test_gate_means_forget_bias_and_per_layer_statistics():
    _, params, _, stats, _ = probe_setup("lstm", forget_bias=6.0)
    assert np.all(np.asarray(params["first"]["b"])[W:2 * W] == 6.0)
    assert float(stats["gate_mean"]) > 0.95               # sigma(6 + small) ~ 0.998
    _, _, _, stats, _ = probe_setup("gru")
    assert 0.0 < float(stats["gate_mean"]) < 1.0
    _, _, _, stats, _ = probe_setup("rnn", activation="tanh")
    assert np.isnan(float(stats["gate_mean"]))            # no gate: recorded as null
    assert float(stats["spectral_radius"]) == pytest.approx(1.0, rel=1e-4)   # orthogonal
    assert stats["act_rms"].shape == (2,) and np.isnan(float(stats["act_rms"][-1]))


def test_copy_gets_one_output_per_step_and_depth_stacks_layers():
    length = 4
    model, params, g, stats, (x, y, state, task) = probe_setup("gru", task="copy", length=length,
                                                               depth=3)
    out, _, _ = jax.jit(lambda p: model.apply(p, state, x, train=False))(params)
    assert out.shape == (B, length + 20, 10) and y.shape == (B, length + 20)
    assert model.layer_names == ("recurrent_1", "recurrent_2", "recurrent_3", "output")
    ps = model.probe_stats(g)
    assert ps["delta_norm"].shape == (4,) and ps["time_delta_norm"].shape == (length + 20,)
    assert model.per_layer(params).shape == (4,) and model.weight_samples(params).shape == (4, 4)
    assert stats["saturation"].shape == (4,)
    assert np.all(np.asarray(ps["delta_norm"]) > 0)


# ---------------------------------------------------------------------------- config, plugins, clipping

def test_config_checks():
    with pytest.raises(ValueError, match="no normalization"):
        RunSpec(model="rnn", task="adding", norm="batchnorm")
    with pytest.raises(ValueError, match="valid choices: rnn, irnn, lstm, gru"):
        RunSpec(model="rnn", task="adding", cell="lstn")
    with pytest.raises(ValueError, match="sequence inputs"):
        models.make(RunSpec(model="rnn"), tasks.make(RunSpec()))


def test_register_cell_adds_a_user_cell():
    def leaky(act, cp, xp, hw, state):
        """Leaky integrator h' = h/2 + tanh(z)/2 (a test cell)."""
        return (0.5 * state[0] + 0.5 * jnp.tanh(xp + hw),)

    import vgbench

    vgbench.register_cell("leaky_test", leaky, blocks=1, activation="tanh", additive=True)
    try:
        assert "leaky_test" in rnn.CELLS and rnn.CELLS.origin("leaky_test") == "vgbench"
        with pytest.raises(ValueError, match="already registered"):
            rnn.register_cell("leaky_test", leaky, blocks=1)
        cell = rnn.get_cell("leaky_test")
        x, w_x, b, w_h, state0, _ = random_inputs(cell)
        grads = [jax.grad(lambda w: jnp.sum(rec(cell, None, {}, x, w_x, b, w, state0) ** 3))(w_h)
                 for rec in (rnn.scan_recurrence, rnn.fused_recurrence)]
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
        model, *_ = probe_setup("leaky_test")
        assert model.layer_names[0] == "recurrent_1"
    finally:
        rnn.CELLS.unregister("leaky_test")


def test_global_norm_clipping_keeps_small_gradients_and_rescales_large_ones():
    clip = optimizers.build(RunSpec(clip="global_norm", clip_threshold=1.0, optimizer="sgd", lr=1.0), 1.0)
    state = clip.init({"a": jnp.zeros(3), "b": jnp.zeros(2)})
    small = {"a": jnp.array([0.1, -0.2, 0.3]), "b": jnp.array([0.2, 0.1])}
    updates, _ = clip.update(small, state)
    np.testing.assert_allclose(updates["a"], -small["a"], rtol=1e-6)   # sgd: update = -lr * grad
    large = {"a": jnp.array([30.0, 0.0, 40.0]), "b": jnp.array([0.0, 0.0])}
    updates, _ = clip.update(large, state)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(updates["a"], [-0.6, 0.0, -0.8], rtol=1e-6)  # direction kept


# ---------------------------------------------------------------------------- records and the CLI

def test_recurrent_summary_flags_underflow_and_measures_the_horizon():
    row = np.array([0.0, 1e-9, 2e-6, 1e-4, 1e-2, 1.0])         # ‖∂L/∂h_t‖, t = 1..6
    logs = {"time_delta_norm": np.stack([row, row])[None], "gate_mean": np.array([[0.7, 0.9]])}
    measured, summary = {}, {}
    diagnostics.add_recurrent_summary(measured, summary, logs)
    assert measured["time_delta_underflow"][0, 0].tolist() == [True] + [False] * 5
    assert summary["effective_horizon"] == [1]                    # lags 0..1 within 1e-3 of the last
    assert summary["log10_attenuation_init"] == [None]            # the first step underflowed
    assert summary["gate_mean_final"] == [0.9]
    assert summary["temporal_decay"][0] == pytest.approx(np.polyfit(np.arange(1, 6), np.log10(row[1:]), 1)[0])
    assert diagnostics.effective_horizon(np.array([1e-3, 1e-5, 1.0])) == 2   # the largest such lag


def test_cli_trains_a_recurrent_model_and_writes_its_record(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = cli.main(["train", "--task", "adding", "--model", "rnn", "--cell", "lstm", "--depth", "1",
                     "--seq-len", "6", "--width", "4", "--batch-size", "8", "--steps", "4",
                     "--log-every", "2", "--optimizer", "adam", "--lr", "0.01", "--seeds", "2",
                     "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "cell=lstm seq_len=6" in text and "baseline loss 0.1667" in text
    assert "target test_loss <= 0.05" in text and "target reached by" in text
    rec = json.loads(out.read_text())
    assert rec["timing"]["batch_split"] == 2         # two CPU devices (tests/conftest.py)
    d, s = rec["diagnostics"], rec["summary"]
    assert np.array(d["time_delta_norm"], dtype=float).shape == (2, 3, 6)
    assert np.array(d["time_delta_underflow"]).shape == (2, 3, 6)
    assert np.array(d["gate_mean"], dtype=float).shape == (2, 3)
    assert np.array(d["spectral_radius"], dtype=float).shape == (2, 3)
    assert d["layer_names"] == ["recurrent_1", "output"]
    time_delta = np.array(d["time_delta_norm"], dtype=float)
    expected = np.log10(time_delta[:, 0, 0]) - np.log10(time_delta[:, 0, -1])
    np.testing.assert_allclose(s["log10_attenuation_init"], expected, rtol=1e-4, atol=1e-5)
    for key in ("effective_horizon", "effective_horizon_final", "temporal_decay",
                "temporal_decay_final", "gate_mean_init", "gate_mean_final"):
        assert len(s[key]) == 2, key
    assert rec["metrics"]["task_baseline"] == [pytest.approx(1 / 6, rel=1e-5)] * 2

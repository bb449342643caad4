"""vgbench.monitor: taps, the monitored step's statistics, the writer and its warning."""

import csv
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vgbench
from vgbench import diagnose, verdict
from vgbench.monitor import GradientProfileWarning, Monitor, Writer, read_scalars, tap

WIDTH, BATCH = 8, 16


def mlp_params(key, depth, width=WIDTH, d_in=4, d_out=3, scale=1.0):
    keys = jax.random.split(key, depth + 1)
    sizes = [d_in] + [width] * depth + [d_out]
    return [{"w": scale * jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp_loss(params, x, y, act=jnp.tanh, perturb=None):
    """Mean squared error of a plain-JAX MLP; each pre-activation tapped (``perturb``: an
    explicit additive perturbation of each, by layer index)."""
    h = x
    for i, layer in enumerate(params):
        h = tap("dense", h @ layer["w"] + layer["b"])
        if perturb is not None:
            h = h + perturb[i]
        if i < len(params) - 1:
            h = act(h)
    return jnp.mean(jnp.sum(jnp.square(h - y), axis=-1))


def batch(key, d_in=4, d_out=3):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (BATCH, d_in)), jax.random.normal(ky, (BATCH, d_out))


def test_tap_is_a_no_op_outside_the_monitor():
    params, (x, y) = mlp_params(jax.random.PRNGKey(0), 3), batch(jax.random.PRNGKey(1))

    def untapped(p, x, y):
        h = x
        for i, layer in enumerate(p):
            h = h @ layer["w"] + layer["b"]
            h = jnp.tanh(h) if i < len(p) - 1 else h
        return jnp.mean(jnp.sum(jnp.square(h - y), axis=-1))

    assert mlp_loss(params, x, y) == untapped(params, x, y)
    assert str(jax.make_jaxpr(mlp_loss)(params, x, y)) == str(jax.make_jaxpr(untapped)(params, x, y))


def test_delta_norm_is_the_probe_gradient_by_autodiff_and_finite_differences():
    depth = 3
    params, (x, y) = mlp_params(jax.random.PRNGKey(0), depth), batch(jax.random.PRNGKey(1))
    mon = Monitor(mlp_loss)
    loss, grads, stats = jax.jit(mon)(params, x, y)
    names = mon.layer_names
    assert names == ("dense",) + tuple(f"dense@{i}" for i in range(2, depth + 2))
    assert stats["delta_norm"].shape == stats["act_rms"].shape == (depth + 1,)
    np.testing.assert_allclose(loss, mlp_loss(params, x, y), rtol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(grads),
                         jax.tree_util.tree_leaves(jax.grad(mlp_loss)(params, x, y))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    # dL/d(perturbation) of an explicit additive perturbation at each layer's output
    shapes = [(BATCH, WIDTH)] * depth + [(BATCH, 3)]
    zeros = [jnp.zeros(s) for s in shapes]
    explicit = jax.grad(lambda e: mlp_loss(params, x, y, perturb=e))(zeros)
    want = [np.sqrt(BATCH) * np.linalg.norm(np.asarray(g, np.float64)) for g in explicit]
    np.testing.assert_allclose(stats["delta_norm"], want, rtol=1e-5)

    # central differences along the gradient's own direction give its norm
    for i, g in enumerate(explicit):
        u = g / jnp.linalg.norm(g)
        eps = 1e-2
        at = lambda s: mlp_loss(params, x, y, perturb=[u * s if j == i else z for j, z in enumerate(zeros)])
        slope = (at(eps) - at(-eps)) / (2 * eps)
        np.testing.assert_allclose(np.sqrt(BATCH) * slope, stats["delta_norm"][i], rtol=2e-2)

    # act_rms: the RMS of each tapped pre-activation
    h0 = x @ params[0]["w"] + params[0]["b"]
    np.testing.assert_allclose(stats["act_rms"][0], jnp.sqrt(jnp.mean(h0 ** 2)), rtol=1e-5)


def test_groups_update_ratio_and_a_training_loop_with_optax():
    params, (x, y) = mlp_params(jax.random.PRNGKey(0), 10), batch(jax.random.PRNGKey(1))
    mon = Monitor(mlp_loss)
    opt = optax.sgd(0.05)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads, stats = mon(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        stats["update_ratio"] = mon.update_ratio(params, updates)
        return optax.apply_updates(params, updates), opt_state, stats

    opt_state = opt.init(params)
    losses = []
    for _ in range(20):
        new_params, opt_state, stats = train_step(params, opt_state, x, y)
        losses.append(float(stats["loss"]))
        ratio = [0.05 * np.linalg.norm(np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)]))
                 / np.linalg.norm(np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(p)]))
                 for g, p in zip(jax.grad(mlp_loss)(params, x, y), params)]
        params = new_params
    assert losses[-1] < losses[0]
    # list params: one group per layer, "0" ... "10" in numeric order
    assert mon.group_names == tuple(str(i) for i in range(11))
    np.testing.assert_allclose(stats["update_ratio"], ratio, rtol=1e-4)
    np.testing.assert_allclose(stats["grad_norm"] * 0.05 / stats["weight_norm"], ratio, rtol=1e-4)
    # measure=False: the plain gradient and no statistics
    loss, grads, none = mon(params, x, y, measure=False)
    assert none == {} and np.isclose(loss, mlp_loss(params, x, y))


def test_the_linen_path_gives_vgbench_s_own_layer_table():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for width in (8, 8, 8):
                x = jnp.tanh(nn.Dense(width)(x))
            return nn.Dense(3)(x)

    module = Net()
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (BATCH, 4)), jnp.arange(BATCH) % 3
    variables = module.init(jax.random.PRNGKey(0), x)

    def xent(out, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1))

    mon = Monitor(lambda p, x, y: xent(module.apply({"params": p}, x), y), linen=True)
    _, _, stats = jax.jit(mon)(variables["params"], x, labels)
    table = diagnose.flax_layer_table(module, variables, x, labels, xent)
    assert mon.layer_names == tuple(table["layer_name"]) == tuple(f"Dense_{i}" for i in range(4))
    assert mon.group_names == mon.layer_names   # the program's call order
    for column in ("delta_norm", "act_rms", "grad_norm", "weight_norm"):
        np.testing.assert_allclose(stats[column], table[column], rtol=1e-5, err_msg=column)


def test_taps_inside_an_nnx_module_match_the_explicit_gradient():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)])

        def __call__(self, x, perturb=(0.0, 0.0)):
            for i, layer in enumerate(self.layers):
                x = tap(f"linear_{i}", layer(x)) + perturb[i]
                x = jnp.tanh(x) if i == 0 else x
            return x

    graphdef, params = nnx.split(Net(nnx.Rngs(0)), nnx.Param)
    (x, y) = batch(jax.random.PRNGKey(1))
    loss = lambda p, x, y, e=(0.0, 0.0): jnp.mean((nnx.merge(graphdef, p)(x, e) - y) ** 2)
    mon = Monitor(loss, groups=2)   # params are {"layers": {0: ..., 1: ...}}: two keys deep
    _, _, stats = jax.jit(mon)(params, x, y)
    assert mon.layer_names == ("linear_0", "linear_1") and mon.group_names == ("layers/0", "layers/1")
    explicit = jax.grad(lambda e: loss(params, x, y, e))((jnp.zeros((BATCH, 8)), jnp.zeros((BATCH, 3))))
    np.testing.assert_allclose(stats["delta_norm"], [np.sqrt(BATCH) * jnp.linalg.norm(g) for g in explicit],
                               rtol=1e-5)


def mlp_stats(depth, act=jax.nn.sigmoid):
    params = mlp_params(jax.random.PRNGKey(0), depth, width=16)
    x, y = batch(jax.random.PRNGKey(1))
    mon = Monitor(lambda p, x, y: mlp_loss(p, x, y, act=act))
    return mon, jax.jit(mon)(params, x, y)[2]


def test_the_writer_writes_event_files_csv_and_warns_on_a_vanishing_profile(tmp_path):
    pytest.importorskip("tensorboardX")
    mon, stats = mlp_stats(12)
    with Writer(tmp_path, mon, every=2) as writer, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = [writer(step, stats) for step in range(5)]
    assert written == [True, False, True, False, True]
    # one warning when the profile turns vanishing, not one per logging step
    (warning,) = [w for w in caught if issubclass(w.category, GradientProfileWarning)]
    text = str(warning.message)
    v, span, prof = verdict.classify(np.asarray(stats["delta_norm"]).tolist())
    assert v == "vanishing" and "\n" not in text
    assert f"step 0: vanishing, ||dL/dh|| is 10^{abs(prof['fall']):.1f} times smaller" in text
    assert f"layers {span}" in text and "(dense to dense@" in text

    try:   # TensorBoard's own reader where it is installed, else vgbench's
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(tmp_path))
        acc.Reload()
        scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    except ImportError:
        frame = read_scalars(tmp_path)
        scalars = {t: list(zip(g["step"], g["value"])) for t, g in frame.groupby("tag")}
    layer_3 = [(s, v) for s, v in scalars["delta_norm/layer_03_dense_3"]]
    assert [s for s, _ in layer_3] == [0, 2, 4]
    np.testing.assert_allclose([v for _, v in layer_3], float(stats["delta_norm"][2]), rtol=1e-6)
    assert len([t for t in scalars if t.startswith("delta_norm/")]) == 13
    assert "loss" in scalars and "grad_norm/group_13_12" in scalars

    with (tmp_path / "layers.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 13 and list(rows[0]) == ["step", "layer", "layer_name", "delta_norm", "act_rms"]
    assert [(r["step"], r["layer"], r["layer_name"]) for r in rows[:2]] == [("0", "1", "dense"), ("0", "2", "dense@2")]
    np.testing.assert_allclose(float(rows[-1]["delta_norm"]), stats["delta_norm"][-1], rtol=1e-6)
    with (tmp_path / "steps.csv").open() as handle:
        assert [r["verdict"] for r in csv.DictReader(handle)] == ["vanishing"] * 3


def test_no_warning_for_a_healthy_shallow_network(tmp_path):
    mon, stats = mlp_stats(3, act=jnp.tanh)
    assert verdict.classify(np.asarray(stats["delta_norm"]).tolist())[0] == "healthy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Writer(tmp_path, mon, tensorboard=False) as writer:
            assert writer(0, stats)
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_the_writer_logs_to_wandb_when_asked(tmp_path, monkeypatch):
    import sys
    import types

    logged = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(log=lambda d, step: logged.append((step, d))))
    mon, stats = mlp_stats(3, act=jnp.tanh)
    with Writer(tmp_path, mon, tensorboard=False, wandb=True, warn=False) as writer:
        writer(0, stats)
    ((step, scalars),) = logged
    assert step == 0 and scalars["delta_norm/layer_01_dense"] == pytest.approx(float(stats["delta_norm"][0]))


def test_the_package_exports_tap_and_monitor_lazily():
    assert vgbench.tap is tap and vgbench.Monitor is Monitor and vgbench.monitor.Writer is Writer


def test_the_example_loop_runs_and_its_figure_reads_the_event_files(tmp_path):
    pytest.importorskip("tensorboardX")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "monitor" / "monitor_loop.py"
    spec = importlib.util.spec_from_file_location("monitor_loop", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientProfileWarning)
        example.train(str(tmp_path), steps=2, depth=3, width=8, batch=8, every=1)
    frame = read_scalars(tmp_path)
    assert sorted(frame[frame["tag"] == "delta_norm/layer_01_dense_0"]["step"]) == [0, 1, 2]
    assert len(example.plot_delta_norm(frame).get_lines()) == 4


def test_linen_mode_taps_a_module_running_a_scan_at_its_output_and_a_tap_inside_one_is_refused():
    import flax.linen as nn

    class Net(nn.Module):
        def setup(self):
            self.rnn = nn.RNN(nn.LSTMCell(6))
            self.out = nn.Dense(3)

        def __call__(self, x):
            return self.head(self.rnn(x))

        def head(self, ys):
            return self.out(ys[:, -1])

    net = Net()
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 2))
    variables = net.init(jax.random.PRNGKey(1), x)
    monitor = vgbench.Monitor(lambda p, x: jnp.mean(net.apply({"params": p}, x) ** 2),
                              linen=True, per_example=False)
    _, _, stats = jax.jit(monitor)(variables["params"], x)
    assert monitor.layer_names == ("rnn", "out")        # the cell's Dense layers run inside
    # the RNN is tapped at its outputs y_1..y_T, of which the loss reads y_T
    ys = net.apply(variables, x, method=lambda m, x: m.rnn(x))
    grad_y = jax.grad(lambda y: jnp.mean(net.apply(variables, y, method=Net.head) ** 2))(ys)
    np.testing.assert_allclose(stats["delta_norm"][0], np.linalg.norm(grad_y), rtol=1e-5)

    def scanned(p, x):
        def body(c, xt):
            return vgbench.tap("h", jnp.tanh(c * p + xt.sum(-1))), None

        c, _ = jax.lax.scan(body, jnp.zeros((4,)), jnp.swapaxes(x, 0, 1))
        return jnp.mean(c ** 2)

    with pytest.raises(ValueError, match=r"tap\('h'\).*inside a lax.scan.*register_flax_model"):
        vgbench.Monitor(scanned)(jnp.float32(0.5), x)

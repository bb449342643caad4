"""Per-layer diagnostics against theory: norm preservation, sigmoid decay bounds, finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import activations, models, tasks
from vgbench.models.layers import delta_norm, safe_norm
from vgbench.spec import RunSpec
from vgbench.train import init_params


def probe_gradients(spec, seed=0, batch=32):
    """Model, params, probe gradients and stats at initialization for one digits batch."""
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state, _ = init_params(spec, [seed], task=task)
    params = jax.tree_util.tree_map(lambda a: a[0], params)
    state = jax.tree_util.tree_map(lambda a: a[0], state)
    x, y = task.sample(jax.random.PRNGKey(1), batch)

    def loss(params, probes):
        out, _, stats = model.apply(params, state, x, train=True, probes=probes)
        return task.loss(out, y), stats

    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (value, stats), (g_params, g_probes) = grad_fn(params, model.probes(batch))
    return model, params, g_probes, stats, (x, y, state, task)


def test_safe_norm_measures_tiny_vectors_without_underflow():
    v = jnp.full((1000,), 1e-30, jnp.float32)
    assert float(jnp.sqrt(jnp.sum(v * v))) == 0.0          # the naive way underflows
    assert float(safe_norm(v)) == pytest.approx(1e-30 * np.sqrt(1000), rel=1e-5)
    assert float(safe_norm(jnp.zeros(5))) == 0.0
    np.testing.assert_allclose(safe_norm(jnp.ones((3, 4)), axis=1), [2.0, 2.0, 2.0])


def test_delta_norm_is_rms_over_the_batch_of_per_example_norms():
    g = jax.random.normal(jax.random.PRNGKey(0), (8, 5)) / 8.0   # batch-mean gradient: 1/B scale
    per_example = np.linalg.norm(np.asarray(g) * 8.0, axis=1)
    assert float(delta_norm(g)) == pytest.approx(np.sqrt(np.mean(per_example ** 2)), rel=1e-5)


def test_orthogonal_deep_linear_net_keeps_the_signal_constant():
    spec = RunSpec(depth=12, width=32, activation="identity", init="orthogonal")
    model, _, g, _, _ = probe_gradients(spec)
    delta = np.asarray(model.probe_stats(g)["delta_norm"])
    hidden = delta[:-1]   # every hidden layer's backward map is an orthogonal 32x32 matrix
    np.testing.assert_allclose(hidden, hidden[-1], rtol=1e-4)


def test_sigmoid_chain_shrinks_at_least_as_fast_as_a_quarter_times_the_weight_norm():
    spec = RunSpec(depth=10, width=32, activation="sigmoid", init="xavier_normal")
    model, params, g, _, _ = probe_gradients(spec)
    delta = np.asarray(model.probe_stats(g)["delta_norm"])
    weights = [np.asarray(params["hidden"]["w"][i]) for i in range(spec.depth - 1)]
    weights.append(np.asarray(params["out"]["w"]))
    for layer in range(spec.depth):
        # delta_l = phi'(z_l) * (W_{l+1} delta_{l+1}) with |phi'| <= 1/4, per example
        bound = 0.25 * np.linalg.norm(weights[layer], 2) * delta[layer + 1]
        assert delta[layer] <= bound * (1 + 1e-5), (layer, delta[layer], bound)
    assert delta[0] / delta[-2] < 0.25 ** 3     # many layers: a vanishing signal


def test_probe_gradient_equals_finite_differences():
    spec = RunSpec(depth=4, width=16, activation="tanh", init="xavier_normal")
    model, params, g, _, (x, y, state, task) = probe_gradients(spec, batch=8)
    direction = jax.tree_util.tree_map(
        lambda a: jax.random.normal(jax.random.PRNGKey(3), a.shape), model.probes(8))

    @jax.jit
    def loss_at(eps):
        probes = jax.tree_util.tree_map(lambda d: eps * d, direction)
        out, _, _ = model.apply(params, state, x, train=True, probes=probes)
        return task.loss(out, y)

    def loss_along(eps):
        return float(loss_at(jnp.float32(eps)))

    eps = 1e-2
    numeric = (loss_along(eps) - loss_along(-eps)) / (2 * eps)
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                         jax.tree_util.tree_leaves(direction)))
    assert numeric == pytest.approx(analytic, rel=2e-3)


def test_forward_statistics_dead_units_and_saturation():
    spec = RunSpec(depth=3, width=16, activation="relu", init="he_normal")
    model, params, _, _, (x, y, state, task) = probe_gradients(spec, batch=16)
    params["stem"]["b"] = params["stem"]["b"].at[:4].set(-1e3)   # 4 of 16 units never fire
    apply = jax.jit(lambda p: model.apply(p, state, x, train=True, probes=model.probes(16)))
    _, _, stats = apply(params)
    assert float(stats["dead_fraction"][0]) == pytest.approx(4 / 16)
    assert np.isnan(np.asarray(stats["dead_fraction"][-1]))    # the linear head has no units to die

    sat = RunSpec(depth=3, width=16, activation="sigmoid", init="gaussian", sigma_w=40.0)
    model, params, _, stats, _ = probe_gradients(sat)
    assert float(stats["saturation"][1]) > 0.8              # huge weights pin sigmoids at 0 or 1


def test_flat_units_are_inactive_for_relu_and_tail_saturated_for_sigmoid():
    # ReLU at He init: a unit is off (derivative 0) on the examples where its pre-activation
    # is <= 0, about half of them; that is inactivity, not saturation
    spec = RunSpec(depth=3, width=64, activation="relu", init="he_normal")
    _, params, _, stats, (x, _, _, _) = probe_gradients(spec, batch=64)
    flat = np.asarray(x).reshape(len(x), -1)   # digits images, as the MLP views them
    pre = flat @ np.asarray(params["stem"]["w"]) + np.asarray(params["stem"]["b"])
    assert float(stats["inactive_fraction"][0]) == pytest.approx(np.mean(pre <= 0), abs=1e-6)
    assert 0.3 < float(stats["inactive_fraction"][0]) < 0.7
    assert float(stats["tail_saturation"][0]) == 0.0
    assert float(stats["saturation"][0]) == float(stats["inactive_fraction"][0])
    # huge weights pin sigmoids in their flat tails (outputs near 0 or 1): tail saturation
    sat = RunSpec(depth=3, width=16, activation="sigmoid", init="gaussian", sigma_w=40.0)
    _, params, _, stats, (x, _, _, _) = probe_gradients(sat)
    flat = np.asarray(x).reshape(len(x), -1)   # digits images, as the MLP views them
    pre = flat @ np.asarray(params["stem"]["w"]) + np.asarray(params["stem"]["b"])
    slope = np.exp(-np.abs(pre)) / (1 + np.exp(-np.abs(pre))) ** 2       # sigmoid'
    assert float(stats["tail_saturation"][0]) == pytest.approx(np.mean(slope < 0.0025), abs=1e-6)
    assert float(stats["tail_saturation"][1]) > 0.8
    assert float(stats["inactive_fraction"][1]) == 0.0
    assert np.isnan(np.asarray(stats["tail_saturation"][-1]))   # the linear head


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS.names()))
def test_each_activation_declares_where_its_flat_units_sit(name):
    """"tail": flat on both sides or pinned near a nonzero bound; "off": flat on one side
    only, with the output near 0 far out on it; "none": never flat."""
    entry = activations.get(name)
    act = entry.bind(RunSpec(activation=name))
    x = jnp.linspace(-60.0, 60.0, 2401)
    theta = act.init_theta(x.shape[0])
    y = np.asarray(act.apply(x, theta))
    flat = np.asarray(jnp.abs(act.derivative(x, theta)) < 0.01 * act.derivative_max)
    sides = {bool(flat[x < 0].any()), bool(flat[x > 0].any())} - {False}
    if entry.flat_region == "none" or not flat.any():
        assert entry.flat_region in ("none", "off") and not flat.any()
    elif entry.flat_region == "tail":
        both = flat[x < 0].any() and flat[x > 0].any()
        assert both or np.abs(y[flat]).min() > 0.5, name
    else:
        # GELU and SiLU are also flat in a narrow band around their minimum (near x = -1)
        far = flat & (jnp.abs(x) > 8)
        assert entry.flat_region == "off" and sides == {True}, name
        assert np.abs(y[far]).max() < 0.01 and not (flat[x < 0].any() and flat[x > 0].any())


def test_batchnorm_and_residual_rescue_a_deep_sigmoid_net():
    base = dict(depth=20, width=32, activation="sigmoid", init="naive")
    att = {}
    for name, extra in {"plain": {}, "batchnorm": {"norm": "batchnorm"},
                        "residual": {"skip": "residual"}}.items():
        model, _, g, _, _ = probe_gradients(RunSpec(**base, **extra))
        delta = np.asarray(model.probe_stats(g)["delta_norm"])
        att[name] = np.log10(delta[0] / delta[-1])
    assert att["plain"] < -8
    assert att["batchnorm"] > att["plain"] + 5
    assert att["residual"] > att["plain"] + 5


def test_cnn_probes_cover_every_convolution():
    spec = RunSpec(model="cnn", depth=5, width=8, activation="relu", init="he_normal", skip="residual")
    model, _, g, stats, _ = probe_gradients(spec, batch=8)
    delta = np.asarray(model.probe_stats(g)["delta_norm"])
    assert len(model.layer_names) == 6 == len(delta) == len(stats["act_rms"])
    assert np.all(delta > 0) and np.all(np.isfinite(delta))


# ---------------------------------------------------------------------------- the table

def test_every_field_a_run_records_is_in_the_diagnostics_table():
    from vgbench import diagnostics, record, train

    for spec in (RunSpec(depth=3, width=8, batch_size=16, steps=4, log_every=2),
                 RunSpec(model="cnn", depth=3, width=4, batch_size=8, steps=2, log_every=2),
                 RunSpec(model="rnn", cell="lstm", seq_len=6, width=4, batch_size=8, steps=2,
                         log_every=2)):
        program, raw = train.train(spec, [0])
        rec = record.build_record(spec, [0], raw.outputs, task=program.task,
                                  layer_names=program.model.layer_names, compile_s=0, run_s=0)
        logged = set(rec["diagnostics"]) - {"steps", "layer_names"}
        assert logged <= set(diagnostics.BY_NAME), (spec.model, logged - set(diagnostics.BY_NAME))
        n_layer = len(program.model.layer_names)
        for name in logged:
            shape = np.asarray(rec["diagnostics"][name], float).shape
            axes = diagnostics.SHAPES[diagnostics.BY_NAME[name].shape]
            assert len(shape) == len(axes), (spec.model, name, shape, axes)
            if "layer" in axes:
                assert shape[axes.index("layer")] == n_layer, (spec.model, name, shape)
        # every forward statistic of a hidden layer is measured by each built-in model
        assert set(diagnostics.names(source="forward", shape="layer")) <= logged


def test_activation_length_spread_is_the_spread_of_each_examples_squared_length():
    spec = RunSpec(depth=3, width=32, activation="tanh", init="xavier_normal")
    model, params, _, stats, (x, _, _, _) = probe_gradients(spec, batch=64)
    h1 = np.asarray(x, np.float64).reshape(len(x), -1) @ np.asarray(params["stem"]["w"], np.float64) \
        + np.asarray(params["stem"]["b"], np.float64)            # the first pre-activation
    q = np.mean(h1 ** 2, axis=1)                                  # one length per example
    assert float(stats["act_length_cv"][0]) == pytest.approx(q.std() / q.mean(), rel=1e-4)
    assert np.isnan(float(stats["act_length_cv"][-1]))           # the output layer: none
    # wider layers average more units: the spread that is not the inputs' own shrinks
    wide = probe_gradients(spec.replace(width=512), batch=64)[3]["act_length_cv"]
    assert float(wide[-2]) < float(stats["act_length_cv"][-2])


def test_the_jacobian_fields_are_in_the_diagnostics_table():
    from vgbench import diagnostics, jacobian

    found, _ = jacobian.jacobian_diagnostics(RunSpec(depth=2, width=4), [0], n_inputs=4)
    assert set(found) <= set(diagnostics.BY_NAME), set(found) - set(diagnostics.BY_NAME)
    assert np.asarray(found[jacobian.FIELD]).ndim == len(diagnostics.SHAPES["quantile"])

"""Input-output Jacobian spectra at initialization: exact against closed forms, Lanczos against exact."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import jacobian, models, tasks, theory
from vgbench.record import dumps
from vgbench.spec import RunSpec
from vgbench.train import init_params

BASE = dict(task="teacher", model="mlp", steps=0, log_every=1)


def test_orthogonal_linear_network_has_all_singular_values_one():
    spec = RunSpec(**BASE, depth=6, width=32, input_dim=32, activation="identity", init="orthogonal")
    for method in ("exact", "lanczos"):
        for spectrum in jacobian.spectra(spec, [0, 1], method=method, n_inputs=2):
            np.testing.assert_allclose(spectrum.values, 1.0, atol=1e-4)
            assert spectrum.mean_sq == pytest.approx(1.0, abs=1e-4)
            assert spectrum.weights.sum() == pytest.approx(1.0)


def test_hidden_output_fn_is_the_last_hidden_layer():
    spec = RunSpec(**BASE, depth=2, width=8, input_dim=5, activation="tanh", init="gaussian",
                   sigma_w=1.3, sigma_b=0.2)
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state, _ = init_params(spec, [0], task=task)
    params, state = jax.tree_util.tree_map(lambda a: a[0], (params, state))
    x = jnp.asarray(task.eval_test[0][0])
    h1 = jnp.tanh(x @ params["stem"]["w"] + params["stem"]["b"])
    h2 = jnp.tanh(h1 @ params["hidden"]["w"][0] + params["hidden"]["b"][0])
    out = jacobian.hidden_output_fn(model)(params, state, x)
    np.testing.assert_allclose(out, h2, rtol=1e-5, atol=1e-6)
    # the Jacobian of that map, against the chain rule written out
    d1 = 1 - h1 ** 2
    d2 = 1 - h2 ** 2
    expected = (d2[:, None] * params["hidden"]["w"][0].T) @ (d1[:, None] * params["stem"]["w"].T)
    jac = jacobian.jacobians_fn(model)(params, state, x[None])[0]
    np.testing.assert_allclose(jac, expected, rtol=1e-4, atol=1e-6)


def test_gaussian_relu_spreads_where_orthogonal_tanh_near_criticality_concentrates():
    common = dict(BASE, depth=8, width=64, input_dim=64)
    tanh_orth = jacobian.spectra(RunSpec(**common, activation="tanh", init="orthogonal",
                                         sigma_w=1.0, input_scale=0.1), [0], n_inputs=2)[0]
    relu_gauss = jacobian.spectra(RunSpec(**common, activation="relu", init="gaussian",
                                          sigma_w=math.sqrt(2.0)), [0], n_inputs=2)[0]
    # near-isometry: every singular value within a quarter of 1
    assert 0.75 < tanh_orth.values.min() and tanh_orth.values.max() <= 1.0 + 1e-5
    # ReLU zeroes about half the units of each layer, so J has a null space, and the rest spreads
    q = jacobian.weighted_quantiles(relu_gauss, [0.25, 0.95])
    assert q[0] < 1e-3 and q[1] > 1.5
    cond = lambda s: s.values.max() / max(s.values.min(), 1e-30)   # noqa: E731
    assert cond(relu_gauss) > 1e3 * cond(tanh_orth)


def test_mean_squared_singular_value_is_chi1_to_the_depth():
    # mean field: ||J||_F^2 / n_in = prod_l chi_1(q^l) = chi_1^L with every layer at q*
    sigma_w2, sigma_b2, depth = 2.0, 0.0025, 6
    q = theory.q_star("tanh", sigma_w2, sigma_b2)
    spec = RunSpec(**BASE, depth=depth, width=128, input_dim=128, activation="tanh",
                   init="gaussian", sigma_w=math.sqrt(sigma_w2), sigma_b=math.sqrt(sigma_b2),
                   input_scale=math.sqrt((q - sigma_b2) / sigma_w2))
    predicted = theory.chi1("tanh", sigma_w2, sigma_b2) ** depth
    exact = jacobian.spectra(spec, [0, 1, 2, 3], method="exact", n_inputs=2)
    # finite width: single networks scatter by about 10 % at width 128 (the mean is unbiased)
    assert np.mean([s.mean_sq for s in exact]) == pytest.approx(predicted, rel=0.1)


def test_lanczos_estimate_agrees_with_the_exact_spectrum():
    spec = RunSpec(**BASE, depth=4, width=96, input_dim=96, activation="tanh", init="gaussian",
                   sigma_w=1.5, sigma_b=0.05, input_scale=0.6)
    exact = jacobian.spectra(spec, [3], method="exact", n_inputs=2)[0]
    estimate = jacobian.spectra(spec, [3], method="lanczos", n_inputs=2, steps=40)[0]
    assert estimate.values.max() == pytest.approx(exact.values.max(), rel=1e-4)
    assert estimate.mean_sq == pytest.approx(exact.mean_sq, rel=0.2)
    upper = [0.5, 0.75, 0.9, 0.95]   # the top of the spectrum converges first
    np.testing.assert_allclose(jacobian.weighted_quantiles(estimate, upper),
                               jacobian.weighted_quantiles(exact, upper), rtol=0.2)


def test_golub_kahan_with_full_steps_recovers_every_singular_value_and_the_null_space():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((12, 12)) @ np.diag(np.r_[np.ones(9), 0, 0, 0])  # rank 9
    starts = rng.standard_normal((3, 12))
    values, weights = jacobian.golub_kahan(lambda v: v @ matrix.T, lambda u: u @ matrix,
                                           starts, steps=12)
    exact = np.linalg.svd(matrix, compute_uv=False)
    for run_values, run_weights, start in zip(values, weights, starts):
        assert run_weights.sum() == pytest.approx(1.0)
        nonzero = np.sort(run_values[run_values > 1e-8])
        np.testing.assert_allclose(nonzero, np.sort(exact[:9]), rtol=1e-8)
        # the null space (last three coordinates) keeps its share of the start vector
        null_share = np.sum(start[9:] ** 2) / np.sum(start ** 2)
        assert run_weights[run_values <= 1e-8].sum() == pytest.approx(null_share, rel=1e-6)


def test_weighted_quantiles_with_equal_weights_are_hazen_quantiles():
    values = np.sort(np.random.default_rng(0).lognormal(size=37))
    spectrum = jacobian.Spectrum(values, np.full(37, 1 / 37), "exact", 1.0)
    probabilities = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(jacobian.weighted_quantiles(spectrum, probabilities),
                               np.quantile(values, probabilities, method="hazen"))
    ends = jacobian.weighted_quantiles(spectrum, [0.0, 1.0])
    assert ends[0] == values[0] and ends[1] == values[-1]


def test_method_choice_and_model_check():
    assert jacobian.method_for(RunSpec(width=512)) == "exact"
    assert jacobian.method_for(RunSpec(width=513)) == "lanczos"
    assert jacobian.method_for(RunSpec(width=513), "exact") == "exact"
    with pytest.raises(ValueError, match="method"):
        jacobian.method_for(RunSpec(), "svd")
    with pytest.raises(ValueError, match="mlp"):
        jacobian.spectra(RunSpec(model="cnn", task="digits", depth=3), [0])


def test_add_to_record_keeps_the_record_compact_and_valid_json():
    spec = RunSpec(**BASE, depth=3, width=16, input_dim=16, activation="relu", init="he_normal")
    record = {"run_id": spec.run_id, "config": spec.to_dict(), "seeds": [0, 4],
              "diagnostics": {"steps": [0]}, "summary": {"decay_per_layer": [0.0, 0.0]}}
    out = jacobian.add_to_record(record)
    diagnostics = out["diagnostics"]
    assert diagnostics["steps"] == [0] and out["summary"]["decay_per_layer"] == [0.0, 0.0]
    values = diagnostics[jacobian.FIELD]
    assert len(values) == 2 and all(len(v) == len(jacobian.QUANTILES) <= 200 for v in values)
    assert all(np.all(np.diff(v) >= 0) for v in values)          # quantiles ascend
    assert diagnostics["jacobian_method"] == "exact"
    assert len(out["summary"]["jacobian_log10_mean_sq"]) == 2
    json.loads(dumps(out))                                        # no NaN or Infinity
    from vgbench.report.records import check_record  # the reporter reads it
    assert check_record({**out, "schema": "vgbench.run/1", "status": ["ok", "ok"],
                         "metrics": {}}) is None
    assert "jacobian_singular_values" not in record["diagnostics"]  # the input is not changed


def test_the_module_run_as_a_command_starts_jax_with_the_vgbench_flags():
    # without them, XLA:CPU's concurrency-optimized scheduler deadlocked the vmapped jacrev
    import os
    import subprocess
    import sys

    code = ("import os, runpy, sys\n"
            "sys.argv = ['vgbench.jacobian', '--help']\n"
            "try:\n    runpy.run_module('vgbench.jacobian', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('FLAGS=' + os.environ.get('XLA_FLAGS', ''))\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false" in out


def test_annotate_writes_through_the_store_and_skips_a_busy_run(tmp_path):
    from vgbench.report.synthetic import make_record, write_records
    from vgbench.store import RunLock, Store

    config = dict(task="teacher", model="mlp", depth=3, width=8, input_dim=16,
                  activation="tanh", init="xavier_normal", steps=0, log_every=1)
    theory_run = make_record(study="theory", seeds=(0,), **config)
    other = make_record(study="other", seeds=(0,), **config, lr=0.5)
    busy = make_record(study="theory", seeds=(0,), **config, sigma_w=2.0)
    write_records(tmp_path, [theory_run, other, busy])
    store = Store(tmp_path)
    lock = RunLock(store.locks / f"{busy['run_id']}.lock")
    assert lock.acquire()
    try:
        written = jacobian.annotate(tmp_path, method="exact", n_inputs=2)
    finally:
        lock.release()
    assert written == [store.path(theory_run["run_id"])]
    values = store.read(theory_run["run_id"])["diagnostics"][jacobian.FIELD]
    assert len(values) == 1 and len(values[0]) == len(jacobian.QUANTILES)
    assert jacobian.FIELD not in store.read(busy["run_id"])["diagnostics"]
    assert jacobian.FIELD not in store.read(other["run_id"])["diagnostics"]

"""The finite-width law against independent Monte Carlo, and the measurement against the law."""

import math

import numpy as np
import pytest

from vgbench import finite_width as fw
from vgbench.spec import RunSpec


def test_digamma_and_trigamma_at_half_integers_match_their_series():
    # ψ(x) = -γ + Σ_{k>=0} (1/(k+1) - 1/(k+x)), ψ'(x) = Σ_{k>=0} 1/(k+x)²: summed far out
    k = np.arange(0, 2_000_000, dtype=np.float64)
    for n in (1, 2, 3, 8, 17):
        x = n / 2
        psi = -fw.EULER_GAMMA + np.sum(1 / (k + 1) - 1 / (k + x))
        tri = np.sum(1 / (k + x) ** 2)
        assert fw.digamma_half(n) == pytest.approx(psi, abs=1e-5)
        assert fw.trigamma_half(n) == pytest.approx(tri, abs=1e-5)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_relu_log_moments_match_monte_carlo_of_a_relu_layer(n):
    """ln u, u = (2/n) Σ relu(g)²: the layer itself sampled, not the formula's binomial."""
    draws = 200_000
    g = np.random.default_rng(n).standard_normal((draws, n))
    u = 2 / n * np.sum(np.square(np.maximum(g, 0)), axis=1)
    logs = np.log(u[u > 0])
    mean, var = fw.relu_log_moments(n)
    # standard errors from the sample: of the mean sd/√N, of the variance sd²·√((κ-1)/N)
    sd = logs.std()
    kurt = np.mean((logs - logs.mean()) ** 4) / sd ** 4
    assert abs(logs.mean() - mean) < 5 * sd / math.sqrt(len(logs))
    assert abs(logs.var() - var) < 5 * sd ** 2 * math.sqrt((kurt - 1) / len(logs))
    # the wide limit: mean ≈ -5/(2n), variance ≈ 5/n, and E u = 1, E u² = 1 + 5/n exactly
    assert np.mean(u) == pytest.approx(1.0, rel=5 * np.std(u) / math.sqrt(draws))
    assert np.mean(u ** 2) == pytest.approx(1 + 5 / n, rel=5 * np.std(u ** 2) / math.sqrt(draws)
                                            / (1 + 5 / n))


def test_linear_log_moments_and_the_law_of_a_network():
    mean, var = fw.linear_log_moments(32)
    assert var == pytest.approx(2 / 32, rel=0.07) and mean == pytest.approx(-1 / 32, rel=0.07)
    law = fw.predict(8, 32)
    m, v = fw.relu_log_moments(32)
    ml, vl = fw.linear_log_moments(32)
    assert law.beta == 0.25
    assert law.forward_var == pytest.approx(7 * v + vl)
    assert law.backward_var == pytest.approx(7 * v)
    assert law.forward_mean == pytest.approx(7 * m + ml + math.log(2))
    assert law.second_moment == pytest.approx((1 + 5 / 32) ** 8)
    with pytest.raises(ValueError, match="kind must be 'relu' or 'linear'"):
        fw.predict(4, 8, "gelu")


def test_the_suites_relu_network_follows_the_law_over_independent_weight_draws():
    """One example per draw, 3000 draws: independent samples, so the tolerance is the sample
    variance's standard error. Forward: exact law. Backward: the law if the backward weights
    were independent of the forward ones, which the measurement tests."""
    spec = RunSpec(task="digits", model="mlp", depth=4, width=8, activation="relu",
                   init="he_normal")
    sample = fw.measure(spec, range(3000), batch=1)
    with np.errstate(invalid="ignore"):   # a layer with all 8 units off (1 in 256): left out
        forward = (sample.log_q[:, 0, -1] - sample.log_q0[:, 0])
        backward = sample.log_delta[:, 0, 0] - sample.log_delta[:, 0, -1]
    forward, backward = forward[np.isfinite(forward)], backward[np.isfinite(backward)]
    law = fw.predict(4, 8)
    for values, expected in ((forward, law.forward_var), (backward, law.backward_var)):
        sd = values.std()
        kurt = np.mean((values - values.mean()) ** 4) / sd ** 4
        assert abs(values.var() - expected) < 4 * sd ** 2 * math.sqrt((kurt - 1) / len(values))
    assert abs(forward.mean() - law.forward_mean) < 4 * forward.std() / math.sqrt(len(forward))


def test_the_measurement_uses_the_suites_own_network():
    import jax

    from vgbench import models, tasks

    spec = RunSpec(task="digits", model="mlp", depth=3, width=8, activation="tanh",
                   init="gaussian", sigma_w=1.0, sigma_b=0.0)
    sample = fw.measure(spec, [5], batch=4)
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state = model.init(jax.random.PRNGKey(5))
    x, y = task.sample(jax.random.PRNGKey(0), 4)

    def loss(probes):
        return task.loss(model.apply(params, state, x, train=False, probes=probes)[0], y)

    grads = jax.grad(loss)(model.probes(4))
    # the batch-mean loss's probe gradient is each example's own over the batch size
    per_layer = [grads["stem"], *grads["hidden"]]
    mine = np.exp(sample.log_delta[0])              # [example, layer]: ‖∂L_i/∂z_l‖²
    for layer, g in enumerate(per_layer):
        np.testing.assert_allclose(mine[:, layer], 16 * np.sum(np.square(g), axis=-1),
                                   rtol=1e-4, err_msg=str(layer))


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="plain MLP"):
        fw.measure(RunSpec(task="digits", model="mlp", norm="batchnorm"), [0])
    with pytest.raises(ValueError, match="unknown network 'gelu'; valid choices: relu, tanh"):
        fw.run(str(tmp_path), networks=("gelu",))
    with pytest.raises(ValueError, match="at least one"):
        fw.run(str(tmp_path), pairs=())
    assert not (tmp_path / "finite_width").exists()

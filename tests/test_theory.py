"""Mean-field theory: closed forms, quadrature convergence, criticality, a wide-network check."""

import math
import subprocess
import sys

import numpy as np
import pytest

from vgbench import theory

SMOOTH = ("sigmoid", "tanh", "gelu", "silu")


def erf_activation() -> theory.Phi:
    """phi = erf: closed-form length, chi_1 and correlation maps (Williams 1997)."""
    erf = np.frompyfunc(math.erf, 1, 1)
    return theory.Phi(lambda x: np.asarray(erf(x), float),
                      lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x))


def relu_kernel(c):
    """Normalized arc-cosine kernel E[relu(u1) relu(u2)] / E[relu(u)^2] (Cho & Saul 2009)."""
    c = np.asarray(c, float)
    return (np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi


# ---------------------------------------------------------------------------- module hygiene

def test_import_does_not_pull_in_jax():
    code = "import sys, vgbench.theory; assert 'jax' not in sys.modules, 'jax imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(theory.NUMPY_ACTIVATIONS))
def test_dphi_is_the_derivative_of_phi(name):
    act = theory.NUMPY_ACTIVATIONS[name]
    x = np.linspace(-4.0, 4.0, 161) + 0.0123  # off the kinks at 0 and +-1
    step = 1e-6
    numeric = (act.phi(x + step) - act.phi(x - step)) / (2 * step)
    np.testing.assert_allclose(act.dphi(x), numeric, atol=1e-7)


def test_numpy_activations_match_the_registry():
    jax = pytest.importorskip("jax")
    activations = pytest.importorskip("vgbench.activations")
    builtins = [n for n in activations.ACTIVATIONS if activations.ACTIVATIONS.origin(n) == "vgbench"]
    assert sorted(builtins) == sorted(theory.NUMPY_ACTIVATIONS)
    kwargs = {"leaky_relu": {"slope": 0.01}, "prelu": {"theta": 0.25}}
    x = np.linspace(-4.0, 4.0, 161, dtype=np.float32) + np.float32(0.0123)
    for name in builtins:
        fn = activations.ACTIVATIONS[name].fn
        kw = kwargs.get(name, {})
        grad = jax.vmap(jax.grad(lambda v, kw=kw, fn=fn: fn(v, **kw)))
        act = theory.NUMPY_ACTIVATIONS[name]
        np.testing.assert_allclose(act.phi(x.astype(float)), np.asarray(fn(x, **kw)),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(act.dphi(x.astype(float)), np.asarray(grad(x)),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_as_activation_accepts_names_pairs_and_callables():
    pair = (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2)
    expected = theory.chi1("tanh", 1.7, 0.1)
    assert theory.chi1(pair, 1.7, 0.1) == pytest.approx(expected, rel=1e-12)
    assert theory.chi1(np.tanh, 1.7, 0.1) == pytest.approx(expected, rel=1e-8)
    assert theory.chi1(theory.from_callable(np.tanh), 1.7, 0.1) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        theory.as_activation("tahn")
    with pytest.raises(TypeError):
        theory.as_activation(3)


def test_from_callable_works_with_a_jax_function():
    jnp = pytest.importorskip("jax.numpy")
    for name, fn in [("tanh", jnp.tanh), ("softsign", lambda x: x / (1 + jnp.abs(x)))]:
        wrapped = theory.from_callable(fn, kinks=theory.NUMPY_ACTIVATIONS[name].kinks)
        # float32 function values: agreement to ~1e-5, not to quadrature precision
        assert theory.chi1(wrapped, 2.0, 0.05) == pytest.approx(theory.chi1(name, 2.0, 0.05), rel=1e-4)
        assert theory.q_star(wrapped, 2.0, 0.05) == pytest.approx(theory.q_star(name, 2.0, 0.05), rel=1e-4)


# ---------------------------------------------------------------------------- quadrature

def test_quadrature_rules_integrate_gaussian_moments():
    nodes, weights = theory.gauss_hermite(10)
    y, w = theory.composite_rule(0.5, 3.0)
    for k in range(1, 8):
        double_factorial = math.prod(range(2 * k - 1, 0, -2))
        assert nodes ** (2 * k) @ weights == pytest.approx(double_factorial, rel=1e-12)
        assert (y ** (2 * k)) @ w == pytest.approx(double_factorial, rel=1e-10)
        moment = theory.gaussian_mean(lambda u: u ** (2 * k), 4.0)  # composite rule: q > 1/4
        assert moment == pytest.approx(double_factorial * 4.0 ** k, rel=1e-10)
    assert nodes ** 3 @ weights == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sigma_w2, sigma_b2, rule", [(1.3, 0.02, "hermite"), (4.0, 0.05, "composite")])
def test_quadrature_converges_on_a_smooth_case(sigma_w2, sigma_b2, rule):
    q = theory.q_star("tanh", sigma_w2, sigma_b2)
    assert (q <= 0.25) == (rule == "hermite")
    values = {n: (theory.q_star("tanh", sigma_w2, sigma_b2, n_points=n),
                  theory.chi1("tanh", sigma_w2, sigma_b2, n_points=n),
                  theory.correlation_map("tanh", 0.3, sigma_w2, sigma_b2, n_points=n))
              for n in (8, 50, 200)}
    np.testing.assert_allclose(values[50], values[200], rtol=0, atol=1e-8)
    # and a coarse rule is really coarser: the comparison above can fail
    assert np.max(np.abs(np.subtract(values[8], values[200]))) > 1e-6


def test_gauss_hermite_alone_fails_where_the_composite_rule_is_used():
    sigmoid = theory.NUMPY_ACTIVATIONS["sigmoid"]
    nodes, weights = theory.gauss_hermite(100)
    q = 60.0  # near the sigmoid's critical line
    hermite = (sigmoid.dphi(math.sqrt(q) * nodes) ** 2) @ weights
    composite = theory.gaussian_mean(lambda u: sigmoid.dphi(u) ** 2, q)
    reference = theory.gaussian_mean(lambda u: sigmoid.dphi(u) ** 2, q, 400)
    assert composite == pytest.approx(reference, rel=1e-12)
    assert abs(hermite - composite) / composite > 0.01


def test_kinked_activations_converge_like_smooth_ones():
    # Gauss-Hermite across a kink is only algebraically accurate (~1e-2 for SELU at n=100);
    # the piecewise rule gets machine precision.
    for name in ("selu", "softsign", "hard_tanh", "elu"):
        coarse, fine = (theory.chi1(name, 1.5, 0.1, n_points=n) for n in (50, 200))
        assert coarse == pytest.approx(fine, abs=1e-8), name
    for name in ("selu", "hard_tanh"):  # the same functions, kinks not declared: Gauss-Hermite
        plain = theory.Phi(*theory.NUMPY_ACTIVATIONS[name][:2])
        assert abs(theory.chi1(plain, 1.5, q=0.2) - theory.chi1(name, 1.5, q=0.2)) > 1e-4, name


@pytest.mark.parametrize("n_points", [0, 2.5, 400])
def test_bad_n_points_is_an_error(n_points):
    with pytest.raises(ValueError, match="n_points"):
        theory.chi1("tanh", 1.0, n_points=n_points)


# ---------------------------------------------------------------------------- q*, chi_1 closed forms

@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.2])
def test_chi1_closed_forms(sigma_w2, sigma_b2):
    assert theory.chi1("relu", sigma_w2, sigma_b2) == pytest.approx(sigma_w2 / 2, rel=1e-12)
    assert theory.chi1("identity", sigma_w2, sigma_b2) == pytest.approx(sigma_w2, rel=1e-12)
    for slope in (0.01, 0.3):
        expected = sigma_w2 * (1 + slope ** 2) / 2
        chi = theory.chi1("leaky_relu", sigma_w2, sigma_b2, leaky_slope=slope)
        assert chi == pytest.approx(expected, rel=1e-12)
    assert theory.chi1("prelu", sigma_w2, sigma_b2) == pytest.approx(sigma_w2 * (1 + 0.25 ** 2) / 2, rel=1e-12)


def test_q_star_closed_forms_and_limits():
    assert theory.q_star("relu", 1.0, 0.3) == pytest.approx(0.3 / (1 - 0.5), rel=1e-12)
    assert theory.q_star("identity", 0.8, 0.1) == pytest.approx(0.1 / (1 - 0.8), rel=1e-12)
    assert theory.q_star("relu", 1.9, 0.0) == 0.0
    assert theory.q_star("relu", 2.1, 0.0) == math.inf
    assert theory.q_star("relu", 2.0, 0.1) == math.inf
    assert theory.q_star("relu", 2.0, 0.0, q0=3.0) == 3.0  # every q is fixed
    for sigma_w2 in (0.5, 1.0):
        assert theory.q_star("tanh", sigma_w2, 0.0) == 0.0
    assert theory.q_star("tanh", 1.01, 0.0) == pytest.approx(0.005, rel=0.05)  # (1 - 1/s^2)/2
    with pytest.raises(ValueError, match="q0 > 0"):
        theory.q_star("tanh", 1.0, q0=0.0)
    with pytest.raises(ValueError, match="sigma_b2 >= 0"):
        theory.q_star("tanh", 1.0, -0.1)


def test_q_star_depends_on_q0_where_the_length_map_is_bistable():
    # GELU without bias, 2 < sigma_w^2 < 4: q = 0 (slope sigma_w^2/4) and q = inf (growth
    # sigma_w^2/2) both attract
    assert theory.q_star("gelu", 3.0, q0=1e-3) == 0.0
    assert theory.q_star("gelu", 3.0, q0=10.0) == math.inf
    assert theory.chi1("gelu", 3.0, q0=1e-3) == pytest.approx(0.75, rel=1e-9)
    assert theory.chi1("gelu", 3.0, q0=10.0) == pytest.approx(1.5, rel=1e-9)


@pytest.mark.parametrize("name", sorted(theory.NUMPY_ACTIVATIONS))
def test_q_star_is_a_stable_fixed_point(name):
    q = theory.q_star(name, 0.9, 0.1)
    assert 0 < q < math.inf
    assert theory.length_map(name, q, 0.9, 0.1) == pytest.approx(q, rel=1e-10)
    assert theory.mean_field(name, 0.9, 0.1).chi_q < 1


def test_q_star_broadcasts():
    sigma_w2 = np.array([[0.5], [1.5], [3.0]])
    sigma_b2 = np.array([0.0, 0.05])
    grid = theory.q_star("tanh", sigma_w2, sigma_b2)
    assert grid.shape == (3, 2)
    for i, j in np.ndindex(grid.shape):
        assert grid[i, j] == pytest.approx(theory.q_star("tanh", sigma_w2[i, 0], sigma_b2[j]), rel=1e-12)


def test_erf_closed_forms():
    erf = erf_activation()
    for q in (0.1, 1.0, 5.0):
        length = theory.length_map(erf, q, 1.0, 0.0)
        assert length == pytest.approx(2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)), rel=1e-10)
        assert theory.chi1(erf, 1.5, q=q) == pytest.approx(1.5 * 4 / np.pi / np.sqrt(1 + 4 * q), rel=1e-10)
        for c in (-0.5, 0.2, 0.9):
            expected = np.arcsin(2 * c * q / (1 + 2 * q)) / np.arcsin(2 * q / (1 + 2 * q))
            assert theory.correlation_map(erf, c, 1.0, 0.0, q=q) == pytest.approx(expected, rel=1e-10)


def test_relu_correlation_map_is_the_arc_cosine_kernel():
    c = np.array([-0.9, -0.3, 0.0, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(theory.correlation_map("relu", c, 2.0, 0.0, q=1.0), relu_kernel(c), atol=1e-10)


def test_hard_tanh_chi1_closed_form():
    for q in (0.2, 1.0, 4.0):  # phi' = 1 on |u| < 1: chi_1 = sigma_w^2 P(|z| < 1/sqrt(q))
        assert theory.chi1("hard_tanh", 2.0, q=q) == pytest.approx(2.0 * math.erf(1 / math.sqrt(2 * q)), rel=1e-12)


# ---------------------------------------------------------------------------- correlations, depth scales

def test_c_star_is_one_in_the_ordered_phase():
    result = theory.mean_field("tanh", 1.0, 0.05)
    assert result.chi1 < 1 and result.regime == "vanishing"
    assert result.c_star == 1.0
    assert result.chi_c == pytest.approx(result.chi1, rel=1e-10)
    assert result.xi_c == pytest.approx(result.xi_grad, rel=1e-8)


def test_c_star_below_one_in_the_chaotic_phase():
    result = theory.mean_field("tanh", 2.5, 0.05)
    assert result.chi1 > 1 and result.regime == "exploding" and result.xi_grad < 0
    assert 0 < result.c_star < 0.5
    assert theory.correlation_map("tanh", result.c_star, 2.5, 0.05) == pytest.approx(result.c_star, abs=1e-10)
    assert 0 < result.chi_c < 1 and result.xi_c > 0
    assert theory.c_star("tanh", 2.5, 0.0) == pytest.approx(0.0, abs=1e-10)  # odd phi, no bias


def test_depth_scale_signs():
    assert theory.depth_scale(math.exp(-1 / 5)) == pytest.approx(5.0)
    assert theory.depth_scale(math.exp(1 / 5)) == pytest.approx(-5.0)
    assert theory.depth_scale(1.0) == math.inf
    assert theory.depth_scale(0.0) == 0.0
    np.testing.assert_allclose(theory.depth_scale([0.5, 2.0]), [1 / math.log(2), -1 / math.log(2)])


def test_mean_field_summary_is_consistent():
    result = theory.mean_field("tanh", 1.5, 0.3)
    assert result.xi_grad == pytest.approx(-1 / math.log(result.chi1))
    assert result.xi_q == pytest.approx(-1 / math.log(result.chi_q))
    assert result.log10_delta_ratio == pytest.approx(0.5 * math.log10(result.chi1))
    assert theory.log10_delta_ratio("tanh", 1.5, 0.3) == pytest.approx(result.log10_delta_ratio)
    # chi_q = dq^{l+1}/dq^l: compare with a finite difference of the length map
    step = 1e-5
    slope = (theory.length_map("tanh", result.q_star + step, 1.5, 0.3)
             - theory.length_map("tanh", result.q_star - step, 1.5, 0.3)) / (2 * step)
    assert result.chi_q == pytest.approx(slope, rel=1e-7)
    assert theory.mean_field("relu", 2.0).regime == "critical"
    assert theory.mean_field("relu", 2.0).xi_grad == math.inf


# ---------------------------------------------------------------------------- criticality

def test_tanh_critical_sigma_w():
    assert theory.critical_sigma_w("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    sigma_w = theory.critical_sigma_w("tanh", 0.05)
    assert 1.05 < sigma_w < 1.2
    q = theory.q_star("tanh", sigma_w ** 2, 0.05 ** 2)  # self-consistent: chi_1(q*) = 1
    assert theory.length_map("tanh", q, sigma_w ** 2, 0.05 ** 2) == pytest.approx(q, rel=1e-10)
    assert theory.chi1("tanh", sigma_w ** 2, 0.05 ** 2, q=q) == pytest.approx(1.0, abs=1e-9)
    # Schoenholz et al. 2017, Fig. 1: sigma_b^2 = 0.05 is critical at sigma_w^2 ~ 1.76
    assert theory.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.01)
    curve = theory.critical_sigma_w("tanh", [0.0, 0.05, 0.3])
    assert np.all(np.diff(curve) > 0)


def test_relu_critical_line_is_flat():
    np.testing.assert_allclose(theory.critical_sigma_w2("relu", [0.0, 0.1, 1.0]), 2.0, rtol=1e-9)
    assert math.isnan(theory.critical_sigma_w2("relu", 0.0, bounds=(3.0, 10.0)))  # chi_1 > 1 throughout


def test_phase_diagram():
    sigma_w2, sigma_b2 = np.array([0.5, 1.0, 2.0, 4.0]), np.array([0.0, 0.05, 0.2])
    grid = theory.chi1_grid("tanh", sigma_w2, sigma_b2)
    assert grid.shape == (4, 3)
    assert grid[2, 1] == pytest.approx(theory.chi1("tanh", 2.0, 0.05), rel=1e-12)
    boundary = theory.order_chaos_boundary("tanh", sigma_b2)
    assert boundary.shape == (3,)
    for w2, b2 in zip(boundary, sigma_b2):
        assert theory.chi1("tanh", w2, b2) == pytest.approx(1.0, abs=1e-8)


# ---------------------------------------------------------------------------- gradient profile

def test_log10_delta_profile():
    profile = theory.log10_delta_profile("tanh", 10, 1.0, 0.05)
    assert profile.shape == (10,) and profile[-1] == 0.0
    np.testing.assert_allclose(np.diff(profile), -theory.log10_delta_ratio("tanh", 1.0, 0.05), rtol=1e-12)
    q = theory.q_star("tanh", 1.0, 0.05)
    np.testing.assert_allclose(theory.log10_delta_profile("tanh", 10, 1.0, 0.05, q1=q), profile, atol=1e-10)
    # started far from q*, the early layers decay differently, the late ones as at q*
    transient = theory.log10_delta_profile("tanh", 40, 1.0, 0.05, q1=4.0)
    assert abs(transient[0] - transient[1] - (profile[0] - profile[1])) > 1e-3
    assert transient[-2] == pytest.approx(profile[-2], rel=1e-3)
    assert theory.log10_delta_profile("relu", 1, 2.0).tolist() == [0.0]


def test_chi1_matches_a_wide_random_network():
    """E|delta^l|^2 / E|delta^{l+1}|^2 in a width-2000 tanh network equals chi_1 within a few %."""
    sigma_w2, sigma_b2, width, layers = 1.44, 0.5, 2000, 6
    act = theory.NUMPY_ACTIVATIONS["tanh"]
    q = theory.q_star("tanh", sigma_w2, sigma_b2)
    predicted = theory.chi1("tanh", sigma_w2, sigma_b2)
    ratios = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        h = math.sqrt(q) * rng.standard_normal(width)  # start at the fixed point
        hidden, weights = [h], []
        for _ in range(layers - 1):
            w = rng.standard_normal((width, width)) * math.sqrt(sigma_w2 / width)
            h = w @ act.phi(h) + math.sqrt(sigma_b2) * rng.standard_normal(width)
            hidden.append(h)
            weights.append(w)
        assert np.mean(h ** 2) == pytest.approx(q, rel=0.1)
        delta = rng.standard_normal(width)
        for layer in range(layers - 2, -1, -1):
            previous = delta @ delta
            delta = act.dphi(hidden[layer]) * (weights[layer].T @ delta)
            ratios.append(delta @ delta / previous)
    measured = float(np.mean(ratios))
    assert measured == pytest.approx(predicted, rel=0.04)
    # the test tells chi_1 (0.65 here) from sigma_w^2 and from 1
    assert abs(predicted - sigma_w2) > 0.3 and abs(predicted - 1.0) > 0.3


def test_a_tabulated_activation_gives_the_closed_form_predictions():
    # how a record carries an activation this module has no closed form for
    x = np.linspace(-16, 16, 641)
    table = theory.from_table(16.0, np.tanh(x))
    assert table.phi(np.array([-20.0, 0.3, 20.0])) == pytest.approx(
        [np.tanh(-16) + (-4) * (np.tanh(-16) - np.tanh(-16 + 0.05)) / 0.05, np.tanh(0.3),
         np.tanh(16) + 4 * (np.tanh(16) - np.tanh(16 - 0.05)) / 0.05], abs=1e-3)
    for sw2, sb2 in [(0.5, 0.0025), (2.0, 0.05)]:
        assert theory.chi1(table, sw2, sb2) == pytest.approx(theory.chi1("tanh", sw2, sb2), rel=2e-3)
        assert theory.q_star(table, sw2, sb2) == pytest.approx(theory.q_star("tanh", sw2, sb2),
                                                               rel=2e-3)
    with pytest.raises(ValueError, match="at least 3 finite values"):
        theory.from_table(1.0, [0.0, np.nan, 1.0])

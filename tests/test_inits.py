"""Initializers against their defining variances and structure."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import inits
from vgbench.activations import get as get_activation
from vgbench.inits import InitHyper
from vgbench.spec import RunSpec

FAN = 512
KEY = jax.random.PRNGKey(0)


def sample(name, shape=(FAN, FAN), hp=InitHyper()):
    fan_in, fan_out = inits.fans(shape)
    return np.asarray(inits.get(name).weight(KEY, shape, fan_in, fan_out, hp))


@pytest.mark.parametrize("name,variance", [
    ("he_normal", 2.0 / FAN), ("he_uniform", 2.0 / FAN), ("lecun_normal", 1.0 / FAN),
    ("xavier_normal", 2.0 / (2 * FAN)), ("xavier_uniform", 2.0 / (2 * FAN)),
    ("naive", 1.0 / (3 * FAN)), ("small_normal", 1e-4), ("orthogonal", 1.0 / FAN),
])
def test_weight_variance_matches_the_definition(name, variance):
    w = sample(name)
    # 262144 draws: the sample variance is within ~0.3 % (1 sigma) of the truth
    assert w.var() == pytest.approx(variance, rel=0.02)
    assert abs(w.mean()) < 5 * math.sqrt(variance / w.size) + 1e-9


def test_he_normal_is_gain_aware_for_leaky_slopes():
    spec = RunSpec(activation="leaky_relu", leaky_slope=0.2)
    gain2 = get_activation("leaky_relu").bind(spec).he_gain2
    assert gain2 == pytest.approx(2.0 / 1.04)
    w = sample("he_normal", hp=InitHyper(he_gain2=gain2))
    assert w.var() == pytest.approx(gain2 / FAN, rel=0.02)


def test_uniform_bounds():
    assert np.abs(sample("naive")).max() <= 1 / math.sqrt(FAN)
    assert np.abs(sample("xavier_uniform")).max() <= math.sqrt(6 / (2 * FAN))


@pytest.mark.parametrize("shape", [(64, 64), (64, 16), (16, 64), (3, 3, 8, 8)])
def test_orthogonal_has_gain_times_orthonormal_columns(shape):
    w = sample("orthogonal", shape, InitHyper(sigma_w=1.5)).reshape(-1, shape[-1])
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(gram.shape[0]), atol=1e-4)


def test_gaussian_uses_sigma_w_and_sigma_b():
    hp = InitHyper(sigma_w=2.0, sigma_b=0.3)
    w = sample("gaussian", hp=hp)
    b = np.asarray(inits.get("gaussian").bias(KEY, (100_000,), hp))
    assert w.var() == pytest.approx(4.0 / FAN, rel=0.02)
    assert b.std() == pytest.approx(0.3, rel=0.02)
    assert np.all(np.asarray(inits.get("he_normal").bias(KEY, (10,), hp)) == 0)


def test_fans_of_conv_kernels():
    assert inits.fans((3, 3, 16, 32)) == (144, 288)
    assert inits.fans((20, 30)) == (20, 30)


def test_mean_field_sigma_is_consistent_with_the_sample():
    for name in ("naive", "he_normal", "lecun_normal", "xavier_normal", "orthogonal"):
        sw2, sb2 = inits.get(name).effective_sigma2(InitHyper(), FAN, FAN)
        assert sample(name).var() * FAN == pytest.approx(sw2, rel=0.02), name


@pytest.mark.parametrize("name,activation,hyper,fans,expected", [
    ("naive", "relu", {}, (64, 64), (1 / 3, 0.0)),              # Var U[+-1/sqrt(n)] = 1/(3n)
    ("small_normal", "relu", {}, (256, 256), (0.0256, 0.0)),
    ("xavier_normal", "tanh", {}, (100, 100), (1.0, 0.0)),
    ("xavier_uniform", "tanh", {}, (100, 300), (0.5, 0.0)),
    ("he_normal", "relu", {}, (64, 64), (2.0, 0.0)),
    ("he_uniform", "leaky_relu", {"leaky_slope": 0.5}, (64, 64), (1.6, 0.0)),
    ("he_normal", "prelu", {}, (64, 64), (2 / 1.0625, 0.0)),
    ("lecun_normal", "selu", {}, (64, 64), (1.0, 0.0)),
    ("orthogonal", "tanh", {"sigma_w": 1.5}, (64, 64), (2.25, 0.0)),
    ("gaussian", "tanh", {"sigma_w": 1.2, "sigma_b": 0.3}, (64, 64), (1.44, 0.09)),
    ("identity", "relu", {}, (64, 64), None),
])
def test_effective_variances_of_mean_field_theory(name, activation, hyper, fans, expected):
    # the initializer's own mean_field, with the He gain its activation declares: the theory
    # inputs a run record carries (vgbench.record.theory_inputs)
    from vgbench import record

    spec = RunSpec(activation=activation, init=name, width=fans[1], **hyper)
    act = get_activation(activation).bind(spec)
    hp = InitHyper(sigma_w=spec.sigma_w, sigma_b=spec.sigma_b, he_gain2=act.he_gain2)
    found = inits.get(name).effective_sigma2(hp, *fans)
    assert found == (pytest.approx(expected) if expected else None)
    inputs = record.theory_inputs(spec, fans[0])
    assert (inputs["stem_sigma_w2"], inputs["stem_sigma_b2"]) == (
        pytest.approx(expected) if expected else (None, None))


def test_initializers_are_deterministic_in_the_key():
    a = inits.get("he_normal").weight(KEY, (8, 8), 8, 8, InitHyper())
    b = inits.get("he_normal").weight(KEY, (8, 8), 8, 8, InitHyper())
    assert jnp.array_equal(a, b)

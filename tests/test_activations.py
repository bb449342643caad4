"""Activations: one definition each, the same code on JAX arrays (training) and numpy (theory)."""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from vgbench import activations, record, theory
from vgbench.activations import NUMPY
from vgbench.spec import RunSpec

# float32 points from -20 to 20, with the kinks 0 and +-1 among them
GRID = np.linspace(-20.0, 20.0, 4001, dtype=np.float32)
ORIGIN = "tests/test_activations.py"


def shifted_softplus(x, *, xp=activations.JAX):
    """Shifted softplus ln(1 + e^x) - ln 2, written over xp (a test entry)."""
    return xp.logaddexp(x, 0.0) - math.log(2.0)


def shifted_softplus_derivative(x, *, xp=activations.JAX):
    return xp.sigmoid(x)


def cube_root(x):
    """Signed cube root, JAX only (a test entry)."""
    return jax.numpy.cbrt(x)


@pytest.fixture
def plugins():
    """Two plugin activations: one with a numpy form (it declares its derivative), one without."""
    activations.register_activation("test_ssp", shifted_softplus,
                                    derivative=shifted_softplus_derivative, origin=ORIGIN)
    activations.register_activation("test_cube_root", cube_root, derivative_max=10.0,
                                    origin=ORIGIN)
    yield
    for name in ("test_ssp", "test_cube_root"):
        activations.ACTIVATIONS.unregister(name)


def forms(spec):
    """(name, JAX form bound to spec, numpy form) of every registered activation."""
    for name, entry in activations.ACTIVATIONS.items():
        yield name, entry.bind(spec), entry.numpy_form(spec), entry.kinks


@pytest.mark.parametrize("leaky_slope", [activations.LEAKY_SLOPE, 0.2])
def test_numpy_and_jax_forms_agree_for_every_registered_activation(plugins, leaky_slope):
    spec = RunSpec(leaky_slope=leaky_slope)
    checked = []
    for name, bound, numpy_form, kinks in forms(spec):
        if numpy_form is None:
            continue
        phi, dphi, _ = numpy_form
        theta = bound.init_theta(GRID.size)
        values = np.asarray(bound.apply(GRID, theta))
        np.testing.assert_allclose(phi(GRID), values, rtol=2e-6, atol=1e-7, err_msg=name)
        # the derivative is a convention at a kink: compared away from them; JAX's float32
        # autodiff loses what is below its eps (1 - tanh^2 is 0 from |x| = 9 on)
        smooth = np.all(np.abs(GRID[:, None] - np.asarray(kinks + (np.inf,))) > 1e-6, axis=1)
        slopes = np.asarray(bound.derivative(GRID, theta))
        np.testing.assert_allclose(dphi(GRID)[smooth], slopes[smooth], rtol=2e-6,
                                   atol=4 * np.finfo(np.float32).eps, err_msg=name)
        checked.append(name)
    builtins = [n for n in activations.ACTIVATIONS if activations.ACTIVATIONS.origin(n) == "vgbench"]
    assert set(checked) == {*builtins, "test_ssp"}


@pytest.mark.parametrize("ours, jax_own", [
    (activations.elu, jax.nn.elu),
    (activations.silu, jax.nn.silu),
    (activations.gelu, lambda x: jax.nn.gelu(x, approximate=False)),
])
def test_spelled_out_forms_compute_what_jax_nn_computes_bit_for_bit(ours, jax_own):
    for transform in (lambda f: f, jax.grad):
        mine = jax.jit(jax.vmap(transform(ours)))(GRID)
        theirs = jax.jit(jax.vmap(transform(jax_own)))(GRID)
        assert np.asarray(mine).tobytes() == np.asarray(theirs).tobytes()


def test_derivative_max_is_the_sup_of_the_declared_derivative(plugins):
    x = np.linspace(-20.0, 20.0, 400_001)
    for name, bound, numpy_form, _ in forms(RunSpec(leaky_slope=0.2)):
        if numpy_form is not None:
            sup = float(np.max(np.abs(numpy_form[1](x))))
            assert bound.derivative_max == pytest.approx(sup, rel=1e-4), name


def test_numpy_forms_run_on_float64_at_initialization():
    spec = RunSpec()
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    prelu = activations.get("prelu").numpy_form(spec)
    np.testing.assert_array_equal(prelu[0](x), np.where(x >= 0, x, activations.PRELU_INIT_SLOPE * x))
    assert activations.selu(x, xp=NUMPY).dtype == np.float64
    assert activations.get("hard_tanh").numpy_form(spec)[2] == (-1.0, 1.0)
    assert activations.get("relu").numpy_form(spec)[1](np.array([0.0]))[0] == 0.0


def test_theory_uses_the_registry_forms_and_only_for_built_ins(plugins):
    builtins = {n for n in activations.ACTIVATIONS if activations.ACTIVATIONS.origin(n) == "vgbench"}
    assert set(theory.NUMPY_ACTIVATIONS) == builtins
    x = np.linspace(-3.0, 3.0, 13)
    for name in builtins:
        np.testing.assert_array_equal(theory.NUMPY_ACTIVATIONS[name].phi(x),
                                      activations.get(name).numpy_form(RunSpec())[0](x))
    # a plugin is not resolved by name: its record carries it tabulated, with or without a
    # numpy form, so that a reporter that never loaded the plugin can use it
    for name in ("test_ssp", "test_cube_root"):
        with pytest.raises(ValueError, match="no mean-field activation"):
            theory.as_activation(name)
        inputs = record.theory_inputs(RunSpec(activation=name, width=8), 64)
        assert "phi" in inputs, name
    assert "phi" not in record.theory_inputs(RunSpec(activation="tanh", width=8), 64)


@pytest.mark.parametrize("name, sigma_w2, sigma_b2, expected", [
    # (q*, chi_1, chi_q, c*, chi_c), as computed before theory read the registry's forms
    ("tanh", 1.5, 0.05, (0.41803720053347765, 0.9386362681988512, 0.5519832056635092, 1.0,
                         0.9386362681988512)),
    ("selu", 1.5, 0.05, (8.952253844199637, 1.1290807272182795, 0.8655248274874467,
                         0.4915400541723519, 0.9240438654834743)),
    ("gelu", 1.5, 0.05, (0.08768390467661974, 0.446197386005856, 0.47751449607013996, 1.0,
                         0.44619738600585596)),
    ("sigmoid", 3.0, 0.2, (1.088210375739806, 0.1318006211213249, 0.0895070512338776, 1.0,
                           0.1318006211213249)),
])
def test_mean_field_numbers_from_the_registry_forms(name, sigma_w2, sigma_b2, expected):
    field = theory.mean_field(name, sigma_w2, sigma_b2)
    found = (field.q_star, field.chi1, field.chi_q, field.c_star, field.chi_c)
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=0)


def test_leaky_slopes_reach_the_theory():
    # chi_1 = sigma_w^2 (1 + a^2) / 2 for leaky slope a; PReLU at its initial slope 0.25
    assert theory.chi1("leaky_relu", 1.9, 0.1, leaky_slope=0.2) == pytest.approx(0.988, rel=1e-12)
    assert theory.chi1("leaky_relu", 2.0) == pytest.approx(1.0 + activations.LEAKY_SLOPE ** 2,
                                                           rel=1e-12)
    assert theory.chi1("prelu", 2.0) == pytest.approx(1.0625, rel=1e-12)
    assert RunSpec().leaky_slope == activations.LEAKY_SLOPE


def test_importing_the_activations_does_not_pull_in_jax():
    code = ("import sys, vgbench.activations, vgbench.spec; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

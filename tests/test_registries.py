"""One common test over every registry entry: each trains a few steps with finite results.

Configs that differ only in initializer share one compiled program (vmapped over the stack of
their initial parameters), so the full seed grid activation x initializer costs one
compilation per activation.
"""

import jax
import numpy as np
import pytest

from vgbench import activations, inits, models, norms, optimizers, tasks, train
from vgbench.registry import Registry
from vgbench.spec import RunSpec

TINY = dict(depth=3, width=8, batch_size=16, steps=4, log_every=2, lr=0.05)
SEED_ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "prelu"]


def run_stack(specs):
    """Run configs sharing one program together; return the stacked raw outputs."""
    program = train.build_program(specs[0])
    inputs = [train.init_params(s, [0], task=program.task) for s in specs]
    stacked = jax.tree_util.tree_map(lambda *x: np.concatenate(x), *inputs)
    return train.execute(program, *stacked, [s.lr for s in specs]).outputs


def assert_finite(outputs, label):
    logs = outputs["logs"]
    for key in ("loss", "grad_norm", "delta_norm", "weight_norm"):
        assert np.all(np.isfinite(logs[key])), f"{label}: non-finite {key}"
    assert np.all(outputs["diverged_at"] < 0), label


@pytest.mark.parametrize("activation", SEED_ACTIVATIONS)
def test_seed_activations_with_every_initializer(activation):
    names = inits.INITIALIZERS.names()
    specs = [RunSpec(**TINY, activation=activation, init=name) for name in names]
    assert len({train.program_key(s) for s in specs}) == 1
    out = run_stack(specs)
    for i, name in enumerate(names):
        assert_finite(jax.tree_util.tree_map(lambda a: a[i:i + 1], out), f"{activation}/{name}")


def _other_entries():
    cases = [("activation", a) for a in activations.ACTIVATIONS.names() if a not in SEED_ACTIVATIONS]
    cases += [("norm", n) for n in norms.NORMS.names() if n != "none"]
    cases += [("skip", s) for s in norms.SKIPS.names() if s != "none"]
    cases += [("optimizer", o) for o in optimizers.OPTIMIZERS.names() if o != "sgd"]
    cases += [("clip", c) for c in optimizers.CLIPS.names() if c != "none"]
    return cases


@pytest.mark.parametrize("field,name", _other_entries())
def test_every_other_entry_trains(field, name):
    spec = RunSpec(**{**TINY, field: name})
    assert_finite(run_stack([spec]), f"{field}={name}")


@pytest.mark.parametrize("model,task,extra", [
    ("cnn", "digits", {"depth": 3}), ("cnn", "digits", {"depth": 3, "skip": "residual", "norm": "batchnorm"}),
    ("mlp", "teacher", {"input_dim": 12}),
])
def test_models_and_tasks(model, task, extra):
    spec = RunSpec(**{**TINY, "model": model, "task": task, **extra})
    assert_finite(run_stack([spec]), f"{model}/{task}")


@pytest.mark.parametrize("registry", [activations.ACTIVATIONS, inits.INITIALIZERS, norms.NORMS,
                                      norms.SKIPS, optimizers.OPTIMIZERS, optimizers.CLIPS,
                                      models.MODELS, tasks.TASKS])
def test_every_entry_is_documented(registry):
    for name in registry:
        assert registry.summary(name), f"{registry.axis} {name!r} has no one-line doc"


def test_get_rejects_unknown_names_with_the_valid_list_and_nearest_match():
    with pytest.raises(ValueError, match=r"unknown init 'xavier'; valid choices: .*xavier_uniform.*did you mean"):
        inits.get("xavier")
    with pytest.raises(TypeError, match="activation must be a string"):
        activations.get(3)


@pytest.mark.parametrize("given,nearest", [("Relu", "relu"), ("RELU", "relu"), ("TanH", "tanh"),
                                            ("Leaky_ReLU", "leaky_relu"), ("sigmod", "sigmoid")])
def test_the_nearest_match_ignores_case(given, nearest):
    with pytest.raises(ValueError, match=rf"unknown activation '{given}'.*did you mean '{nearest}'\?"):
        activations.get(given)


def test_one_table_maps_every_registry_field_to_its_registry():
    from vgbench import models, norms, optimizers, registry, tasks
    from vgbench.models import rnn

    table = registry.axes()
    assert table == {"activation": activations.ACTIVATIONS, "init": inits.INITIALIZERS,
                     "recurrent_init": inits.INITIALIZERS, "norm": norms.NORMS,
                     "skip": norms.SKIPS, "optimizer": optimizers.OPTIMIZERS,
                     "clip": optimizers.CLIPS, "task": tasks.TASKS, "model": models.MODELS,
                     "cell": rnn.CELLS}
    assert "thing" not in table and Registry("thing").fields == ()   # not a config field


@pytest.mark.parametrize("field,value", [("recurrent_init", "orthgonal"), ("cell", "LSTM")])
def test_recurrent_fields_are_checked_by_name_like_every_registry_field(field, value):
    with pytest.raises(ValueError, match=rf"unknown {field} '{value}'; valid choices: .*did you mean"):
        RunSpec(**{field: value})


def test_register_refuses_to_override_and_needs_a_docstring():
    reg = Registry("thing")
    reg.register("a", lambda: None, doc="An entry.")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", lambda: None, doc="Another.")
    with pytest.raises(ValueError, match="needs a docstring"):
        reg.register("b", lambda: None)
    with pytest.raises(ValueError, match="identifier-like"):
        reg.register("a b", lambda: None, doc="x")


def test_a_user_activation_is_usable_by_name():
    def cube_root(x):
        """Signed cube root (a test activation)."""
        return jax.numpy.cbrt(x)

    activations.register_activation("test_cube_root", cube_root, derivative_max=10.0)
    try:
        spec = RunSpec(**TINY, activation="test_cube_root")
        assert_finite(run_stack([spec]), "test_cube_root")
        with pytest.raises(ValueError, match="already registered"):
            activations.register_activation("relu", cube_root)
    finally:
        activations.ACTIVATIONS.unregister("test_cube_root")


def test_relu_uses_the_zero_subgradient_at_zero():
    # the convention of jax.nn.relu and PyTorch; 0.5 (jnp.maximum's tie split) changes where
    # an unnormalised deep ReLU net with dead layers goes, so it is pinned here
    relu = activations.get("relu").bind(RunSpec())
    grad = jax.vmap(jax.grad(lambda x: relu.apply(x, None)))
    np.testing.assert_array_equal(grad(np.array([-1.0, 0.0, 2.0], np.float32)), [0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------- entry options

def test_options_are_read_checked_and_handed_to_a_callable_entry():
    reg = Registry("thing")

    def make(lr, *, decay, steps, nesterov, mode):
        """A test entry with options of every type."""
        return (lr, decay, steps, nesterov, mode)

    reg.register("opt", make, options={"decay": 0.9, "steps": 3, "nesterov": False, "mode": "a"})
    reg.register("plain", lambda lr: lr, doc="A test entry without options.")
    assert reg.get("opt")(0.1) == (0.1, 0.9, 3, False, "a")
    assert reg.get("opt(mode='b', decay=1, nesterov=True)")(0.1) == (0.1, 1.0, 3, True, "b")
    assert reg.parse("opt(steps=5)") == ("opt", {"decay": 0.9, "steps": 5, "nesterov": False,
                                                 "mode": "a"})
    # canonical: declared order, values at their defaults left out
    assert reg.canonical("opt(mode='b', decay=1, steps=3)") == "opt(decay=1.0, mode='b')"
    assert reg.canonical("opt(decay=0.9)") == reg.canonical("opt()") == "opt"
    assert reg.signature("opt") == "opt(decay=0.9, steps=3, nesterov=False, mode='a')"
    assert reg.signature("plain") == "plain" and reg.get("plain")(2) == 2
    assert "opt(steps=5)" in reg and "opt(steps=5.5)" not in reg and "opt(x=1)" not in reg
    assert reg.base("opt(steps=5)") == "opt" and reg.summary("opt(steps=5)") == reg.summary("opt")
    assert list(reg) == ["opt", "plain"]
    with pytest.raises(TypeError, match=r"thing 'opt\(steps=2.5\)': option steps must be int"):
        reg.get("opt(steps=2.5)")
    with pytest.raises(ValueError, match="plain takes no options"):
        reg.get("plain(x=1)")


def test_register_checks_the_declared_options():
    reg = Registry("thing")
    with pytest.raises(TypeError, match=r"option 'size' needs a default of type bool, int, float"):
        reg.register("a", lambda: None, doc="x", options={"size": None})
    with pytest.raises(ValueError, match="an option name must be an identifier"):
        reg.register("a", lambda: None, doc="x", options={"two words": 1})
    with pytest.raises(TypeError, match="cannot receive options"):
        reg.register("a", object(), doc="x", options={"size": 1})
    assert "a" not in reg


def test_elu_takes_its_alpha_as_an_option():
    x = np.array([-3.0, -1.0, -0.1, 0.5, 2.0], np.float32)
    default = activations.get("elu").bind(RunSpec(activation="elu"))
    half = activations.get("elu(alpha=0.5)").bind(RunSpec(activation="elu(alpha=0.5)"))
    steep = activations.get("elu(alpha=2)").bind(RunSpec())
    np.testing.assert_allclose(default.apply(x), np.where(x > 0, x, np.expm1(x)), rtol=1e-6)
    np.testing.assert_allclose(half.apply(x), np.where(x > 0, x, 0.5 * np.expm1(x)), rtol=1e-6)
    assert default.derivative_max == half.derivative_max == 1.0 and steep.derivative_max == 2.0
    spec = RunSpec(**TINY, activation="elu(alpha=0.5)")
    assert spec.activation == "elu(alpha=0.5)"
    assert_finite(run_stack([spec]), spec.activation)


def test_an_entry_with_several_functions_gives_its_options_to_each():
    def apply(params, state, z, *, train, scale):
        return z * scale, state

    norms.register_norm("test_scaled", lambda width, scale: ({}, {}), apply,
                        doc="Multiply by a fixed scale (a test entry).", options={"scale": 2.0})
    try:
        norm = norms.get_norm("test_scaled(scale=3.0)")
        assert norm.init(4) == ({}, {})
        assert norm.apply({}, {}, np.float32(1.5), train=True)[0] == 4.5
        assert RunSpec(norm="test_scaled(scale=2)").norm == "test_scaled"
    finally:
        norms.NORMS.unregister("test_scaled")

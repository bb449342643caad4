"""The compiled run: jit equals eager, entries side by side equal each alone, determinism, divergence, records."""

import json

import jax
import numpy as np
import pytest

from vgbench import record, train
from vgbench.spec import RunSpec

TINY = dict(depth=3, width=8, batch_size=16, steps=6, log_every=3)


def run_record(spec, seeds):
    program, raw = train.train(spec, seeds)
    return record.build_record(spec, seeds, raw.outputs, task=program.task,
                               layer_names=program.model.layer_names, compile_s=raw.compile_s,
                               run_s=raw.run_s)


def strip_volatile(rec):
    rec = dict(rec)
    rec.pop("timing")
    rec.pop("created")
    return rec


def test_record_has_the_contract_fields_and_shapes():
    spec = RunSpec(**TINY, activation="tanh", init="xavier_normal")
    rec = run_record(spec, [0, 1])
    assert rec["schema"] == "vgbench.run/1" and rec["run_id"] == spec.run_id
    assert rec["seeds"] == [0, 1] and rec["status"] == ["ok", "ok"]
    d = rec["diagnostics"]
    assert d["steps"] == [0, 3, 6] and len(d["layer_names"]) == 4
    for key in ("grad_norm", "delta_norm", "weight_norm", "update_ratio", "act_rms",
                "saturation", "tail_saturation", "inactive_fraction", "dead_fraction",
                "delta_underflow"):
        assert np.array(d[key], dtype=float).shape == (2, 3, 4), key
    assert np.array(d["weight_samples"], dtype=float).shape == (2, 3, 4, 4)
    assert np.array(d["loss"]).shape == (2, 3)
    for key in ("log10_attenuation_init", "log10_attenuation_final", "decay_per_layer", "plateau",
                "plateau_step", "dead_fraction_final", "saturation_final",
                "tail_saturation_final", "inactive_fraction_final"):
        assert len(rec["summary"][key]) == 2, key
    # tanh's flat units sit in its saturating tails: all of them count as tail saturation
    assert rec["summary"]["inactive_fraction_final"] == [0.0, 0.0]
    assert rec["summary"]["tail_saturation_final"] == rec["summary"]["saturation_final"]
    for key in ("final_train_loss", "final_test_loss", "final_test_accuracy", "steps_to_target",
                "task_baseline"):
        assert len(rec["metrics"][key]) == 2, key
    assert rec["metrics"]["task_baseline"][0] == pytest.approx(np.log(10), abs=0.01)
    json.loads(record.dumps(rec))  # strict JSON: no NaN, no Infinity
    # an MLP's record carries the mean-field theory's inputs: Xavier on 8 x 8 layers is 1.0
    assert rec["theory"]["activation"] == "tanh" and rec["theory"]["sigma_w2"] == 1.0
    assert rec["theory"]["stem_sigma_w2"] == pytest.approx(2 * 64 / (64 + 8), rel=1e-5)  # 64 inputs
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "backend", "device_kind",
                "device_count", "git_commit"):
        assert key in rec["env"], key


def test_log_point_zero_is_initialization_and_updates_follow():
    rec = run_record(RunSpec(**TINY, optimizer="sgd", lr=0.5), [0])
    ratio = np.array(rec["diagnostics"]["update_ratio"][0], dtype=float)
    weights = np.array(rec["diagnostics"]["weight_samples"][0], dtype=float)
    assert np.all(ratio[:, :-1] > 0)
    assert not np.allclose(weights[0], weights[-1])   # the weights moved


def test_steps_zero_records_initialization_only():
    rec = run_record(RunSpec(**{**TINY, "steps": 0}), [0])
    assert rec["diagnostics"]["steps"] == [0]
    assert len(rec["diagnostics"]["delta_norm"][0]) == 1
    assert rec["summary"]["log10_attenuation_init"] == rec["summary"]["log10_attenuation_final"]


def test_a_step_count_off_the_log_grid_logs_the_end_of_training():
    # 7 steps logged every 3: log points at 0, 3, 6 and 7, the last a short block of one step.
    # Every step draws its batch from its own index and a logged step applies the same update
    # as a plain one, so the run logged at every step passes through the same numbers.
    base = dict(TINY, steps=7, activation="tanh", init="xavier_normal", lr=0.3)
    sparse = run_record(RunSpec(**{**base, "log_every": 3}), [0])
    dense = run_record(RunSpec(**{**base, "log_every": 1}), [0])
    assert sparse["diagnostics"]["steps"] == [0, 3, 6, 7]
    assert dense["diagnostics"]["steps"] == list(range(8))
    for key in ("loss", "delta_norm", "grad_norm", "update_ratio", "weight_samples"):
        np.testing.assert_allclose(np.asarray(sparse["diagnostics"][key][0], float),
                                   np.asarray(dense["diagnostics"][key][0], float)[[0, 3, 6, 7]],
                                   rtol=1e-4, atol=1e-7, err_msg=key)
    for key in ("final_train_loss", "final_test_loss", "final_test_accuracy"):
        assert sparse["metrics"][key][0] == pytest.approx(dense["metrics"][key][0], rel=1e-4), key
    # the record's summaries read the end of training: the last log point, step 7
    assert sparse["summary"]["log10_attenuation_final"][0] == pytest.approx(
        dense["summary"]["log10_attenuation_final"][0], abs=1e-4)


def test_same_config_and_seed_give_a_bitwise_identical_record():
    spec = RunSpec(**TINY, activation="relu", norm="batchnorm")
    a, b = run_record(spec, [3]), run_record(spec, [3])
    assert record.dumps(strip_volatile(a)) == record.dumps(strip_volatile(b))


@pytest.mark.parametrize("sequential", [True, False], ids=["in_sequence", "vmapped"])
def test_entries_side_by_side_equal_each_entry_alone(sequential):
    # both forms of a many-entry program (lax.map on one CPU device, vmap on an accelerator)
    spec = RunSpec(**TINY, activation="tanh", init="xavier_normal")
    program = train.build_program(spec, sequential=sequential)
    params, state, keys = train.init_params(spec, [0, 1], task=program.task)
    joint = train.execute(program, params, state, keys, [spec.lr, spec.lr])
    for i, seed in enumerate([0, 1]):
        _, alone = train.train(spec, [seed])
        for key in ("loss", "delta_norm", "grad_norm", "weight_samples"):
            np.testing.assert_allclose(joint.outputs["logs"][key][i], alone.outputs["logs"][key][0],
                                       rtol=2e-5, atol=1e-7, err_msg=key)
    assert train.entries_in_sequence() == (jax.default_backend() == "cpu")


RECURRENT = dict(task="adding", model="rnn", cell="lstm", depth=1, width=8, seq_len=12,
                 batch_size=8, optimizer="adam", lr=0.01, steps=6, log_every=3)


@pytest.mark.parametrize("sequential", [True, False], ids=["in_sequence", "vmapped"])
def test_a_batch_split_over_two_devices_equals_the_whole_batch(sequential):
    # the split program is an SPMD program over two CPU devices (tests/conftest.py asks for
    # two): each takes half of every batch and evaluation set, and XLA sums the gradients
    assert jax.local_device_count() >= 2
    spec = RunSpec(**RECURRENT)
    whole = train.build_program(spec, split=1, sequential=sequential)
    split = train.build_program(spec, split=2, sequential=sequential)
    assert (whole.split, split.split) == (1, 2)
    params, state, keys = train.init_params(spec, [0, 1], task=whole.task)
    outs = [train.execute(p, params, state, keys, [0.01, 0.03]).outputs for p in (whole, split)]
    logs = [o["logs"] for o in outs]
    assert logs[0].keys() == logs[1].keys()
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], rtol=2e-5, atol=1e-7, err_msg=key)
    assert np.ptp(logs[0]["time_delta_norm"][0, 0]) > 0      # a per-time-step profile, not a constant
    for name in ("train", "val", "test"):
        for key, value in outs[0]["final"][name].items():
            np.testing.assert_allclose(outs[1]["final"][name][key], value, rtol=2e-5, err_msg=key)


def test_batch_split_takes_the_largest_device_count_that_divides_the_batch():
    assert jax.local_device_count() == 2
    assert train.batch_split(RunSpec(**RECURRENT)) == 2                 # the recurrent model splits
    assert train.batch_split(RunSpec(**{**RECURRENT, "batch_size": 7})) == 1
    assert train.batch_split(RunSpec(**TINY)) == 1                      # the MLP does not
    assert train.build_program(RunSpec(**RECURRENT)).split == 2
    with pytest.raises(ValueError, match=r"split=3: expected a count of devices \(at most 2\) "
                                         r"that divides batch_size=8"):
        train.build_program(RunSpec(**RECURRENT), split=3)


def test_jit_equals_eager():
    spec = RunSpec(**{**TINY, "depth": 2, "steps": 2, "log_every": 1})
    program = train.build_program(spec)
    eager = train.build_program(spec, jit=False)
    params, state, keys = train.init_params(spec, [0], task=program.task)
    lrs = np.array([spec.lr], np.float32)
    compiled = program.run(params, state, keys, lrs)
    with jax.disable_jit():
        plain = eager.run(params, state, keys, lrs)
    for key in ("loss", "delta_norm", "grad_norm", "update_ratio"):
        np.testing.assert_allclose(np.asarray(compiled["logs"][key]), np.asarray(plain["logs"][key]),
                                   rtol=1e-4, atol=1e-7, err_msg=key)


def test_divergence_is_recorded_not_raised():
    spec = RunSpec(**{**TINY, "steps": 8, "log_every": 2}, activation="relu", init="he_normal",
                   optimizer="sgd", lr=1e6)
    rec = run_record(spec, [0, 1])
    assert rec["status"] == ["diverged", "diverged"]
    for at in rec["diverged_at_step"]:
        assert isinstance(at, int) and 0 <= at < 8
    assert rec["metrics"]["final_test_loss"] == [None, None]
    assert rec["metrics"]["final_test_accuracy"] == [None, None]   # no accuracy from NaN logits
    json.loads(record.dumps(rec))


def test_vanished_gradient_is_recorded_as_zero_with_an_underflow_flag():
    spec = RunSpec(**{**TINY, "steps": 0, "depth": 64}, activation="sigmoid", init="small_normal")
    rec = run_record(spec, [0])
    delta = np.array(rec["diagnostics"]["delta_norm"][0][0], dtype=float)
    flags = rec["diagnostics"]["delta_underflow"][0][0]
    assert delta[0] == 0.0 and flags[0] is True and flags[-1] is False
    assert rec["summary"]["log10_attenuation_init"] == [None]
    json.loads(record.dumps(rec))


def test_configs_that_differ_in_init_and_lr_share_one_program():
    a = RunSpec(**TINY, init="he_normal", lr=0.1)
    b = a.replace(init="orthogonal", lr=0.02, sigma_w=1.3)
    assert train.program_key(a) == train.program_key(b)
    assert train.program_key(a) != train.program_key(a.replace(depth=4))
    program = train.build_program(a)
    pa, sa, ka = train.init_params(a, [0], task=program.task)
    pb, sb, kb = train.init_params(b, [0], task=program.task)
    stack = lambda *t: jax.tree_util.tree_map(lambda *x: np.concatenate(x), *t)  # noqa: E731
    raw = train.execute(program, stack(pa, pb), stack(sa, sb), stack(ka, kb), [0.1, 0.02])
    _, alone = train.train(b, [0])
    np.testing.assert_allclose(raw.outputs["logs"]["loss"][1], alone.outputs["logs"]["loss"][0], rtol=2e-5)


def test_unrolled_and_scanned_hidden_layers_give_the_same_run(monkeypatch):
    # batch norm (state), PReLU (per-layer parameters) and SkipInit (per-layer gain) all pass
    # through both layouts of the hidden stack
    from vgbench.models import mlp

    spec = RunSpec(**{**TINY, "depth": 5}, activation="prelu", init="he_normal", norm="batchnorm",
                   skip="skipinit", optimizer="momentum", lr=0.05)
    assert mlp.unrolled(spec.depth - 1, spec.width)
    assert mlp.unrolled(20, 128) and not mlp.unrolled(20, 64) and mlp.unrolled(8, 64)
    _, unrolled = train.train(spec, [0, 1])
    monkeypatch.setattr(mlp, "UNROLL_MAX_HIDDEN", 0)
    _, scanned = train.train(spec, [0, 1])
    for key in ("loss", "test_loss", "delta_norm", "grad_norm", "weight_norm", "update_ratio",
                "weight_samples", "act_rms", "saturation", "dead_fraction"):
        np.testing.assert_allclose(unrolled.outputs["logs"][key], scanned.outputs["logs"][key],
                                   rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_tree_finite_finds_one_bad_entry_and_passes_large_finite_ones(bad):
    tree = {"a": np.full((3, 4), 1e30, np.float32), "b": [np.zeros(5, np.float32), np.ones(2, np.float32)]}
    check = jax.jit(train.tree_finite)
    assert bool(check(tree)) and bool(train.tree_finite(tree))
    tree["b"][0][3] = bad
    assert not bool(check(tree)) and not bool(train.tree_finite(tree))


def test_agc_clips_each_stacked_layer_as_its_own_layer(monkeypatch):
    # the same run with its hidden layers unrolled (one array per layer) and scanned (stacked
    # on a leading axis): adaptive clipping must not pool units across the stacked layers
    from vgbench.models import mlp

    spec = RunSpec(**{**TINY, "depth": 5}, activation="tanh", init="xavier_normal", optimizer="sgd",
                   lr=0.5, clip="agc", clip_threshold=0.01)
    _, unrolled = train.train(spec, [0])
    monkeypatch.setattr(mlp, "UNROLL_MAX_HIDDEN", 0)
    _, scanned = train.train(spec, [0])
    for key in ("loss", "update_ratio", "weight_samples"):
        np.testing.assert_allclose(unrolled.outputs["logs"][key], scanned.outputs["logs"][key],
                                   rtol=1e-4, atol=1e-6, err_msg=key)
    # clipping is active: every layer's update is capped at about threshold x its weights
    ratio = scanned.outputs["logs"]["update_ratio"][0, 0]
    assert np.all(ratio <= 0.5 * 0.01 * 1.05), ratio


def test_per_layer_transform_equals_the_transform_on_each_slice():
    import optax

    from vgbench import optimizers

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"w": jax.random.normal(keys[0], (3, 6, 5)), "b": jax.random.normal(keys[1], (3, 5))}
    grads = {"w": 5 * jax.random.normal(keys[2], (3, 6, 5)), "b": jax.random.normal(keys[3], (3, 5))}
    inner = optax.adaptive_grad_clip(0.1)
    clip = optimizers.per_layer(inner, {"w": 1, "b": 1})
    out, _ = clip.update(grads, clip.init(params), params)
    for layer in range(3):
        one = jax.tree_util.tree_map(lambda a: a[layer], (grads, params))
        expected, _ = inner.update(one[0], inner.init(one[1]), one[1])
        for k in ("w", "b"):
            np.testing.assert_allclose(out[k][layer], expected[k], rtol=1e-6, err_msg=k)
    pooled, _ = inner.update(grads, inner.init(params), params)   # units across layers
    assert not np.allclose(pooled["b"], out["b"])

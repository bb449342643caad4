"""MNIST-1D tasks: layouts, fixed splits, the package's generator (deterministic, offline), bad arguments."""

import random
import socket
import urllib.request

import jax
import numpy as np
import pytest

from vgbench import record, tasks, train
from vgbench.spec import RunSpec
from vgbench.tasks import mnist1d as m1d

SMALL = dict(num_samples=200)   # a small generator run for the tests that regenerate


@pytest.mark.parametrize("model, depth, shape", [("mlp", 2, (40, 1)), ("cnn", 3, (40, 1)),
                                                 ("rnn", 1, (40, 1))])
@pytest.mark.parametrize("name", ["mnist1d", "mnist1d_shuffled"])
def test_layouts_shapes_dtypes_and_split_sizes(name, model, depth, shape):
    task = tasks.make(RunSpec(task=name, model=model, depth=depth))
    assert task.input_shape == shape and task.output_dim == 10
    sizes = {"eval_train": 3600, "eval_val": 400, "eval_test": 1000}
    for split, n in sizes.items():
        x, y = getattr(task, split)
        assert x.shape == (n, *shape) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int32
        assert set(np.unique(y)) == set(range(10))
    x, y = task.sample(jax.random.PRNGKey(0), 7)
    assert x.shape == (7, *shape) and x.dtype == np.float32 and y.dtype == np.int32
    # a batch is drawn from the training split
    train_rows = {r.tobytes() for r in task.eval_train[0].reshape(3600, -1)}
    assert all(r.tobytes() in train_rows for r in np.asarray(x).reshape(7, -1))
    assert task.baseline == pytest.approx(np.log(10), abs=0.01)   # near-balanced classes
    assert task.info["args"]["shuffle_seq"] == (name == "mnist1d_shuffled")
    assert task.info["split"] == {"train": 3600, "val": 400, "test": 1000, "val_fraction": 0.1}


def test_splits_are_the_packages_train_and_test_with_validation_carved_from_train():
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())      # the package itself, default arguments
    task = tasks.make(RunSpec(task="mnist1d", input_scale=2.0))
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = task.eval_train, task.eval_val, task.eval_test
    x_tr, x_va, x_te = (a[..., 0] for a in (x_tr, x_va, x_te))   # one-channel signals
    np.testing.assert_allclose(x_te, 2.0 * reference["x_test"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_te, reference["y_test"])
    # train and validation are disjoint and together are the package's 4,000 training signals,
    # the validation split a fixed 10 % of them
    from vgbench.tasks.classification import carve_validation

    keep, held = carve_validation(4000, fraction=0.1)
    assert len(keep) == 3600 and len(held) == 400 and not set(keep) & set(held)
    np.testing.assert_allclose(x_tr, 2.0 * reference["x"][keep], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x_va, 2.0 * reference["x"][held], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_tr, reference["y"][keep])
    np.testing.assert_array_equal(y_va, reference["y"][held])
    # no signal appears in two splits (the generator makes no exact duplicates)
    rows = [{r.tobytes() for r in a} for a in (x_tr, x_va, x_te)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]


def test_shuffled_variant_is_the_same_signals_with_positions_in_one_fixed_order():
    plain = tasks.make(RunSpec(task="mnist1d")).eval_test
    shuffled = tasks.make(RunSpec(task="mnist1d_shuffled")).eval_test
    np.testing.assert_array_equal(plain[1], shuffled[1])
    # each shuffled position is one plain position, the same for every signal
    match = [int(np.argmin(np.square(plain[0] - shuffled[0][:, [j]]).sum(0))) for j in range(40)]
    assert sorted(match) == list(range(40)) and match != list(range(40))
    np.testing.assert_array_equal(plain[0][:, match], shuffled[0])


def test_generator_is_deterministic_for_a_seed_and_leaves_global_generators_alone():
    m1d._generate.cache_clear()
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    first = m1d.generate(**SMALL)
    assert np.random.rand() == expect_np and random.random() == expect_py
    m1d._generate.cache_clear()
    again = m1d.generate(**SMALL)
    assert first is not again
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], again[key])
    other = m1d.generate(**SMALL, seed=7)
    assert not np.allclose(first["x"], other["x"])
    assert first["x"].shape == (160, 40) and first["x_test"].shape == (40, 40)
    assert m1d.generate(**SMALL) is again                          # cached in the process
    with pytest.raises(ValueError):
        first["x"][0, 0] = 1.0                                       # the cache is read-only


def test_generation_never_touches_the_network(monkeypatch):
    import mnist1d.data
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError("network access during MNIST-1D generation")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)   # the package's download path
    m1d._generate.cache_clear()
    try:
        task = tasks.make(RunSpec(task="mnist1d_shuffled", model="cnn", depth=3))
        assert task.eval_test[0].shape == (1000, 40, 1)
    finally:
        m1d._generate.cache_clear()


@pytest.mark.parametrize("overrides, words", [
    ({"num_sample": 100}, ["unknown argument 'num_sample'", "did you mean 'num_samples'",
                           "final_seq_length"]),
    ({"url": "http://example.org/x.pkl"}, ["unknown argument 'url'", "always generated"]),
    ({"padding": [60, 36]}, ["padding must be two ints 0 <= low <= high"]),
    ({"train_split": 1.5}, ["train_split must be in (0, 1)"]),
    ({"num_samples": "5000"}, ["num_samples must be an int"]),
    ({"shuffle_seq": 1}, ["shuffle_seq must be true or false"]),
    ({"iid_noise_scale": -0.1, "seed": -1}, ["iid_noise_scale must be >= 0", "seed must be >= 0"]),
])
def test_bad_generator_arguments_get_one_clear_error(overrides, words):
    with pytest.raises(ValueError) as err:
        m1d.generate(**overrides)
    message = str(err.value)
    assert message.startswith("mnist1d generator: ")
    for word in words:
        assert word in message


def test_record_states_the_generator_and_its_arguments():
    spec = RunSpec(task="mnist1d", depth=2, width=8, batch_size=16, steps=4, log_every=2)
    program, raw = train.train(spec, [0])
    rec = record.build_record(spec, [0], raw.outputs, task=program.task,
                              layer_names=program.model.layer_names, compile_s=raw.compile_s,
                              run_s=raw.run_s)
    info = rec["task_info"]
    assert info["generator"] == "mnist1d.data.make_dataset"
    assert info["package"].startswith("mnist1d 0.0.2")
    assert info["args"] == {**m1d.GENERATOR_ARGS, "padding": [36, 60]}
    assert 0.0 <= rec["metrics"]["final_test_accuracy"][0] <= 1.0
    # tasks without generator arguments add no field
    digits = RunSpec(task="digits", depth=2, width=8, batch_size=16, steps=0, log_every=2)
    program, raw = train.train(digits, [0])
    rec = record.build_record(digits, [0], raw.outputs, task=program.task,
                              layer_names=program.model.layer_names, compile_s=0.0, run_s=0.0)
    assert "task_info" not in rec

"""Sequence tasks: shapes, marker and symbol placement, and the trivial baselines by Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgbench import tasks
from vgbench.spec import RunSpec
from vgbench.tasks import sequence

KEY = jax.random.PRNGKey(0)


def make(task, **changes):
    return tasks.make(RunSpec(task=task, model="rnn", **changes))


@pytest.mark.parametrize("name,seq_len,shape,out_dim,target_metric,higher", [
    ("adding", 12, (12, 2), 1, "loss", False),
    ("copy", 7, (27, 10), 10, "accuracy", True),
    ("temporal_order", 20, (20, 8), 4, "accuracy", True),
    ("seq_digits", 12, (64, 1), 10, "accuracy", True),
    ("perm_digits", 12, (64, 1), 10, "accuracy", True),
])
def test_shapes_targets_and_fixed_evaluation_sets(name, seq_len, shape, out_dim, target_metric,
                                                  higher):
    task = make(name, seq_len=seq_len)
    assert task.input_shape == shape and task.output_dim == out_dim
    assert task.target_metric == target_metric and task.higher_is_better is higher
    x, y = task.sample(KEY, 5)
    assert x.shape == (5, *shape) and x.dtype == jnp.float32
    assert y.shape == ((5, shape[0]) if name == "copy" else (5,))
    assert task.eval_test[0].shape[1:] == shape
    # the evaluation sets never depend on the run's seed, and sampling is a pure function
    again = make(name, seq_len=seq_len, lr=0.5)
    np.testing.assert_array_equal(task.eval_test[0], again.eval_test[0])
    np.testing.assert_array_equal(task.eval_val[0], again.eval_val[0])
    np.testing.assert_array_equal(np.asarray(x), np.asarray(task.sample(KEY, 5)[0]))
    # validation is a stream of its own: no sequence of it is a test or training-side sequence
    flat = [{r.tobytes() for r in np.asarray(s[0]).reshape(len(s[0]), -1)}
            for s in (task.eval_train, task.eval_val, task.eval_test)]
    if name not in ("seq_digits", "perm_digits"):   # those use the digits split (tested there)
        assert not (flat[1] & flat[2]) and not (flat[1] & flat[0])
    assert name in tasks.TASKS and tasks.TASKS.summary(name)


def test_adding_markers_one_per_half_and_target_is_their_sum():
    length = 16
    x, y = make("adding", seq_len=length).sample(KEY, 2000)
    values, marker = np.asarray(x[..., 0]), np.asarray(x[..., 1])
    assert np.all(marker[:, :length // 2].sum(axis=1) == 1)
    assert np.all(marker[:, length // 2:].sum(axis=1) == 1)
    assert set(np.unique(marker)) == {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(y), (values * marker).sum(axis=1), rtol=1e-6)
    # every position of each half is used
    assert len(np.unique(np.argmax(marker[:, :length // 2], axis=1))) == length // 2
    assert 0.0 <= values.min() and values.max() <= 1.0


def test_adding_baselines_by_monte_carlo():
    task = make("adding", seq_len=20)
    x, y = task.sample(KEY, 200_000)
    y = np.asarray(y, np.float64)
    assert task.baseline == pytest.approx(1 / 6)
    assert np.mean((1.0 - y) ** 2) == pytest.approx(1 / 6, rel=0.01)     # predict 1 always
    later = np.asarray(x[:, 10:, 0] * x[:, 10:, 1]).sum(axis=1)            # remember u_b only
    assert np.mean((later + 0.5 - y) ** 2) == pytest.approx(1 / 12, rel=0.01)
    out = jnp.ones((4, 1))
    assert float(task.loss(out, jnp.full((4,), 1.5))) == pytest.approx(0.25)


def test_copy_layout_and_memoryless_baseline_by_monte_carlo():
    length = 5
    task = make("copy", seq_len=length)
    x, y = task.sample(KEY, 4000)
    tokens, y = np.argmax(np.asarray(x), axis=-1), np.asarray(y)
    total = length + 20
    assert tokens.shape == (4000, total)
    assert np.all(tokens[:, :10] < 8)                                     # 10 symbols from 8
    assert np.all(tokens[:, 10:10 + length - 1] == sequence.COPY_BLANK)   # T - 1 blanks
    assert np.all(tokens[:, length + 9] == sequence.COPY_DELIMITER)
    assert np.all(tokens[:, length + 10:] == sequence.COPY_BLANK)         # 10 blanks
    assert np.all(y[:, :length + 10] == sequence.COPY_BLANK)
    np.testing.assert_array_equal(y[:, length + 10:], tokens[:, :10])
    # memoryless: blank for certain, then uniform over the 8 symbols
    logits = np.full((4000, total, 10), -1e9, np.float32)
    logits[:, :length + 10, sequence.COPY_BLANK] = 0.0
    logits[:, length + 10:, :8] = 0.0
    metrics = task.metrics(jnp.asarray(logits), jnp.asarray(y))
    expected = 10 * math.log(8) / (length + 20)
    assert task.baseline == pytest.approx(expected)
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    perfect = jax.nn.one_hot(y, 10) * 50.0
    assert float(task.metrics(perfect, jnp.asarray(y))["accuracy"]) == 1.0


def test_temporal_order_two_relevant_symbols_in_their_windows():
    length = 50
    task = make("temporal_order", seq_len=length)
    x, y = task.sample(KEY, 4000)
    tokens, y = np.argmax(np.asarray(x), axis=-1), np.asarray(y)
    assert np.all(tokens[:, 0] == sequence.ORDER_B) and np.all(tokens[:, -1] == sequence.ORDER_E)
    relevant = (tokens == 4) | (tokens == 5)
    assert np.all(relevant.sum(axis=1) == 2)
    (lo1, hi1), (lo2, hi2) = sequence.order_positions(length)
    pos = np.sort(np.nonzero(relevant)[1].reshape(-1, 2), axis=1)
    assert np.all((lo1 <= pos[:, 0]) & (pos[:, 0] <= hi1) & (lo2 <= pos[:, 1]) & (pos[:, 1] <= hi2))
    first, second = tokens[np.arange(4000), pos[:, 0]] - 4, tokens[np.arange(4000), pos[:, 1]] - 4
    np.testing.assert_array_equal(y, 2 * first + second)    # XX, XY, YX, YY
    freq = np.bincount(y, minlength=4) / len(y)
    assert -np.sum(freq * np.log(freq)) == pytest.approx(task.baseline, abs=0.01)
    assert task.baseline == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="seq_len >= 10"):
        make("temporal_order", seq_len=5)


def test_pixel_digits_read_every_pixel_and_perm_digits_permutes_them():
    plain, perm = make("seq_digits", seq_len=300), make("perm_digits")
    xs, xp = np.asarray(plain.eval_test[0])[..., 0], np.asarray(perm.eval_test[0])[..., 0]
    np.testing.assert_array_equal(plain.eval_test[1], perm.eval_test[1])
    np.testing.assert_allclose(np.sort(xs, axis=1), np.sort(xp, axis=1))
    assert not np.allclose(xs, xp)
    # one fixed permutation for every image
    order = np.random.default_rng(sequence.PERMUTATION_SEED).permutation(64)
    np.testing.assert_allclose(xs[:, order], xp)
    assert plain.baseline == pytest.approx(math.log(10), abs=0.01)

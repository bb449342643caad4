"""Long-dependency sequence tasks for recurrent models, generated on the fly from a seed.

Every task gives inputs of shape ``[B, T, channels]`` (time second). Targets are one per
sequence (``[B]``) except for ``copy``, whose targets carry a time axis (``[B, T + 20]``); the
recurrent model reads that from the targets' rank and then emits one output per step.
Evaluation sets (a training-side set, the validation set and the test set) are drawn once from
fixed keys of their own, so they never depend on the run's seed and never share a sequence's
key with each other or with a training batch.

=============== ======================== ================================== ===================
task            T                        trivial baseline                   target
=============== ======================== ================================== ===================
adding          seq_len                  1/6 (predict 1; MSE)               test loss <= 0.05
copy            seq_len + 20             10 ln 8 / (T + 20) (cross-entropy) recall acc >= 0.9
temporal_order  seq_len                  ln 4 (cross-entropy)               accuracy >= 0.9
seq_digits      64 (seq_len is ignored)  label entropy ~ ln 10              accuracy >= 0.9
perm_digits     64 (seq_len is ignored)  label entropy ~ ln 10              accuracy >= 0.9
=============== ======================== ================================== ===================
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vgbench.tasks.base import Task, classification_metrics, mse, register_task, softmax_xent

EVAL_SIZE = 512            # sequences in each fixed evaluation set
EVAL_KEYS = (1, 3, 2)      # fixed keys of the training-side, validation and test evaluation sets
ADDING_TARGET = 0.05       # below the 1/12 plateau of a model that remembers one value only
SEQUENCE_TARGET = 0.9      # accuracy target of the classification-style tasks
COPY_SYMBOLS, COPY_LENGTH = 8, 10
COPY_BLANK, COPY_DELIMITER = COPY_SYMBOLS, COPY_SYMBOLS + 1
ORDER_SYMBOLS = 8          # a b c d (distractors), X Y (relevant), B E (start and end)
ORDER_X, ORDER_B, ORDER_E = 4, 6, 7
DIGITS_LENGTH = 64


def _fixed_sets(sample) -> dict[str, tuple]:
    """{"eval_train", "eval_val", "eval_test"}: EVAL_SIZE sequences each, from fixed keys, as numpy."""
    return {name: tuple(np.asarray(a) for a in sample(jax.random.PRNGKey(k), EVAL_SIZE))
            for name, k in zip(("eval_train", "eval_val", "eval_test"), EVAL_KEYS)}


def _need(spec, minimum: int, task: str) -> int:
    if spec.seq_len < minimum:
        raise ValueError(f"task {task!r} needs seq_len >= {minimum}, got {spec.seq_len}")
    return spec.seq_len


# ---------------------------------------------------------------------------- adding

def adding_marker_positions(key, batch_size: int, length: int):
    """One position uniform in the first half [0, T//2) and one in the second [T//2, T)."""
    k1, k2 = jax.random.split(key)
    half = length // 2
    first = jax.random.randint(k1, (batch_size,), 0, half)
    second = jax.random.randint(k2, (batch_size,), half, length)
    return first, second


def adding(spec) -> Task:
    """Adding problem: output the sum of the two marked values of a length-T sequence (Hochreiter & Schmidhuber 1997).

    Channel 0 holds values u_t ~ U[0, 1], channel 1 a marker that is 1 at one position in the
    first half and one in the second half; the target is y = u_a + u_b, the loss is the MSE.

    Trivial baseline: an input-blind predictor c has expected loss E[(y - c)^2] = Var(y) +
    (E[y] - c)^2, smallest at c = E[y] = 1, where it is Var(u_a) + Var(u_b) = 2/12 = 1/6.
    A model that remembers only the later marked value predicts u_b + 1/2 and is left with
    Var(u_a) = 1/12: the plateau between "nothing learnt" and "the dependency learnt".
    Target: test loss <= 0.05, below that plateau, so reaching it proves that information
    from the first half crossed at least T/2 steps.
    """
    length = _need(spec, 2, "adding")
    scale = spec.input_scale

    def sample(key, batch_size):
        k_val, k_pos = jax.random.split(key)
        values = jax.random.uniform(k_val, (batch_size, length), jnp.float32)
        first, second = adding_marker_positions(k_pos, batch_size, length)
        steps = jnp.arange(length)
        marker = ((steps == first[:, None]) | (steps == second[:, None])).astype(jnp.float32)
        target = jnp.sum(values * marker, axis=1)
        return scale * jnp.stack([values, marker], axis=-1), target

    def loss(out, y):
        return mse(out[..., 0], y)

    def metrics(out, y):
        return {"loss": loss(out, y)}

    eval_sets = _fixed_sets(sample)
    return Task(name="adding", input_shape=(length, 2), output_dim=1, sample=sample, loss=loss,
                metrics=metrics, **eval_sets, baseline=1.0 / 6.0,
                target_metric="loss", target=ADDING_TARGET, higher_is_better=False)


# ---------------------------------------------------------------------------- copy memory

def copy_baseline(length: int) -> float:
    """Cross-entropy of the memoryless strategy: blanks, then uniform over 8 for 10 steps."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (length + 2 * COPY_LENGTH)


def copy(spec) -> Task:
    """Copy memory: recall 10 symbols from 8 after T steps (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    Input (one-hot over 8 symbols, blank, delimiter), length T + 20: the 10 symbols, T - 1
    blanks, the delimiter, 10 blanks. Target: blanks for T + 10 steps, then the 10 symbols.
    The loss is the cross-entropy averaged over all T + 20 steps, so the memoryless strategy
    (blanks, then uniform guesses) scores 10 ln 8 / (T + 20). ``accuracy`` is the recall
    accuracy over the 10 output symbols only (chance 1/8); the target is accuracy >= 0.9.
    """
    length = _need(spec, 1, "copy")
    total = length + 2 * COPY_LENGTH
    scale = spec.input_scale
    classes = COPY_SYMBOLS + 2

    def sample(key, batch_size):
        symbols = jax.random.randint(key, (batch_size, COPY_LENGTH), 0, COPY_SYMBOLS)
        blanks = jnp.full((batch_size, length - 1), COPY_BLANK, jnp.int32)
        delimiter = jnp.full((batch_size, 1), COPY_DELIMITER, jnp.int32)
        tail = jnp.full((batch_size, COPY_LENGTH), COPY_BLANK, jnp.int32)
        tokens = jnp.concatenate([symbols, blanks, delimiter, tail], axis=1)
        lead = jnp.full((batch_size, length + COPY_LENGTH), COPY_BLANK, jnp.int32)
        target = jnp.concatenate([lead, symbols], axis=1)
        return scale * jax.nn.one_hot(tokens, classes, dtype=jnp.float32), target

    def metrics(logits, labels):
        recalled = jnp.argmax(logits[:, -COPY_LENGTH:], axis=-1) == labels[:, -COPY_LENGTH:]
        return {"loss": softmax_xent(logits, labels),
                "accuracy": jnp.mean(recalled.astype(jnp.float32))}

    eval_sets = _fixed_sets(sample)
    return Task(name="copy", input_shape=(total, classes), output_dim=classes, sample=sample,
                loss=softmax_xent, metrics=metrics, **eval_sets,
                baseline=copy_baseline(length), target_metric="accuracy", target=SEQUENCE_TARGET,
                higher_is_better=True)


# ---------------------------------------------------------------------------- temporal order

def order_positions(length: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ranges (inclusive) of the two relevant positions: [0.1 T, 0.2 T] and [0.5 T, 0.6 T]."""
    first = (max(1, int(0.1 * length)), max(1, int(0.2 * length)))
    second = (int(0.5 * length), min(length - 2, int(0.6 * length)))
    return first, second


def temporal_order(spec) -> Task:
    """Temporal order of two relevant symbols among distractors (Hochreiter & Schmidhuber 1997, task 6a).

    A sequence starts with B and ends with E; every other step is a random distractor from
    {a, b, c, d} except two, at t1 in [0.1 T, 0.2 T] and t2 in [0.5 T, 0.6 T], which hold X or
    Y. The class is the pair (XX, XY, YX, YY): 4 equally likely classes, so the input-blind
    predictor scores ln 4. Target: test accuracy >= 0.9.
    """
    length = _need(spec, 10, "temporal_order")
    (lo1, hi1), (lo2, hi2) = order_positions(length)
    scale = spec.input_scale

    def sample(key, batch_size):
        k_dis, k_t1, k_t2, k_cls = jax.random.split(key, 4)
        tokens = jax.random.randint(k_dis, (batch_size, length), 0, 4)
        t1 = jax.random.randint(k_t1, (batch_size,), lo1, hi1 + 1)
        t2 = jax.random.randint(k_t2, (batch_size,), lo2, hi2 + 1)
        label = jax.random.randint(k_cls, (batch_size,), 0, 4)
        steps = jnp.arange(length)
        tokens = jnp.where(steps == t1[:, None], ORDER_X + label[:, None] // 2, tokens)
        tokens = jnp.where(steps == t2[:, None], ORDER_X + label[:, None] % 2, tokens)
        tokens = tokens.at[:, 0].set(ORDER_B).at[:, -1].set(ORDER_E)
        return scale * jax.nn.one_hot(tokens, ORDER_SYMBOLS, dtype=jnp.float32), label

    eval_sets = _fixed_sets(sample)
    return Task(name="temporal_order", input_shape=(length, ORDER_SYMBOLS), output_dim=4,
                sample=sample, loss=softmax_xent, metrics=classification_metrics,
                **eval_sets, baseline=math.log(4),
                target_metric="accuracy", target=SEQUENCE_TARGET, higher_is_better=True)


# ---------------------------------------------------------------------------- pixel digits

PERMUTATION_SEED = 0


def _pixel_digits(name: str, spec, permute: bool) -> Task:
    """The digits split of tasks.classification, read one pixel per step (T = 64, 1 channel)."""
    from vgbench.tasks.classification import _label_entropy, digits_split

    x, y, train, val, test = digits_split()
    # one scalar mean and scale (from the training pixels): a pixel keeps its meaning at every step
    mean, std = x[train].mean(), x[train].std()
    x = spec.input_scale * (x - mean) / std
    if permute:
        x = x[:, np.random.default_rng(PERMUTATION_SEED).permutation(DIGITS_LENGTH)]
    x = x.reshape(len(x), DIGITS_LENGTH, 1)
    train_x, train_y = jnp.asarray(x[train]), jnp.asarray(y[train])
    n = len(train)

    def sample(key, batch_size):
        idx = jax.random.randint(key, (batch_size,), 0, n)
        return train_x[idx], train_y[idx]

    return Task(name=name, input_shape=(DIGITS_LENGTH, 1), output_dim=10, sample=sample,
                loss=softmax_xent, metrics=classification_metrics,
                eval_train=(x[train], y[train]), eval_val=(x[val], y[val]),
                eval_test=(x[test], y[test]),
                baseline=_label_entropy(y[train], 10), target_metric="accuracy",
                target=SEQUENCE_TARGET, higher_is_better=True)


def seq_digits(spec) -> Task:
    """Sequential digits: 8x8 digits one pixel per step, T = 64, seq_len ignored (Le et al. 2015, small)."""
    return _pixel_digits("seq_digits", spec, permute=False)


def perm_digits(spec) -> Task:
    """Permuted sequential digits: pixels in one fixed random order, T = 64 (seq_len is ignored; Le et al. 2015)."""
    return _pixel_digits("perm_digits", spec, permute=True)


for _make in (adding, copy, temporal_order, seq_digits, perm_digits):
    register_task(_make.__name__, _make)

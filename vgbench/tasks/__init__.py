"""Tasks: data, loss, trivial baseline and success target, generated locally (no downloads).

A task entry is a factory ``make(spec) -> Task``; the :class:`Task` it returns is a bundle of
pure functions plus small evaluation sets::

    sample(key, batch_size) -> (x, y)         one training batch, inside the compiled program
    loss(out, y) -> scalar                    mean loss of model outputs ``out``
    metrics(out, y) -> {"loss": .., ...}      evaluation metrics (scalars)

and three fixed evaluation sets, ``eval_train`` (a slice of the training data), ``eval_val``
and ``eval_test``, pairwise disjoint and independent of the run's seed. Anything a study
selects (the learning rate of an entry, an early-stopping point) reads ``eval_val`` only;
``eval_test`` is reported, never used to choose.

Inputs come in the task's natural shape (``input_shape``: an image ``(H, W, C)``, a signal or
sequence ``(T, C)``, a vector ``(d,)``), whichever model reads them: a model views them in
its own layout (:func:`vgbench.models.laid_out`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vgbench.registry import Registry


class Task(NamedTuple):
    """A training task (see the module docstring)."""

    name: str
    input_shape: tuple[int, ...]   # per example, natural: (8, 8, 1), (T, channels), (d,)
    output_dim: int
    sample: Callable[[jax.Array, int], tuple[Any, Any]]
    loss: Callable[[Any, Any], jax.Array]
    metrics: Callable[[Any, Any], dict[str, jax.Array]]
    eval_train: tuple[Any, Any]
    eval_val: tuple[Any, Any]      # the validation split: the only one selection reads
    eval_test: tuple[Any, Any]
    baseline: float                # loss of the trivial (input-blind) predictor
    target_metric: str             # key of ``metrics`` the success target refers to
    target: float
    higher_is_better: bool
    info: dict | None = None       # how the data were made (generator, version, arguments):
                                   # the run record stores it as ``task_info``


TASKS: Registry[Callable] = Registry("task")


def register_task(name: str, make: Callable, *, doc: str | None = None,
                  origin: str = "vgbench") -> Callable:
    """Register a task factory ``make(spec) -> Task`` under ``name``."""
    if not callable(make):
        raise TypeError(f"task {name!r}: make must be callable")
    return TASKS.register(name, make, doc=doc, origin=origin)


def make(spec) -> Task:
    """Build the task a run spec names."""
    task = TASKS.get(spec.task)(spec)
    if not isinstance(task, Task):
        raise TypeError(f"task {spec.task!r}: its factory must return a vgbench.tasks.Task, "
                        f"got {type(task).__name__}")
    if spec.target is not None:
        task = task._replace(target=float(spec.target))
    return task


# ---------------------------------------------------------------------------- shared losses

def softmax_xent(logits, labels):
    """Mean cross-entropy of integer labels under softmax(logits)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def classification_metrics(logits, labels):
    return {"loss": softmax_xent(logits, labels),
            "accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))}


def mse(pred, target):
    """Mean squared error."""
    return jnp.mean(jnp.square(pred - target))


# the built-in tasks register themselves on import
from vgbench.tasks import classification as _classification  # noqa: E402,F401
from vgbench.tasks import sequence as _sequence  # noqa: E402,F401
from vgbench.tasks import mnist1d as _mnist1d  # noqa: E402,F401

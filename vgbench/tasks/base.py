"""What a task is: the :class:`Task` bundle, the task registry and the shared losses.

The built-in tasks (:mod:`vgbench.tasks.classification`, ``sequence``, ``mnist1d``) and
plugins import this module to register themselves; :mod:`vgbench.tasks` imports them and
builds tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vgbench.registry import Registry


class Task(NamedTuple):
    """A training task (see :mod:`vgbench.tasks`)."""

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
                  options: dict | None = None, origin: str = "vgbench") -> Callable:
    """Register a task factory ``make(spec) -> Task`` under ``name``.

    ``options``: the task's own hyperparameters, name -> default (see
    :mod:`vgbench.registry`); ``make`` receives them as keyword arguments.
    """
    if not callable(make):
        raise TypeError(f"task {name!r}: make must be callable")
    return TASKS.register(name, make, doc=doc, origin=origin, options=options)


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

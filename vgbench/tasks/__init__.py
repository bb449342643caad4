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

# the built-in tasks register themselves on import
from vgbench.tasks import classification as _classification  # noqa: F401
from vgbench.tasks import mnist1d as _mnist1d  # noqa: F401
from vgbench.tasks import sequence as _sequence  # noqa: F401
from vgbench.tasks.base import TASKS, Task, classification_metrics, mse, register_task, softmax_xent  # noqa: F401


def make(spec) -> Task:
    """Build the task a run spec names."""
    task = TASKS.get(spec.task)(spec)
    if not isinstance(task, Task):
        raise TypeError(f"task {spec.task!r}: its factory must return a vgbench.tasks.Task, "
                        f"got {type(task).__name__}")
    if spec.target is not None:
        task = task._replace(target=float(spec.target))
    return task

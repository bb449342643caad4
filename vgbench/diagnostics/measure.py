"""What a log point records: the diagnostic step's statistics, by the table of
:mod:`vgbench.diagnostics` (the ``step`` and ``probe`` rows; a model's forward statistics come
with its ``apply``)."""

from __future__ import annotations

from vgbench.models.layers import tree_norm


def measure(model, *, loss, grads, params, updates, probe_grads, stats, val, test,
            metric: str) -> dict:
    """The log of one diagnostic step.

    ``loss``: the minibatch loss; ``grads``, ``updates``: the step's parameter gradient and the
    update it applies to ``params``; ``probe_grads``: dL/d(probe) of each pre-activation;
    ``stats``: the model's forward statistics; ``val``, ``test``: the task's metrics on the
    evaluation sets; ``metric``: the name of the task's target metric.
    """
    weight_norm = model.per_layer(params)
    return {"loss": loss, "val_loss": val["loss"], "val_metric": val[metric],
            "test_loss": test["loss"], "test_metric": test[metric],
            "grad_global_norm": tree_norm(grads), "grad_norm": model.per_layer(grads),
            "weight_norm": weight_norm,
            "update_ratio": model.per_layer(updates) / weight_norm,
            "weight_samples": model.weight_samples(params),
            **model.probe_stats(probe_grads), **stats}

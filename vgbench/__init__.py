"""vgbench: a JAX benchmark suite for the vanishing gradient problem and its mitigations.

The public extension API is one ``register_*`` function per axis; a plugin file calls them.
Names are imported lazily so that the reporter (``vgbench.report``) never pulls in JAX.
"""

import importlib

_EXPORTS = {
    "RunSpec": "vgbench.spec",
    "register_activation": "vgbench.activations",
    "register_initializer": "vgbench.inits",
    "register_model": "vgbench.models",
    "register_cell": "vgbench.models.rnn",
    "register_norm": "vgbench.norms",
    "register_skip": "vgbench.norms",
    "register_clip": "vgbench.optimizers",
    "register_optimizer": "vgbench.optimizers",
    "register_task": "vgbench.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vgbench' has no attribute {name!r}")

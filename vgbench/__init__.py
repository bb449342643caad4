"""vgbench: a JAX benchmark suite for the vanishing gradient problem and its mitigations.

The public extension API is one ``register_*`` function per axis; a plugin file calls them.
Names are imported lazily so that the reporter (``vgbench.report``) never pulls in JAX.

Importing vgbench sets the XLA flags every vgbench process runs with, when JAX has not started
yet: the command, ``python -m vgbench.jacobian``, benchmarks and runner workers alike.
"""

import importlib
import os
import sys

# XLA:CPU's concurrency-optimized scheduler has been seen to deadlock a vmapped GRU step (two or
# more seeds, width >= 64) and the vmapped jacrev of vgbench.jacobian
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def set_xla_flags() -> None:
    """Set vgbench's XLA flags, unless JAX has started or the user set that flag already."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + " " + _CPU_SCHEDULER_FLAG).strip()


set_xla_flags()

_EXPORTS = {
    "RunSpec": "vgbench.spec",
    "register_activation": "vgbench.activations",
    "register_initializer": "vgbench.inits",
    "register_model": "vgbench.models",
    "register_flax_model": "vgbench.models.flax_adapter",
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

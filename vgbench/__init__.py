"""vgbench: a JAX benchmark suite for the vanishing gradient problem and its mitigations.

The public extension API is one ``register_*`` function per axis; a plugin file calls them.
Names are imported lazily so that the reporter (``vgbench.report``) never pulls in JAX.

Importing vgbench sets the XLA flags every vgbench process runs with, when JAX has not started
yet: the command, ``python -m vgbench.jacobian``, benchmarks and runner workers alike. One of
them gives the process one JAX CPU device per core it may use (``VGBENCH_CPU_DEVICES`` sets
the number; a runner's worker processes share the cores): a model that registers
``batch_split=True`` splits each training batch over them (``vgbench.train.batch_split``).
"""

import importlib
import os
import sys

# XLA:CPU's concurrency-optimized scheduler has been seen to deadlock a vmapped GRU step (two or
# more seeds, width >= 64) and the vmapped jacrev of vgbench.jacobian
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


_CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
CPU_DEVICES_ENV = "VGBENCH_CPU_DEVICES"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # no affinity masks on this platform
        return max(1, os.cpu_count() or 1)


def cpu_devices() -> int:
    """JAX CPU devices a vgbench process asks for: ``VGBENCH_CPU_DEVICES`` or its usable cores."""
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not value:
        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{CPU_DEVICES_ENV}={value!r}: expected a positive number of CPU devices")
    return count


_OWN_DEVICES_FLAG = "VGBENCH_XLA_DEVICES_FLAG"   # the device flag vgbench itself added, if any


def set_xla_flags() -> None:
    """Set vgbench's XLA flags, unless JAX has started or the user set that flag already.

    A process started by a vgbench process inherits its XLA_FLAGS: the device count the parent
    added is dropped and decided again here (a runner's workers get their share of the cores
    through ``VGBENCH_CPU_DEVICES``); one the user wrote is kept.
    """
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    inherited = os.environ.get(_OWN_DEVICES_FLAG)
    if inherited and inherited in flags.split():
        flags = " ".join(f for f in flags.split() if f != inherited)
    added = []
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        added.append(_CPU_SCHEDULER_FLAG)
    if _CPU_DEVICES_FLAG not in flags and "JAX_NUM_CPU_DEVICES" not in os.environ:
        added.append(f"{_CPU_DEVICES_FLAG}={cpu_devices()}")
        os.environ[_OWN_DEVICES_FLAG] = added[-1]
    else:
        os.environ.pop(_OWN_DEVICES_FLAG, None)
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


set_xla_flags()

# RunSpec reads the registries (a model's defaults, the valid names) through the resolver this
# module installs; JAX-free to import
from vgbench import configs as _configs  # noqa: E402,F401

_EXPORTS = {
    "RunSpec": "vgbench.spec",
    "register_activation": "vgbench.activations",
    "register_initializer": "vgbench.inits",
    "register_model": "vgbench.models",
    "register_flax_model": "vgbench.models.flax_adapter",
    "register_nnx_model": "vgbench.models.nnx_adapter",
    "register_cell": "vgbench.models.rnn",
    "register_norm": "vgbench.norms",
    "register_skip": "vgbench.norms",
    "register_clip": "vgbench.optimizers",
    "register_optimizer": "vgbench.optimizers",
    "register_task": "vgbench.tasks",
    "tap": "vgbench.monitor",
    "Monitor": "vgbench.monitor",
}
_SUBMODULES = ("monitor",)   # ``vgbench.monitor.Writer`` without importing it first

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"vgbench.{name}")
    raise AttributeError(f"module 'vgbench' has no attribute {name!r}")

"""A gradient monitor inside the user's own jitted training step.

* :func:`tap` marks an intermediate value of any JAX function as a layer (a no-op outside
  the monitor).
* :class:`Monitor` wraps ``loss_fn(params, *args)``: ``monitor(params, *args)`` returns
  ``(loss, grads, stats)`` inside ``jax.jit``, with vgbench's per-layer ``delta_norm``
  (||dL/dh|| at each tap, from zero probes), ``act_rms``, and per parameter group
  ``grad_norm`` and ``weight_norm``; :meth:`Monitor.update_ratio` gives ||ΔW||/||W|| of an
  optimizer's updates. ``Monitor(..., linen=True)`` taps every flax.linen Dense/Conv output.
* :class:`Writer` writes them every N steps to TensorBoard (tensorboardX), CSV and
  optionally W&B, and warns (:class:`GradientProfileWarning`) when vgbench's verdict turns
  vanishing or exploding. :func:`read_scalars` reads the event files back.

flax.nnx modules: call :func:`tap` in the module's ``__call__``; automatic per-layer taps for
nnx are left to the NNX adapter. docs/flax.md ("A monitor inside your own training step").
"""

from vgbench.monitor.stats import GROUP_STATS, LAYER_STATS, STEP_STATS, Monitor, group_by
from vgbench.monitor.taps import linen_taps, tap
from vgbench.monitor.writer import GradientProfileWarning, Writer, profile_warning, read_scalars, tags

__all__ = ["GROUP_STATS", "LAYER_STATS", "STEP_STATS", "GradientProfileWarning", "Monitor", "Writer",
           "group_by", "linen_taps", "profile_warning", "read_scalars", "tags", "tap"]

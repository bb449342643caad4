"""vgbench: a JAX benchmark suite for the vanishing gradient problem and its mitigations.

The public extension API is one ``register_*`` function per axis; a plugin file calls them.
"""

from vgbench.activations import register_activation
from vgbench.inits import register_initializer
from vgbench.models import register_model
from vgbench.norms import register_norm, register_skip
from vgbench.optimizers import register_clip, register_optimizer
from vgbench.spec import RunSpec
from vgbench.tasks import register_task

__all__ = ["RunSpec", "register_activation", "register_initializer", "register_model",
           "register_norm", "register_skip", "register_clip", "register_optimizer",
           "register_task"]

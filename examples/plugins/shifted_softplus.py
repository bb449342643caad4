"""Shifted softplus activation, a plugin written only against vgbench's public API.

ssp(x) = softplus(x) - ln 2 = ln(1 + e^x) - ln 2 (Schütt et al. 2017, SchNet): smooth like
softplus, but ssp(0) = 0, so it does not shift every layer's mean upwards the way softplus
does. Its derivative is the logistic sigmoid: at most 1 (for large x), 1/2 at the origin, and
it tends to 0 only for x -> -inf, so it saturates on one side only.

Use it from a grid file (``plugins = ["shifted_softplus.py"]``) or the CLI
(``vgbench train --plugin examples/plugins/shifted_softplus.py --activation shifted_softplus``).
"""

import math

import jax

import vgbench


def shifted_softplus(x):
    """Shifted softplus ln(1 + e^x) - ln 2: zero at the origin, derivative sigmoid(x) (Schütt et al. 2017)."""
    return jax.nn.softplus(x) - math.log(2.0)


# sup |ssp'| = 1 (saturation counts units whose derivative is below 1 % of it); He init's gain:
# ssp'(0) = 1/2, like a ReLU averaged over both sides, so the ReLU gain 2 is the natural match.
vgbench.register_activation("shifted_softplus", shifted_softplus, derivative_max=1.0, he_gain2=2.0)

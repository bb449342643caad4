"""Delta-orthogonal initialization, a plugin written only against vgbench's public API.

For a convolution kernel of shape (kh, kw, c_in, c_out) (or (k, c_in, c_out) in 1-D) the delta-orthogonal scheme (Xiao et
al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs") puts a random orthogonal
matrix (times the gain ``sigma_w``) on the centre tap and zeros on every other tap, so that
at initialization each convolution is an orthogonal map of the channels at every position:
the input-output Jacobian of a deep tanh CNN near criticality then has all singular values
close to 1, which is what lets Xiao et al. train 10,000-layer vanilla CNNs. For a dense
weight it is the ordinary orthogonal scheme.

Use it from a grid file (``plugins = ["delta_orthogonal.py"]``) with ``init = "delta_orthogonal"``.
"""

import jax
import jax.numpy as jnp

import vgbench


def _orthogonal(key, rows, cols, gain):
    big, small = max(rows, cols), min(rows, cols)
    q, r = jnp.linalg.qr(jax.random.normal(key, (big, small), jnp.float32))
    q = q * jnp.sign(jnp.diagonal(r))
    return gain * (q.T if rows < cols else q)


def delta_orthogonal(key, shape, fan_in, fan_out, hp):
    """Orthogonal (gain sigma_w) on the kernel's centre tap, zeros elsewhere (Xiao et al. 2018)."""
    if len(shape) == 2:
        return _orthogonal(key, shape[0], shape[1], hp.sigma_w)
    if len(shape) not in (3, 4):
        raise ValueError(f"delta_orthogonal: expected a dense (in, out) or conv (k, in, out) or "
                         f"(kh, kw, in, out) weight, got shape {shape}")
    *taps, c_in, c_out = shape
    kernel = jnp.zeros(shape, jnp.float32)
    centre = tuple(k // 2 for k in taps)
    return kernel.at[centre].set(_orthogonal(key, c_in, c_out, hp.sigma_w))


# As a mean-field scheme it has sigma_w^2 = gain^2 on the centre tap (the other taps are 0).
vgbench.register_initializer("delta_orthogonal", delta_orthogonal,
                             mean_field=lambda hp, fan_in, fan_out: (hp.sigma_w ** 2, 0.0))

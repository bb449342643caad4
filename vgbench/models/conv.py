"""The convolution of the CNN models, and the one place that chooses how it is computed.

XLA:CPU's native convolution is slow for the small feature maps and channel counts of this
suite (8x8 digits, length-40 signals, 8-32 channels): a 3x3 conv stack of width 16 trains
about 20x slower through ``lax.conv_general_dilated`` than through the same convolution
written as patches and one matrix product (im2col: the k*k shifted views of the padded input,
concatenated along the channel axis, times the kernel reshaped to (k*k*C_in, C_out)). On GPU
and TPU the backend's convolution (cuDNN and friends) wins, so it is kept there.

The choice is made here only: :func:`conv_method` returns ``"patches"`` on CPU and
``"native"`` elsewhere; the environment variable ``VGBENCH_CONV`` (``patches`` or ``native``)
overrides it, for benchmarks and for checking one against the other. Both give the same
result to float32 rounding (tests/test_conv.py checks values and gradients).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

METHODS = ("patches", "native")
ENV_VAR = "VGBENCH_CONV"

# lax dimension numbers by the number of spatial axes: channels last, kernel (spatial..., I, O)
_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def conv_method() -> str:
    """``"patches"`` on the CPU backend, ``"native"`` on any other, unless ``VGBENCH_CONV`` says."""
    chosen = os.environ.get(ENV_VAR, "").strip().lower()
    if chosen:
        if chosen not in METHODS:
            raise ValueError(f"environment variable {ENV_VAR}={chosen!r}: expected one of "
                             f"{', '.join(METHODS)} (or unset, to choose by backend)")
        return chosen
    return "patches" if jax.default_backend() == "cpu" else "native"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of one spatial axis for ``padding="SAME"``, as lax computes it."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_native(x, w, stride: int = 1):
    """The backend's convolution: ``x`` [N, *spatial, C_in], ``w`` [*kernel, C_in, C_out], SAME."""
    n_spatial = x.ndim - 2
    return jax.lax.conv_general_dilated(x, w, window_strides=(stride,) * n_spatial, padding="SAME",
                                        dimension_numbers=_DIMENSIONS[n_spatial])


def patches_matmul(x, w, stride: int = 1):
    """im2col as plain autodiff sees it: the patches are kept for the backward pass."""
    n_spatial = x.ndim - 2
    kernel = w.shape[:n_spatial]
    pads = [same_padding(x.shape[1 + a], kernel[a], stride) for a in range(n_spatial)]
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_sizes = [-(-x.shape[1 + a] // stride) for a in range(n_spatial)]
    views = []
    for offset in _offsets(kernel):
        index = (slice(None),) + tuple(
            slice(o, o + (n - 1) * stride + 1, stride) for o, n in zip(offset, out_sizes)
        ) + (slice(None),)
        views.append(padded[index])
    # channel index of the patch = (kernel offset, in row-major order) * C_in + c: the order of
    # w.reshape(-1, C_out) for a (*kernel, C_in, C_out) kernel
    patches = jnp.concatenate(views, axis=-1)
    return jnp.dot(patches, w.reshape(-1, w.shape[-1]))


# The backward pass forms the patches again from the input instead of keeping them: they are
# k*k times the size of the input (9x for 3x3), and inside the scan over a CNN's blocks writing
# them out as residuals for the backward pass cost more than the slices that re-form them
# (the training step at depth 33 on digits: 24.3 -> 18.9 ms; benchmarks/perf_cnn.py).
_patches_rematerialized = jax.checkpoint(patches_matmul, static_argnums=(2,))


def conv_patches(x, w, stride: int = 1):
    """The same convolution as im2col: the shifted views concatenated, then one matmul;
    the backward pass forms the patches again instead of keeping them."""
    return _patches_rematerialized(x, w, stride)


def _offsets(kernel):
    if not kernel:
        return [()]
    return [(i, *rest) for i in range(kernel[0]) for rest in _offsets(kernel[1:])]


def conv(x, w, b, stride: int = 1):
    """SAME convolution plus bias, 1-D ([N, W, C]) or 2-D ([N, H, W, C]), by :func:`conv_method`."""
    if x.ndim - 2 not in _DIMENSIONS or w.ndim != x.ndim:
        raise ValueError(f"conv: input {x.shape} and kernel {w.shape} must be [N, W, C] with "
                         f"[K, C_in, C_out], or [N, H, W, C] with [KH, KW, C_in, C_out]")
    method = conv_method()
    out = conv_patches(x, w, stride) if method == "patches" else conv_native(x, w, stride)
    return out + b

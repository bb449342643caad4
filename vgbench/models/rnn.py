"""Recurrent networks: `depth` stacked recurrent layers of `width` units, unrolled with lax.scan.

Layer l reads a sequence u_1..u_T and computes, for t = 1..T,

    xp_t = u_t W_x + b            (the input projection)
    hw_t = h_{t-1} W_h            (the recurrent matmul; all gates fused)
    s_t  = cell(xp_t, hw_t, s_{t-1})      s = (h,) or (c, h); h_0 = c_0 = 0

The top layer's last h_T feeds a linear head (one output per sequence), or every h_t does
when the task's targets carry a time axis (``copy``: one output per step).

Cells are entries of :data:`CELLS` (``register_cell`` adds more): ``rnn`` (Elman, the run's
``activation``: the run config's default is relu, so the classic tanh RNN is
``activation="tanh"``), ``irnn`` (ReLU, identity recurrent init), ``lstm`` and ``gru``. Input and
output weights take the run's ``init``, recurrent weights ``recurrent_init`` (orthogonal by
default; each gate block is initialised on its own, as flax does); ``sigma_w`` is the gain of
the orthogonal, identity and gaussian schemes.

Diagnostics (layers ordered recurrent_1 .. recurrent_depth, output):

* ``delta_norm`` of a recurrent layer: RMS over the batch of ‖∂L/∂h_{1..T}‖, the norm over
  every time step and unit of the layer's hidden states (zero probes are added to each h_t).
* ``time_delta_norm`` [T]: RMS over the batch of ‖∂L/∂h_t‖ of the first recurrent layer (the
  one that reads the input), for every t: from the same probes, in the same backward pass.
* ``gate_mean``: mean forget gate (LSTM) / update gate (GRU) of the first layer; NaN for cells
  without one. ``spectral_radius``: ρ of the first layer's recurrent matrix (for gated cells,
  of the candidate block W_hg / W_hn that carries the state's content).
* ``act_rms``: of the hidden states h; ``saturation``, ``tail_saturation``,
  ``inactive_fraction`` and ``dead_fraction``: of the cell's candidate nonlinearity (the
  activation for Elman cells, tanh for gated ones; the gates' sigmoids are not counted).

Training speed (benchmarks/perf_rnn.py): the backward pass is a hand-written scan
(:func:`fused_recurrence`) that carries only ∂L/∂s_t and leaves the weight gradients to one
large matmul after the scan; gate sigmoids are ½(1 + tanh(x/2)), the LSTM's as one tanh over
all four fused blocks; the input bias rides inside the projection matmul. Cells that read
xp_t + hw_t only (Elman, LSTM) get a narrow input's projection inside the scan's matmul,
[h_{t-1}, u_t, 1] [W_h; W_x; b]; a wide input (a stacked layer's) and the GRU's are projected
for every t at once, one large matmul before the scan. XLA:CPU leaves a fused
kernel unvectorized when it reads one scanned sequence at several column offsets, so the
loops never slice a scanned array: a cell that reads its blocks separately (GRU) gets one
sequence per block. :func:`scan_recurrence` is the plain autodiff reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vgbench import activations, inits
from vgbench.models.base import Model, register_model
from vgbench.models.layers import (
    NAN_STATS,
    Parts,
    layer_stats,
    pick_samples,
    safe_norm,
    stacked_axes,
    stacked_norms,
    tree_norm,
)
from vgbench.registry import Registry, bind_options

UNROLL = 1               # time steps per loop iteration (2 and 4 measured no faster on CPU)
SPECTRAL_SQUARINGS = 20  # rho(W) from ||W^(2^20)||^(2^-20): converged far below 1e-5


# ---------------------------------------------------------------------------- the cell registry

@dataclass(frozen=True)
class Cell:
    """A registered recurrent cell.

    pointwise: ``pointwise(act, cp, xp, hw, state) -> state``, elementwise given ``xp`` (input
      projection plus bias, ``[B, blocks * W]``) and ``hw`` (``h_{t-1} W_h``, same shape);
      ``state`` is a tuple of ``state_size`` arrays ``[B, W]`` whose last one is ``h``.
      ``act`` is the bound activation, ``cp`` the cell's own parameters (see ``extra``).
    blocks: how many W-wide blocks the fused projections have (1 Elman, 4 LSTM, 3 GRU).
    activation: the candidate nonlinearity (its saturation is recorded); None: the run's.
    recurrent_init: an initializer name that overrides the run's ``recurrent_init``.
    bias: ``bias(width, spec) -> [blocks * W]`` initial input bias (LSTM: the forget bias).
    extra: ``extra(width, act) -> dict`` of the cell's own parameters (GRU: the bias of W_hn).
    candidate: ``candidate(act, cp, xp, hw) -> pre-activation`` of the candidate (default xp + hw).
    gate: ``gate(act, cp, xp, hw) -> gate values`` whose mean is ``gate_mean``, or None.
    spectral_block: the block of W_h whose spectral radius is recorded.
    additive: ``pointwise`` reads ``xp`` and ``hw`` only through their sum (Elman, LSTM); the
      fused backward pass then keeps and returns one array where it would keep two, and a
      narrow input's projection runs inside the loop's matmul (:func:`fused_recurrence`).
    """

    pointwise: Callable
    blocks: int
    state_size: int = 1
    activation: str | None = None
    recurrent_init: str | None = None
    bias: Callable | None = None
    extra: Callable | None = None
    candidate: Callable | None = None
    gate: Callable | None = None
    spectral_block: int = 0
    additive: bool = False

    def with_options(self, options: dict) -> Cell:
        """This cell with its options' values given to its functions."""
        return bind_options(self, options, ("pointwise", "bias", "extra", "candidate", "gate"))


CELLS: Registry[Cell] = Registry("cell")


def register_cell(name: str, pointwise: Callable, *, blocks: int, state_size: int = 1,
                  activation: str | None = None, recurrent_init: str | None = None,
                  bias: Callable | None = None, extra: Callable | None = None,
                  candidate: Callable | None = None, gate: Callable | None = None,
                  spectral_block: int = 0, additive: bool = False, doc: str | None = None,
                  options: dict | None = None, origin: str = "vgbench") -> Cell:
    """Register a recurrent cell for ``model = "rnn"`` under ``name`` (see :class:`Cell`).

    ``options``: the cell's own hyperparameters, name -> default (see
    :mod:`vgbench.registry`); its functions (``pointwise``, ``bias``, ``extra``,
    ``candidate``, ``gate``) receive them as keyword arguments.
    """
    if not callable(pointwise):
        raise TypeError(f"cell {name!r}: pointwise must be callable")
    if blocks < 1 or state_size < 1 or not 0 <= spectral_block < blocks:
        raise ValueError(f"cell {name!r}: need blocks >= 1, state_size >= 1 and "
                         f"0 <= spectral_block < blocks")
    entry = Cell(pointwise=pointwise, blocks=blocks, state_size=state_size, activation=activation,
                 recurrent_init=recurrent_init, bias=bias, extra=extra,
                 candidate=candidate or (lambda act, cp, xp, hw, **options: xp + hw), gate=gate,
                 spectral_block=spectral_block, additive=additive)
    CELLS.register(name, entry, doc=doc if doc is not None else pointwise.__doc__, origin=origin,
                   options=options)
    return entry


def get_cell(name: str) -> Cell:
    return CELLS.get(name)


# ---------------------------------------------------------------------------- built-in cells

def sigmoid(x):
    """σ(x) = ½(1 + tanh(x/2)): one tanh where exp and a division would take two."""
    return 0.5 + 0.5 * jnp.tanh(0.5 * x)


def elman(act, cp, xp, hw, state):
    """Elman RNN h_t = phi(x_t W_x + h_{t-1} W_h + b), phi the run's activation (Elman 1990)."""
    return (act.apply(xp + hw, cp.get("act")),)


def lstm(act, cp, xp, hw, state):
    """LSTM with forget gate, bias `forget_bias` (Hochreiter & Schmidhuber 1997; Gers et al. 2000).

    Gate blocks in the order i, f, g, o of flax.linen.LSTMCell: c' = σ(f) c + σ(i) tanh(g),
    h' = σ(o) tanh(c').
    """
    c, _ = state
    # one tanh over the whole fused pre-activation (sigmoid blocks scaled by 1/2), sliced after
    t = jnp.tanh((xp + hw) * _block_scale(xp.shape[-1] // 4, (0.5, 0.5, 1.0, 0.5)))
    i, f, g, o = jnp.split(t, 4, axis=-1)
    c = (0.5 + 0.5 * f) * c + (0.5 + 0.5 * i) * g
    return c, (0.5 + 0.5 * o) * jnp.tanh(c)


def _block_scale(width, scales):
    """[len(scales) * width]: each block's scale repeated (1/2 where a block is a sigmoid)."""
    return jnp.repeat(jnp.asarray(scales, jnp.float32), width)


def gru(act, cp, xp, hw, state):
    """GRU (Cho et al. 2014) in flax.linen.GRUCell's form: h' = (1 - z) n + z h.

    r = σ(x W_ir + h W_hr + b_r), z = σ(x W_iz + h W_hz + b_z),
    n = tanh(x W_in + b_n + r (h W_hn + b_hn)); z near 1 keeps the state.
    """
    (h,) = state
    x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hw, 3, axis=-1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * (h_n + cp["b_hn"]))
    return (n + z * (h - n),)


def _lstm_bias(width, spec):
    return jnp.zeros((4, width), jnp.float32).at[1].set(spec.forget_bias).reshape(-1)


def _lstm_candidate(act, cp, xp, hw):
    return jnp.split(xp + hw, 4, axis=-1)[2]


def _lstm_forget(act, cp, xp, hw):
    return sigmoid(jnp.split(xp + hw, 4, axis=-1)[1])


def _gru_candidate(act, cp, xp, hw):
    x_r, _, x_n = jnp.split(xp, 3, axis=-1)
    h_r, _, h_n = jnp.split(hw, 3, axis=-1)
    return x_n + sigmoid(x_r + h_r) * (h_n + cp["b_hn"])


def _gru_update(act, cp, xp, hw):
    return sigmoid(jnp.split(xp, 3, axis=-1)[1] + jnp.split(hw, 3, axis=-1)[1])


def _elman_theta(width, act):
    return {"act": act.init_theta(width)}


register_cell("rnn", elman, blocks=1, extra=_elman_theta, additive=True)
register_cell("irnn", elman, blocks=1, activation="relu", recurrent_init="identity", additive=True,
              doc="IRNN: ReLU Elman cell with identity recurrent init (Le, Jaitly & Hinton 2015).")
register_cell("lstm", lstm, blocks=4, state_size=2, activation="tanh", bias=_lstm_bias,
              candidate=_lstm_candidate, gate=_lstm_forget, spectral_block=2, additive=True)
register_cell("gru", gru, blocks=3, activation="tanh",
              extra=lambda width, act: {"b_hn": jnp.zeros((width,), jnp.float32)},
              candidate=_gru_candidate, gate=_gru_update, spectral_block=2)


# ---------------------------------------------------------------------------- the recurrence

def _with_probe(state, probe):
    return state if probe is None else (*state[:-1], state[-1] + probe)


def scan_recurrence(cell: Cell, act, cp, u, w_x, b, w_h, state0, probes=None, *,
                    unroll: int = 1):
    """Hidden states h_1..h_T ``[T, B, W]`` by lax.scan; JAX differentiates the scan itself.

    ``u`` ``[T, B, C]`` is the layer's input, ``w_x`` ``[C, blocks * W]`` and ``b``
    ``[blocks * W]`` its input weights and bias, ``w_h`` ``[W, blocks * W]`` the recurrent
    weights; ``probes`` (``[T, B, W]`` or None) is added to each h_t. Every recurrence takes
    this signature (``make_rnn(recurrence=...)``).
    """
    xp = input_projection(u, w_x, b)

    def step(state, inputs):
        xp_t, probe_t = inputs
        new = _with_probe(cell.pointwise(act, cp, xp_t, state[-1] @ w_h, state), probe_t)
        return new, new[-1]

    return jax.lax.scan(step, tuple(state0), (xp, probes), unroll=unroll)[1]


def fused_recurrence(cell: Cell, act, cp, u, w_x, b, w_h, state0, probes=None, *,
                     unroll: int = UNROLL):
    """Same values as :func:`scan_recurrence`, with a hand-written backward pass.

    Additive cells (Elman, LSTM: they read ``xp_t + hw_t`` only) take the projection of an
    input narrower than the state (C < W: the first layer of every shipped recurrent grid)
    into the loop: z_t = [h_{t-1}, u_t, 1] [W_h; W_x; b], one matmul per step, so the
    [T, B, blocks·W] projection is never written to memory and read back (for a few input
    channels it is bound by that traffic: 3.6 of the LSTM step's 45 ms on CPU at T = 200,
    batch 64, with the projection before the loop; benchmarks/perf_rnn.py). A wide input (a
    stacked layer's, C = W) would double the loop's matmul and measured slower for the Elman
    cell, and the GRU reads ``xp_t`` and ``hw_t`` apart: their projection is one matmul
    before the loop (:func:`input_projection`).

    The forward scan keeps each step's input state s_{t-1} (with u_t and 1 beside h_{t-1}
    where the projection is in the loop) and ``z_t`` (additive cells) or ``hw_t``, not every
    gate; the backward scan carries ∂L/∂s_t, recomputes the cell's elementwise part for its
    vector-Jacobian product, and sends ∂L/∂h_{t-1} through W_h. The weight gradients
    (Σ_t [h_{t-1}, u_t, 1]ᵀ ∂L/∂z_t) are then one matmul over (T, B) after the loop instead of T
    small ones inside it. The cotangent of the probes is ∂L/∂h_t itself.
    """
    return _fused(cell, act, unroll, probes is not None)(cp, u, w_x, b, w_h, tuple(state0),
                                                         probes)


def _split(a, blocks: int):
    return tuple(jnp.split(a, blocks, axis=-1))


def _join(parts):
    return parts if not isinstance(parts, tuple) else jnp.concatenate(parts, axis=-1)


def _with_ones(u):
    """[..., C] -> [..., C + 1]: a constant channel, whose weight is the bias."""
    return jnp.concatenate([u, jnp.ones((*u.shape[:-1], 1), u.dtype)], axis=-1)


def _fused(cell: Cell, act, unroll: int, with_probes: bool):
    pointwise = functools.partial(cell.pointwise, act)
    if cell.additive:  # the backward pass needs z = xp + hw only, and ∂L/∂xp = ∂L/∂hw = ∂L/∂z
        def local(cp, xp_t, hw_t, prev):
            return pointwise(cp, xp_t + hw_t, jnp.zeros((), xp_t.dtype), prev)
    else:
        local = pointwise
    # A cell that reads xp_t and hw_t block by block gets them as one [T, B, W] sequence per
    # block: XLA:CPU does not vectorize a kernel that reads one scanned sequence at several
    # offsets (benchmarks/perf_rnn.py), and splitting once outside the loop is cheap.
    blockwise = functools.partial(_split, blocks=cell.blocks) if not cell.additive else (lambda a: a)

    def inside(u, w_h):
        """Whether the input projection runs inside the loop (see :func:`fused_recurrence`)."""
        return cell.additive and u.shape[-1] < w_h.shape[0]

    def forward(cp, u, w_x, b, w_h, state0, probes, for_backward):
        """h_1..h_T, and for the backward pass each step's input state s_{t-1} (its h_{t-1}
        as ``a_t`` = [h_{t-1}, u_t, 1] where the projection is inside), z_t (additive cells)
        or hw_t, and xp (other cells)."""
        width, fused = w_h.shape[0], inside(u, w_h)
        if fused:
            w = jnp.concatenate([w_h, w_x, b[None]], axis=0)    # [W + C + 1, blocks·W]
            seq = _with_ones(u)
        else:
            w, seq = w_h, blockwise(input_projection(u, w_x, b))

        def step(state, inputs):
            seq_t, probe_t = _join(inputs[0]), inputs[1]
            if fused:
                a = jnp.concatenate([state[-1], seq_t], axis=-1)
                z = a @ w
                new = pointwise(cp, z, jnp.zeros((), z.dtype), state)
            else:
                a = state[-1]
                hw = a @ w
                new = pointwise(cp, seq_t, hw, state)
                z = seq_t + hw if cell.additive else blockwise(hw)
            new = _with_probe(new, probe_t)
            if not for_backward:
                return new, new[-1]
            return new, (state[:-1], a, z)

        last, ys = jax.lax.scan(step, state0, (seq, probes), unroll=unroll)
        if not for_backward:
            return ys
        rest, a, saved = ys
        hs = jnp.concatenate([a[1:, :, :width], last[-1][None]])
        return hs, (rest, a, saved, None if cell.additive else seq)

    @jax.custom_vjp
    def run(cp, u, w_x, b, w_h, state0, probes):
        return forward(cp, u, w_x, b, w_h, state0, probes, False)

    def run_fwd(cp, u, w_x, b, w_h, state0, probes):
        hs, kept = forward(cp, u, w_x, b, w_h, state0, probes, True)
        return hs, (cp, u, w_x, w_h, kept)

    def example_vjp(cp, a, b, prev, d_state):
        _, vjp = jax.vjp(local, cp, a, b, prev)
        return vjp(d_state)

    # per example: ∂L/∂cp stays [B, ...] inside the loop and is summed over the batch after it,
    # so a batch split over devices (vgbench.train.batch_split) adds its halves once, not at
    # every step (one all-reduce per time step cost the split GRU step a third of its time)
    per_example_vjp = jax.vmap(example_vjp,
                               in_axes=(None, 0, None if cell.additive else 0, 0, 0))

    def run_bwd(res, g_hs):
        cp, u, w_x, w_h, (rest, a, saved, xp) = res
        width, fused = w_h.shape[0], inside(u, w_h)
        w_h_t = w_h.T  # transposed once, not at every step
        zero = jnp.zeros((), w_h.dtype)

        def step(carry, inputs):
            d_next, d_cp = carry
            rest_t, a_t, saved_t, xp_t, g_t = inputs
            saved_t, xp_t = _join(saved_t), _join(xp_t)
            prev = (*rest_t, a_t[:, :width] if fused else a_t)
            d_state = (*d_next[:-1], d_next[-1] + g_t)  # total ∂L/∂s_t
            if cell.additive:
                dcp_t, dxp_t, _, d_prev = per_example_vjp(cp, saved_t, zero, prev, d_state)
                dhw_t = dxp_t
            else:
                dcp_t, dxp_t, dhw_t, d_prev = per_example_vjp(cp, xp_t, saved_t, prev, d_state)
            d_prev = (*d_prev[:-1], d_prev[-1] + dhw_t @ w_h_t)
            d_cp = jax.tree_util.tree_map(jnp.add, d_cp, dcp_t)
            outputs = (dxp_t,) if cell.additive else (dxp_t, dhw_t)
            return (d_prev, d_cp), outputs + ((d_state[-1],) if with_probes else ())

        batch = a.shape[1]
        zeros = (tuple(jnp.zeros((batch, width), w_h.dtype) for _ in range(cell.state_size)),
                 jax.tree_util.tree_map(lambda p: jnp.zeros((batch, *p.shape), p.dtype), cp))
        xs = (rest, a, saved, xp, g_hs)
        (d_state0, d_cp), outputs = jax.lax.scan(step, zeros, xs, reverse=True, unroll=unroll)
        d_cp = jax.tree_util.tree_map(lambda p: jnp.sum(p, axis=0), d_cp)
        d_xp = outputs[0]
        if fused:   # Σ_t [h_{t-1}, u_t, 1]ᵀ ∂L/∂z_t: ∂L/∂W_h, ∂L/∂W_x and ∂L/∂b in one matmul
            d_w = _contract_steps(a, d_xp)
            d_w_h = d_w[:width]
            d_u, d_w_x, d_b = _input_grads(d_xp, w_x, d_w[width:])
        else:
            d_hw = d_xp if cell.additive else outputs[1]
            d_w_h = _contract_steps(a, d_hw)                    # Σ_t h_{t-1}ᵀ ∂L/∂hw_t
            d_u, d_w_x, d_b = _input_projection_bwd((u, w_x), d_xp)
        return (d_cp, d_u, d_w_x, d_b, d_w_h, d_state0,
                outputs[-1] if with_probes else None)

    run.defvjp(run_fwd, run_bwd)
    return run


@jax.custom_vjp
def input_projection(u, w_x, b):
    """u [T, B, C] @ w_x [C, K] + b for every step at once, as one matmul.

    The bias rides in the matmul as a row of w_x against a constant input channel: XLA:CPU
    otherwise writes the [T, B, K] product and then reads and writes it again to add b.
    The backward pass is written out as contractions over (T, B): JAX's own transpose of the
    einsum made XLA:CPU copy ∂L/∂xp into a transposed [K, T·B] layout and contract over T·B in
    a slow kernel (27 ms of CPU time against 5 ms at T = 200, batch 64, K = 512;
    benchmarks/perf_rnn.py), and a reshape to T·B rows would merge the batch axis a split
    program lays out over devices (vgbench.train.batch_split) with T, which XLA then gathers.
    """
    return jnp.einsum("tbi,ik->tbk", _with_ones(u), jnp.concatenate([w_x, b[None]], axis=0))


def _input_projection_fwd(u, w_x, b):
    return input_projection(u, w_x, b), (u, w_x)


def _input_projection_bwd(res, d_xp):
    u, w_x = res
    # ∂L/∂w_x and ∂L/∂b in one pass over ∂L/∂xp: the bias is the weight of a constant channel
    return _input_grads(d_xp, w_x, _contract_steps(_with_ones(u), d_xp))


def _input_grads(d_xp, w_x, d_w_xb):
    """(∂L/∂u, ∂L/∂w_x, ∂L/∂b) from ∂L/∂xp and the [C + 1, K] gradient of [w_x; b]."""
    d_u = jnp.einsum("tbk,ck->tbc", d_xp, w_x)                   # dropped for the data input
    return d_u, d_w_xb[:-1], d_w_xb[-1]


def _contract_steps(a, b):
    """Σ over t and b of a[t, b]ᵀ b[t, b]: ``[T, B, I] x [T, B, K] -> [I, K]``."""
    return jax.lax.dot_general(a, b, (((0, 1), (0, 1)), ((), ())))


input_projection.defvjp(_input_projection_fwd, _input_projection_bwd)


def spectral_radius(w, squarings: int = SPECTRAL_SQUARINGS):
    """ρ(W) by Gelfand's formula ρ = lim ‖W^n‖^(1/n), n = 2^squarings, renormalising each square.

    Runs on every backend (jnp.linalg.eigvals is CPU-only); the Frobenius norm overstates the
    spectral one by at most sqrt(W), a factor W^(2^-(squarings+1)) ≈ 1 + 2e-6 here.
    """
    def square(carry, _):
        a, log_scale = carry                   # W^(2^k) = exp(log_scale) a, ‖a‖ = 1
        a2 = jnp.matmul(a, a, precision=jax.lax.Precision.HIGHEST)
        norm = safe_norm(a2)
        a2 = jnp.where(norm > 0, a2 / jnp.where(norm > 0, norm, 1.0), 0.0)
        return (a2, 2.0 * log_scale + jnp.log(norm)), None

    norm = safe_norm(w)
    a = w / jnp.where(norm > 0, norm, 1.0)
    (_, log_scale), _ = jax.lax.scan(square, (a, jnp.log(norm)), None, length=squarings)
    return jnp.exp(log_scale / 2.0 ** squarings)


# ---------------------------------------------------------------------------- the model

def make_rnn(spec, task, *, recurrence: Callable = fused_recurrence,
             cell: Cell | None = None) -> Model:
    """Stacked recurrent layers of cell `cell` (Elman 1990; Hochreiter & Schmidhuber 1997; Cho et al. 2014).

    ``recurrence`` and ``cell`` (default: the spec's) let tests and benchmarks swap in a
    reference implementation.
    """
    if len(task.input_shape) != 2:
        raise ValueError(f"model 'rnn' needs sequence inputs (T, channels); task {task.name!r} "
                         f"gives {task.input_shape}")
    cell = cell or get_cell(spec.cell)
    parts = Parts(spec)
    act = activations.get(cell.activation or spec.activation).bind(spec)
    recurrent_init = inits.get(cell.recurrent_init or spec.recurrent_init)
    (length, channels), width, d_out = task.input_shape, spec.width, task.output_dim
    blocks, n_stack = cell.blocks, spec.depth - 1
    per_step = np.ndim(task.eval_test[1]) >= 2   # targets with a time axis: one output per step

    def block_weights(key, fan_in, weight):
        """[fan_in, blocks * W]: each gate block drawn on its own (orthogonal per block)."""
        ws = [weight(k) for k in jax.random.split(key, blocks)]
        return jnp.concatenate(ws, axis=-1).astype(jnp.float32)

    def layer_init(key, fan_in):
        k_x, k_h = jax.random.split(key)
        w_x = block_weights(k_x, fan_in, lambda k: parts.weight(k, (fan_in, width))[0])
        w_h = block_weights(k_h, width, lambda k: recurrent_init.weight(
            k, (width, width), width, width, parts.hp))
        bias = cell.bias(width, spec) if cell.bias else jnp.zeros((blocks * width,), jnp.float32)
        return {"w_x": w_x, "b": bias, "w_h": w_h,
                "cell": cell.extra(width, act) if cell.extra else {}}

    def init(key):
        k_first, k_stack, k_out = jax.random.split(key, 3)
        stack = jax.vmap(lambda k: layer_init(k, width))(jax.random.split(k_stack, n_stack))
        w, b = parts.weight(k_out, (width, d_out))
        return {"first": layer_init(k_first, channels), "stack": stack,
                "out": {"w": w, "b": b}}, {}

    def layer(p, u, probe, diag):
        """One recurrent layer over a time-major sequence u [T, B, in] -> h [T, B, W]."""
        state0 = tuple(jnp.zeros((u.shape[1], width), u.dtype) for _ in range(cell.state_size))
        h = recurrence(cell, act, p["cell"], u, p["w_x"], p["b"], p["w_h"], state0, probe)
        return h, (layer_diagnostics(p, u, h) if diag else {})

    def layer_diagnostics(p, u, h):
        p, u, h = jax.lax.stop_gradient((p, u, h))
        xp = input_projection(u, p["w_x"], p["b"])
        h_prev = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]])
        hw = jnp.einsum("tbi,ik->tbk", h_prev, p["w_h"])
        theta = p["cell"].get("act")
        pre = cell.candidate(act, p["cell"], xp, hw)
        stats = layer_stats(act, pre, act.apply(pre, theta), theta, h)
        gate = cell.gate(act, p["cell"], xp, hw) if cell.gate else None
        stats["gate_mean"] = jnp.mean(gate) if gate is not None else jnp.float32(jnp.nan)
        k = cell.spectral_block
        stats["spectral_radius"] = spectral_radius(p["w_h"][:, k * width:(k + 1) * width])
        return stats

    def apply(params, state, x, *, train, probes=None):
        diag = probes is not None
        pr = probes if diag else {"first": None, "stack": None, "out": None}
        h, first_stats = layer(params["first"], jnp.swapaxes(x, 0, 1), pr["first"], diag)

        def body(h, xs):
            p, probe = xs
            return layer(p, h, probe, diag)

        h, stack_stats = jax.lax.scan(body, h, (params["stack"], pr["stack"]))
        head = params["out"]
        out = (jnp.einsum("tbw,wc->btc", h, head["w"]) if per_step else h[-1] @ head["w"]) + head["b"]
        stats = {}
        if diag:
            out = out + pr["out"]
            stats = {k: jnp.concatenate([first_stats[k][None], stack_stats[k],
                                         jnp.full((1,), NAN_STATS[k], jnp.float32)])
                     for k in NAN_STATS}
            stats["gate_mean"] = first_stats["gate_mean"]
            stats["spectral_radius"] = first_stats["spectral_radius"]
        return out, state, stats

    def probes(batch_size):
        out_shape = (batch_size, length, d_out) if per_step else (batch_size, d_out)
        return {"first": jnp.zeros((length, batch_size, width), jnp.float32),
                "stack": jnp.zeros((n_stack, length, batch_size, width), jnp.float32),
                "out": jnp.zeros(out_shape, jnp.float32)}

    def sequence_delta(g):
        """RMS over the batch of ‖∂L/∂h_{1..T}‖ from g = ∂(batch-mean L)/∂h, [T, B, W]."""
        return jnp.sqrt(jnp.float32(g.shape[1])) * safe_norm(g)

    def probe_stats(g):
        batch = g["out"].shape[0]
        return {"delta_norm": jnp.concatenate([
                    sequence_delta(g["first"])[None], jax.vmap(sequence_delta)(g["stack"]),
                    (jnp.sqrt(jnp.float32(batch)) * safe_norm(g["out"]))[None]]),
                "time_delta_norm": jnp.sqrt(jnp.float32(batch)) * safe_norm(g["first"], axis=(1, 2))}

    def per_layer(tree):
        return jnp.concatenate([tree_norm(tree["first"])[None], stacked_norms(tree["stack"], n_stack),
                                tree_norm(tree["out"])[None]])

    def weight_samples(params):
        return jnp.concatenate([pick_samples(params["first"]["w_h"])[None],
                                pick_samples(params["stack"]["w_h"], n_stack),
                                pick_samples(params["out"]["w"])[None]])

    names = tuple(f"recurrent_{i + 1}" for i in range(spec.depth)) + ("output",)
    return Model(init=init, apply=apply, layer_names=names, probes=probes,
                 probe_stats=probe_stats, per_layer=per_layer, weight_samples=weight_samples,
                 layer_axes=lambda params: stacked_axes(params, ("stack",)))


def _check(spec) -> None:
    get_cell(spec.cell)
    if spec.norm != "none" or spec.skip != "none":
        raise ValueError(f"model 'rnn' has no normalization or skip connections; got norm="
                         f"{spec.norm!r}, skip={spec.skip!r} (use 'none')")


# the vanilla RNN of the recurrent study: one tanh layer, Xavier init, on the adding task
COST_PER_LAYER_STEP = 6e-5   # seconds per layer and time step, laptop CPU

register_model("rnn", make_rnn, check=_check,
               defaults={"task": "adding", "depth": 1, "activation": "tanh", "init": "xavier_normal"},
               input_layout="channels", describe=("cell", "seq_len"), batch_split=True,
               cost=lambda spec: spec.depth * spec.seq_len * COST_PER_LAYER_STEP)

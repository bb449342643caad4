"""Speed of the recurrent training step: LSTM and GRU at T = 200, hidden 128, batch 64.

One row per cell: the time of a full training step (forward, backward, Adam update) on the
adding task, and the achieved GFLOP/s against a roofline measured in the same process (a
large float32 matmul). FLOPs count the matmuls only (elementwise work is not counted): the
recurrent product h W_h, the input projection x W_x and the head, forward and backward
(3x forward: ∂L/∂h and ∂L/∂W each cost one forward product).

    python benchmarks/perf_rnn.py                 rows of the default implementation
    python benchmarks/perf_rnn.py --compare       and of the plain lax.scan reference

``rnn_rows(roofline_gflops)`` is what benchmarks/perf.py calls for its table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import optax

from vgbench import tasks
from vgbench.models import rnn
from vgbench.spec import RunSpec

SEQ_LEN, WIDTH, BATCH = 200, 128, 64
CELLS = ("lstm", "gru")


def roofline(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n by n x n float32 matmul on the default device."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    best = min(_seconds(lambda: matmul(a)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def step_flops(cell: rnn.Cell, seq_len: int, width: int, batch: int, channels: int,
               outputs: int) -> float:
    """Matmul FLOPs of one training step of a one-layer network (3x the forward products)."""
    k = cell.blocks * width
    forward = 2 * seq_len * batch * (width * k + channels * k) + 2 * batch * width * outputs
    return 3.0 * forward


def plain_lstm(act, cp, xp, hw, state):
    """LSTM written the straightforward way: four slices, jax.nn.sigmoid on each gate."""
    c, _ = state
    i, f, g, o = jnp.split(xp + hw, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return c, jax.nn.sigmoid(o) * jnp.tanh(c)


def plain_gru(act, cp, xp, hw, state):
    """GRU written the straightforward way: slices first, jax.nn.sigmoid on each gate."""
    (h,) = state
    x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hw, 3, axis=-1)
    r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * (h_n + cp["b_hn"]))
    return ((1 - z) * n + z * h,)


PLAIN = {"lstm": plain_lstm, "gru": plain_gru}


def variants(name: str) -> dict[str, tuple]:
    """Implementation variants of a cell: (recurrence, cell override)."""
    cell = rnn.get_cell(name)
    plain = dataclasses.replace(cell, pointwise=PLAIN[name], additive=False)
    return {
        "scan (reference)": (functools.partial(rnn.scan_recurrence, unroll=1), plain),
        "scan, one tanh": (functools.partial(rnn.scan_recurrence, unroll=1), cell),
        "fused backward": (rnn.fused_recurrence, cell),
    }


def build_step(name: str, recurrence=rnn.fused_recurrence, cell=None, *, seq_len=SEQ_LEN,
               width=WIDTH, batch=BATCH):
    """(run, flops): ``run()`` does one compiled training step; flops counts its matmuls."""
    spec = RunSpec(task="adding", model="rnn", cell=name, depth=1, width=width, seq_len=seq_len,
                   batch_size=batch, optimizer="adam", lr=1e-3)
    task = tasks.make(spec)
    model = rnn.make_rnn(spec, task, recurrence=recurrence, cell=cell)
    params, state = model.init(jax.random.PRNGKey(0))
    opt = optax.adam(1e-3)
    x, y = task.sample(jax.random.PRNGKey(1), batch)

    def loss(p):
        return task.loss(model.apply(p, state, x, train=True)[0], y)

    @jax.jit
    def step(p, o):
        value, grads = jax.value_and_grad(loss)(p)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    carry = jax.block_until_ready(step(params, opt.init(params)))

    def run():
        nonlocal carry
        carry = step(*carry[:2])
        return carry

    flops = step_flops(cell or rnn.get_cell(name), seq_len, width, batch, task.input_shape[1],
                       task.output_dim)
    return run, flops


def best_times(runs: list, rounds: int = 7, inner: int = 3) -> list[float]:
    """Best seconds per call of each function, timed in interleaved rounds.

    Interleaving keeps the comparison fair on a shared machine whose load changes.
    """
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            seconds = _seconds(lambda: [run() for _ in range(inner)][-1]) / inner
            best[i] = min(best[i], seconds)
    return best


def rnn_rows(roofline_gflops: float, *, cells=CELLS, compare: bool = False, rounds: int = 7,
             **sizes) -> list[dict]:
    """One row per cell (and per variant with ``compare``) for benchmarks/perf.py's table."""
    cases = []
    for name in cells:
        chosen = variants(name) if compare else {"fused backward": (rnn.fused_recurrence, None)}
        for variant, (recurrence, cell) in chosen.items():
            cases.append((name, variant, *build_step(name, recurrence, cell, **sizes)))
    times = best_times([case[2] for case in cases], rounds=rounds)
    rows = []
    for (name, variant, _, flops), seconds in zip(cases, times):
        gflops = flops / seconds / 1e9
        rows.append({"benchmark": f"rnn_{name}_train_step", "variant": variant,
                     "seq_len": sizes.get("seq_len", SEQ_LEN), "width": sizes.get("width", WIDTH),
                     "batch": sizes.get("batch", BATCH), "ms_per_step": round(1e3 * seconds, 2),
                     "gflop_per_step": round(flops / 1e9, 3), "gflops": round(gflops, 1),
                     "roofline_gflops": round(roofline_gflops, 1),
                     "fraction_of_roofline": round(gflops / roofline_gflops, 3)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", action="store_true", help="also time the reference variants")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    peak = roofline()
    print(f"roofline: {peak:.1f} GFLOP/s (2048^3 float32 matmul), backend {jax.default_backend()}")
    for row in rnn_rows(peak, cells=args.cells.split(","), compare=args.compare,
                       rounds=args.rounds):
        print(f"{row['benchmark']:22s} {row['variant']:18s} {row['ms_per_step']:8.2f} ms/step "
              f"{row['gflops']:7.1f} GFLOP/s  {100 * row['fraction_of_roofline']:5.1f} % of roofline")


if __name__ == "__main__":
    main()

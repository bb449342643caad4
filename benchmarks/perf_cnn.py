"""Speed of the CNN training step: vgbench's program against hand-written JAX steps of the same network.

    python benchmarks/perf_cnn.py [--rounds 6] [--out results/perf_cnn.csv]

A plain stack of 3x3 convolutions on the 8x8 digits (a stem from 1 channel, then width-16
convolutions, ReLU, global average pooling, a linear head; batch 32, SGD), at depth 9 and 33,
for 1 and 8 vmapped seeds. Variants, timed in the same interleaved rounds:

* ``vgbench``: the training program of ``vgbench train --model cnn`` with its diagnostics
  (one diagnostic step every 25), the convolution as :mod:`vgbench.models.conv` chooses it;
* ``plain_native``: a hand-written step through ``lax.conv_general_dilated``;
* ``plain_patches``: the same hand-written step with the convolution as patches + one matmul,
  differentiated by plain autodiff (:func:`vgbench.models.conv.patches_matmul`).

``make perf`` runs these rows too (:func:`cnn_rows`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from perf_common import Roofline, format_row, program_runner, scanned_sgd, seconds_per_step, steps_for, write_csv  # noqa: E402

from vgbench.models.conv import conv_native, patches_matmul  # noqa: E402
from vgbench.spec import RunSpec  # noqa: E402

WIDTH, BATCH, SIDE = 16, 32, 8


def cnn_flops(depth: int, width: int = WIDTH, batch: int = BATCH) -> float:
    """Forward + backward FLOPs of one step (3 x the forward multiply-adds x 2)."""
    macs = SIDE * SIDE * 9 * (1 * width + (depth - 1) * width * width) + width * 10
    return 6.0 * batch * macs


def plain_cnn_runner(depth: int, conv, seeds: int = 1):
    """``steps -> run()`` for a hand-written conv-stack SGD step with the given convolution."""
    def build(steps: int):
        def init(key):
            keys = jax.random.split(key, depth + 3)
            chans = [1] + [WIDTH] * depth
            params = [(jax.random.normal(k, (3, 3, a, b)) * np.sqrt(2 / (9 * a)), jnp.zeros(b))
                      for k, a, b in zip(keys, chans[:-1], chans[1:])]
            head = (jax.random.normal(keys[-3], (WIDTH, 10)) / np.sqrt(WIDTH), jnp.zeros(10))
            x = jax.random.normal(keys[-2], (BATCH, SIDE, SIDE, 1))
            y = jax.random.randint(keys[-1], (BATCH,), 0, 10)
            return (params, head), x, y

        def loss(p, x, y):
            convs, (w_out, b_out) = p
            h = x
            for w, b in convs:
                h = jax.nn.relu(conv(h, w) + b)
            logits = jnp.mean(h, axis=(1, 2)) @ w_out + b_out
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), y])

        return scanned_sgd(init, loss, seeds, steps)
    return build


def cnn_rows(add, start_gflops: float, rounds: int, depths=(9, 33), seed_counts=(1, 8)) -> None:
    """One row per (depth, seeds, variant); ``cost_vs_patches``: time over the patches step's."""
    for depth in depths:
        spec = RunSpec(model="cnn", task="digits", depth=depth, width=WIDTH, batch_size=BATCH,
                       activation="relu", init="he_normal", optimizer="sgd", lr=0.01)
        for seeds in seed_counts:
            flops = seeds * cnn_flops(depth)
            compiled = {}
            builders = {"vgbench": program_runner(spec, seeds, True, compiled),
                        "plain_native": plain_cnn_runner(depth, conv_native, seeds),
                        "plain_patches": plain_cnn_runner(depth, patches_matmul, seeds)}
            per_step, roof = seconds_per_step(builders, steps_for(flops, start_gflops, 0.2), rounds)
            for name in builders:
                add({"bench": f"cnn_{name}", "config": f"depth={depth} width={WIDTH} seeds={seeds}",
                     "depth": depth, "width": WIDTH, "seeds": seeds,
                     "cost_vs_patches": per_step[name] / per_step["plain_patches"],
                     **({"compile_s": compiled["compile_s"]} if name == "vgbench" else {})},
                    flops, per_step[name], roof)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", default="results/perf_cnn.csv")
    args = parser.parse_args(argv)
    start = Roofline()
    start.measure(repeats=5)
    print(f"backend {jax.default_backend()}; f32 matmul roofline {start.gflops:.1f} GFLOP/s")
    rows = []

    def add(row, flops, seconds, roof):
        rows.append({**row, "ms_per_step": seconds * 1e3, "gflops": flops / seconds / 1e9,
                     "roofline_gflops": roof, "pct_roofline": 100 * flops / seconds / 1e9 / roof})
        print(format_row(rows[-1]), flush=True)

    cnn_rows(add, start.gflops, args.rounds)
    return write_csv(rows, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the training program against the machine's matmul roofline (``make perf``).

In one process: the f32 matmul GFLOP/s of this machine (the roofline), then the achieved
GFLOP/s of the compiled training step for MLPs of depth 5/20/50 and width 128/512 at batch 128,
with and without diagnostics; 1/8/32 vmapped seeds; compile time at depth 8/32/128; and a
plain hand-written JAX SGD step for comparison. Writes a CSV and prints a table.

Time per step is differential: the same config is run for n and 2n steps and the difference
is divided by n, so compilation, the final evaluation and dispatch cancel out. The programs
compared in one row group (diagnostics on, off and the hand-written step; or 1/8/32 seeds)
are run in turn, round after round, and each keeps its fastest round: a machine whose speed
drifts (shared or throttled cores) then slows every variant alike. FLOPs are the model's
matmul FLOPs, 6 * batch * sum(fan_in * fan_out) per step (forward plus backward). The process
runs with the XLA flags of the ``vgbench`` command.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

from vgbench.cli import set_xla_flags

set_xla_flags()   # the flags `vgbench run` uses, before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vgbench import train  # noqa: E402
from vgbench.spec import RunSpec  # noqa: E402

BATCH = 128
LOG_EVERY = 25


def roofline_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` f32 GFLOP/s of an n x n @ n x n matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, b).block_until_ready()
    best = min(_timed(lambda: mm(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mlp_flops(spec: RunSpec, d_in: int = 64, d_out: int = 10) -> float:
    w = spec.width
    macs = d_in * w + (spec.depth - 1) * w * w + w * d_out
    return 6.0 * spec.batch_size * macs


def program_runner(spec: RunSpec, seeds: int, diagnostics: bool, record: dict):
    """``steps -> run()`` for the compiled training program; stores compile seconds in ``record``."""
    def build(steps: int):
        s = spec.replace(steps=steps, log_every=LOG_EVERY)
        program = train.build_program(s, diagnostics=diagnostics)
        params, state, keys = train.init_params(s, list(range(seeds)), task=program.task)
        lrs = jnp.full((seeds,), s.lr, jnp.float32)
        t0 = time.perf_counter()
        compiled = program.run.lower(params, state, keys, lrs).compile()
        record["compile_s"] = time.perf_counter() - t0
        return lambda: jax.block_until_ready(compiled(params, state, keys, lrs))
    return build


def plain_runner(depth: int, width: int):
    """``steps -> run()`` for a hand-written MLP SGD step (no diagnostics, no scan over layers)."""
    def build(steps: int):
        keys = jax.random.split(jax.random.PRNGKey(0), depth + 1)
        dims = [64] + [width] * depth + [10]
        params = [(jax.random.normal(k, (a, b)) * np.sqrt(2 / a), jnp.zeros(b))
                  for k, a, b in zip(keys, dims[:-1], dims[1:])]
        x = jax.random.normal(jax.random.PRNGKey(2), (BATCH, 64))
        y = jax.random.randint(jax.random.PRNGKey(3), (BATCH,), 0, 10)

        def loss(params):
            h = x
            for w, b in params[:-1]:
                h = jax.nn.relu(h @ w + b)
            logits = h @ params[-1][0] + params[-1][1]
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), y])

        @jax.jit
        def run(params):
            def step(p, _):
                g = jax.grad(loss)(p)
                return jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, g), None
            return jax.lax.scan(step, params, None, length=steps)[0]

        return lambda: jax.block_until_ready(run(params))
    return build


def seconds_per_step(builders: dict, steps: int, rounds: int) -> dict:
    """Seconds per step of each variant: fastest ``2 * steps`` run minus fastest ``steps`` run,
    over ``rounds`` rounds that run every variant in turn."""
    runs = {name: (build(steps), build(2 * steps)) for name, build in builders.items()}
    best = {name: [np.inf, np.inf] for name in runs}
    for _ in range(rounds + 1):            # the first round warms up
        for name, pair in runs.items():
            for i, run in enumerate(pair):
                best[name][i] = min(best[name][i], _timed(run))
    return {name: max(b[1] - b[0], 1e-9) / steps for name, b in best.items()}


def steps_for(flops: float, roof: float, seconds: float = 0.3) -> int:
    n = int(seconds * roof * 1e9 / max(flops, 1.0))
    return max(LOG_EVERY, min(1000, (n // LOG_EVERY) * LOG_EVERY))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/perf.csv")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    args = parser.parse_args(argv)

    roof = roofline_gflops()
    rows = [{"bench": "roofline", "config": "matmul 2048^3 f32", "gflops": roof, "pct_roofline": 100.0}]
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{platform.machine()}; f32 matmul roofline {roof:.1f} GFLOP/s", flush=True)

    rounds = 4 if args.quick else 10
    depths = [5, 20] if args.quick else [5, 20, 50]
    for width in (128, 512):
        for depth in depths:
            spec = RunSpec(depth=depth, width=width, batch_size=BATCH, activation="relu",
                           init="he_normal", optimizer="sgd", lr=0.01)
            flops = mlp_flops(spec)
            compiled = {True: {}, False: {}}
            per_step = seconds_per_step(
                {True: program_runner(spec, 1, True, compiled[True]),
                 False: program_runner(spec, 1, False, compiled[False]),
                 "plain": plain_runner(depth, width)}, steps_for(flops, roof), rounds)
            for diag in (True, False):
                t = per_step[diag]
                rows.append({"bench": "mlp_step", "config": f"depth={depth} width={width} "
                             f"diagnostics={'on' if diag else 'off'}", "depth": depth, "width": width,
                             "seeds": 1, "diagnostics": diag, "ms_per_step": t * 1e3,
                             "gflops": flops / t / 1e9, "pct_roofline": 100 * flops / t / 1e9 / roof,
                             "compile_s": compiled[diag]["compile_s"]})
                print(_fmt(rows[-1]), flush=True)
            t = per_step["plain"]
            rows.append({"bench": "plain_jax_step", "config": f"depth={depth} width={width}",
                         "depth": depth, "width": width, "ms_per_step": t * 1e3,
                         "gflops": flops / t / 1e9, "pct_roofline": 100 * flops / t / 1e9 / roof})
            print(_fmt(rows[-1]), flush=True)

    spec = RunSpec(depth=20, width=128, batch_size=BATCH, activation="relu", init="he_normal", lr=0.01)
    flops = mlp_flops(spec)
    counts = (1, 8) if args.quick else (1, 8, 32)
    per_step = seconds_per_step({n: program_runner(spec, n, True, {}) for n in counts},
                                steps_for(flops * 8, roof), rounds)
    for seeds in counts:
        t = per_step[seeds]
        rows.append({"bench": "vmapped_seeds", "config": f"depth=20 width=128 seeds={seeds}",
                     "depth": 20, "width": 128, "seeds": seeds, "diagnostics": True,
                     "ms_per_step": t * 1e3, "gflops": seeds * flops / t / 1e9,
                     "pct_roofline": 100 * seeds * flops / t / 1e9 / roof,
                     "cost_vs_one_seed": t / per_step[1]})
        print(_fmt(rows[-1]), flush=True)

    for depth in (8, 32, 128):
        spec = RunSpec(depth=depth, width=128, batch_size=BATCH, steps=100, log_every=LOG_EVERY)
        t0 = time.perf_counter()
        program = train.build_program(spec)
        params, state, keys = train.init_params(spec, [0], task=program.task)
        program.run.lower(params, state, keys, jnp.ones((1,))).compile()
        rows.append({"bench": "compile", "config": f"depth={depth} width=128", "depth": depth,
                     "width": 128, "compile_s": time.perf_counter() - t0})
        print(_fmt(rows[-1]), flush=True)

    try:
        sys.path.insert(0, str(Path(__file__).parent))
        from perf_rnn import rnn_rows  # the recurrent rows (LSTM/GRU at T = 200)

        for row in rnn_rows(roof):
            row = {"bench": row.pop("benchmark"), "config": f"{row.pop('implementation')} "
                   f"T={row['seq_len']} hidden={row['width']} batch={row['batch']}",
                   "pct_roofline": 100 * row.pop("fraction_of_roofline"), **row}
            rows.append(row)
            print(_fmt(row), flush=True)
    except ImportError:
        pass

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("bench", "config"), k))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {out}")
    return 0


def _fmt(row: dict) -> str:
    parts = [f"{row['bench']:<15} {row['config']:<40}"]
    for key, unit in (("ms_per_step", "ms/step"), ("gflops", "GFLOP/s"), ("pct_roofline", "% roof"),
                      ("cost_vs_one_seed", "x one seed"), ("compile_s", "s compile")):
        if key in row:
            parts.append(f"{row[key]:8.2f} {unit}")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())

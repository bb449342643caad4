"""Speed of the training program against the machine's matmul roofline (``make perf``).

In one process: the f32 matmul GFLOP/s of this machine (the roofline), then the achieved
GFLOP/s of the compiled training step for MLPs of depth 5/20/50 and width 128/512 at batch 128,
with and without diagnostics; 1/8/32 vmapped seeds; compile time at depth 8/32/128; and a
plain hand-written JAX SGD step for comparison. Writes a CSV and prints a table.

Time per step is differential: the same config is run for n and 2n steps and the difference
is divided by n, so compilation, the final evaluation and dispatch cancel out. FLOPs are the
model's matmul FLOPs, 6 * batch * sum(fan_in * fan_out) per step (forward plus backward).
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vgbench import train
from vgbench.spec import RunSpec

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


def time_per_step(spec: RunSpec, seeds: int, diagnostics: bool, steps: int) -> tuple[float, float]:
    """(seconds per step, compile seconds) by differencing runs of `steps` and `2 * steps` steps."""
    run_s, compile_s = [], 0.0
    for n in (steps, 2 * steps):
        s = spec.replace(steps=n, log_every=LOG_EVERY)
        program = train.build_program(s, diagnostics=diagnostics)
        params, state, keys = train.init_params(s, list(range(seeds)), task=program.task)
        raw = train.execute(program, params, state, keys, [s.lr] * seeds)
        best = raw.run_s
        for _ in range(2):   # re-run the compiled program: best of three
            t0 = time.perf_counter()
            jax.block_until_ready(program.run(params, state, keys, jnp.full((seeds,), s.lr)))
            best = min(best, time.perf_counter() - t0)
        run_s.append(best)
        compile_s = raw.compile_s
    return max(run_s[1] - run_s[0], 1e-9) / steps, compile_s


def plain_step_time(depth: int, width: int, steps: int = 50) -> float:
    """Seconds per step of a hand-written MLP SGD step (no diagnostics, no scan), for reference."""
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

    jax.block_until_ready(run(params))
    return min(_timed(lambda: jax.block_until_ready(run(params))) for _ in range(3)) / steps


def steps_for(flops: float, roof: float, seconds: float = 1.5) -> int:
    n = int(seconds * roof * 1e9 / max(flops, 1.0))
    return max(2 * LOG_EVERY, min(2000, (n // LOG_EVERY) * LOG_EVERY))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/perf.csv")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    args = parser.parse_args(argv)

    roof = roofline_gflops()
    rows = [{"bench": "roofline", "config": "matmul 2048^3 f32", "gflops": roof, "pct_roofline": 100.0}]
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{platform.machine()}; f32 matmul roofline {roof:.1f} GFLOP/s", flush=True)

    depths = [5, 20] if args.quick else [5, 20, 50]
    for width in (128, 512):
        for depth in depths:
            spec = RunSpec(depth=depth, width=width, batch_size=BATCH, activation="relu",
                           init="he_normal", optimizer="sgd", lr=0.01)
            flops = mlp_flops(spec)
            n = steps_for(flops, roof)
            for diag in (True, False):
                per_step, compile_s = time_per_step(spec, 1, diag, n)
                rows.append({"bench": "mlp_step", "config": f"depth={depth} width={width} "
                             f"diagnostics={'on' if diag else 'off'}", "depth": depth, "width": width,
                             "seeds": 1, "diagnostics": diag, "ms_per_step": per_step * 1e3,
                             "gflops": flops / per_step / 1e9,
                             "pct_roofline": 100 * flops / per_step / 1e9 / roof, "compile_s": compile_s})
                print(_fmt(rows[-1]), flush=True)
            plain = plain_step_time(depth, width)
            rows.append({"bench": "plain_jax_step", "config": f"depth={depth} width={width}",
                         "depth": depth, "width": width, "ms_per_step": plain * 1e3,
                         "gflops": flops / plain / 1e9, "pct_roofline": 100 * flops / plain / 1e9 / roof})
            print(_fmt(rows[-1]), flush=True)

    spec = RunSpec(depth=20, width=128, batch_size=BATCH, activation="relu", init="he_normal", lr=0.01)
    flops = mlp_flops(spec)
    base = None
    for seeds in (1, 8) if args.quick else (1, 8, 32):
        per_step, _ = time_per_step(spec, seeds, True, steps_for(flops * seeds, roof))
        base = base or per_step
        rows.append({"bench": "vmapped_seeds", "config": f"depth=20 width=128 seeds={seeds}",
                     "depth": 20, "width": 128, "seeds": seeds, "diagnostics": True,
                     "ms_per_step": per_step * 1e3, "gflops": seeds * flops / per_step / 1e9,
                     "pct_roofline": 100 * seeds * flops / per_step / 1e9 / roof,
                     "cost_vs_one_seed": per_step / base})
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

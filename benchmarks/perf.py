"""Speed of the training program against the machine's matmul roofline (``make perf``).

In one process: the f32 matmul GFLOP/s of this machine (the roofline), then the achieved
GFLOP/s of the compiled training step for MLPs of depth 5/20/50 and width 128/512 at batch 128,
with and without diagnostics; 1/8/32 seeds in one program; 8 entries run in sequence against
vmapped (``entries``: an MLP and the recurrent study's LSTM and GRU); compile time at depth 8/32/128; and a
plain hand-written JAX SGD step (one model, and vmapped over the same seed counts) for
comparison; and the flax adapter's step (the same ReLU MLP as a flax.linen module,
``vgbench.register_flax_model``) against the built-in MLP's at depth 20, width 128/512
(``cost_vs_builtin``; ``--flax-only`` runs just these rows). Writes a CSV and prints a table.

Time per step is differential: the same config is run for n and 2n steps and the difference
is divided by n, so compilation, the final evaluation and dispatch cancel out. The programs
compared in one row group (diagnostics on, off and the hand-written step; or 1/8/32 seeds)
are run in turn, round after round, and each keeps its fastest round: a machine whose speed
drifts (shared or throttled cores) then slows every variant alike. Every round also times
one roofline matmul, and a row group's percentages are of the fastest roofline matmul of its
own rounds (its ``roofline_gflops`` column), so step and roofline are compared at the same
machine speed; the ``roofline`` row is the fastest over the whole run. FLOPs are the model's
matmul FLOPs, 6 * batch * sum(fan_in * fan_out) per step (forward plus backward). The process
runs with the XLA flags of the ``vgbench`` command.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from perf_cnn import cnn_rows  # noqa: E402  (the convolution rows)
from perf_common import (  # noqa: E402
    LOG_EVERY,
    Roofline,
    format_row,
    program_runner,
    scanned_sgd,
    seconds_per_step,
    steps_for,
    write_csv,
)

from vgbench import train  # noqa: E402
from vgbench.spec import RunSpec  # noqa: E402

BATCH = 128


def mlp_flops(spec: RunSpec, d_in: int = 64, d_out: int = 10) -> float:
    w = spec.width
    macs = d_in * w + (spec.depth - 1) * w * w + w * d_out
    return 6.0 * spec.batch_size * macs


def plain_runner(depth: int, width: int, seeds: int = 1):
    """``steps -> run()`` for a hand-written MLP SGD step (no diagnostics, no scan over layers),
    ``vmap``ped over ``seeds`` independent models when there is more than one."""
    def build(steps: int):
        def init(key):
            keys = jax.random.split(key, depth + 3)
            dims = [64] + [width] * depth + [10]
            params = [(jax.random.normal(k, (a, b)) * np.sqrt(2 / a), jnp.zeros(b))
                      for k, a, b in zip(keys, dims[:-1], dims[1:])]
            x = jax.random.normal(keys[-2], (BATCH, 64))
            y = jax.random.randint(keys[-1], (BATCH,), 0, 10)
            return params, x, y

        def loss(params, x, y):
            h = x
            for w, b in params[:-1]:
                h = jax.nn.relu(h @ w + b)
            logits = h @ params[-1][0] + params[-1][1]
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), y])

        return scanned_sgd(init, loss, seeds, steps)
    return build


def flax_mlp(spec, task):
    """The built-in MLP's network (ReLU) written in flax.linen (perf rows of the flax adapter)."""
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(spec.depth):
                x = jax.nn.relu(nn.Dense(spec.width, name=f"dense_{i + 1}")(x))
            return nn.Dense(task.output_dim, name="output")(x)

    return MLP()


def flax_rows(add, start_gflops: float, rounds: int, widths=(128, 512), depth: int = 20) -> None:
    """The flax adapter's training step against the built-in MLP's, same network, same rounds."""
    from vgbench.models import MODELS

    if "perf_flax_mlp" not in MODELS:
        vgbench.register_flax_model("perf_flax_mlp", flax_mlp)
    for width in widths:
        spec = RunSpec(depth=depth, width=width, batch_size=BATCH, activation="relu",
                       init="he_normal", optimizer="sgd", lr=0.01)
        flax_spec = spec.replace(model="perf_flax_mlp")
        flops = mlp_flops(spec)
        builders = {(kind, diag): program_runner(s, 1, diag, {})
                    for kind, s in (("builtin", spec), ("flax", flax_spec)) for diag in (True, False)}
        per_step, roof = seconds_per_step(builders, steps_for(flops, start_gflops), rounds)
        for diag in (True, False):
            for kind in ("builtin", "flax"):
                add({"bench": f"{kind}_mlp_step_vs_flax" if kind == "builtin" else "flax_mlp_step",
                     "config": f"depth={depth} width={width} "
                     f"diagnostics={'on' if diag else 'off'}", "depth": depth, "width": width,
                     "seeds": 1, "diagnostics": diag,
                     "cost_vs_builtin": per_step[(kind, diag)] / per_step[("builtin", diag)]},
                    flops, per_step[(kind, diag)], roof)


ENTRIES = {   # the suite's shapes: an MLP of depth_activation, the recurrent study's LSTM and GRU
    "mlp depth=64 width=64": (RunSpec(depth=64, width=64, batch_size=BATCH, activation="relu",
                                      init="he_normal", optimizer="sgd", lr=0.01), None),
    "lstm adding T=200 width=32": (RunSpec(model="rnn", cell="lstm", task="adding", seq_len=200,
                                           width=32, batch_size=32, activation="tanh",
                                           init="xavier_normal", optimizer="adam", lr=0.003,
                                           clip="global_norm"), 6.0 * 32 * 200 * (4 * 32 + 32 * 128)),
    "gru adding T=200 width=32": (RunSpec(model="rnn", cell="gru", task="adding", seq_len=200,
                                          width=32, batch_size=32, activation="tanh",
                                          init="xavier_normal", optimizer="adam", lr=0.003,
                                          clip="global_norm"), 6.0 * 32 * 200 * (3 * 32 + 32 * 96)),
}


def entries_rows(add, start_gflops: float, rounds: int, n: int = 8) -> None:
    """``n`` entries (seeds) in one program: run one after another (``lax.map``) against vmapped,
    per entry, next to one entry alone. ``cost_vs_one_entry`` is the time per entry over one
    entry's step alone."""
    for name, (spec, flops) in ENTRIES.items():
        flops = mlp_flops(spec) if flops is None else flops
        builders = {"alone": program_runner(spec, 1, True, {}),
                    "sequential": program_runner(spec, n, True, {}, sequential=True),
                    "vmapped": program_runner(spec, n, True, {}, sequential=False)}
        per_step, roof = seconds_per_step(builders, steps_for(flops * n, start_gflops, 1.0), rounds)
        for form in builders:
            k = 1 if form == "alone" else n
            add({"bench": "entries", "config": f"{name} entries={k} {form}", "seeds": k,
                 "diagnostics": True, "cost_vs_one_entry": per_step[form] / k / per_step["alone"]},
                k * flops, per_step[form], roof)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/perf.csv")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    parser.add_argument("--flax-only", action="store_true",
                        help="only the flax adapter's rows (against the built-in MLP)")
    parser.add_argument("--entries-only", action="store_true",
                        help="only the rows of 8 entries run in sequence against vmapped")
    args = parser.parse_args(argv)

    start = Roofline()
    start.measure(repeats=5)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{platform.machine()}; f32 matmul roofline {start.gflops:.1f} GFLOP/s", flush=True)
    rows = []

    def add(row: dict, flops: float, seconds: float, roof: float) -> None:
        gflops = flops / seconds / 1e9
        rows.append({**row, "ms_per_step": seconds * 1e3, "gflops": gflops,
                     "roofline_gflops": roof, "pct_roofline": 100 * gflops / roof})
        print(format_row(rows[-1]), flush=True)

    rounds = 4 if args.quick else 10
    entries_rows(add, start.gflops, rounds // 2)
    if args.entries_only:
        return write_csv(rows, args.out)
    flax_rows(add, start.gflops, rounds)
    if args.flax_only:
        return write_csv(rows, args.out)
    depths = [5, 20] if args.quick else [5, 20, 50]
    for width in (128, 512):
        for depth in depths:
            spec = RunSpec(depth=depth, width=width, batch_size=BATCH, activation="relu",
                           init="he_normal", optimizer="sgd", lr=0.01)
            flops = mlp_flops(spec)
            compiled = {True: {}, False: {}}
            per_step, roof = seconds_per_step(
                {True: program_runner(spec, 1, True, compiled[True]),
                 False: program_runner(spec, 1, False, compiled[False]),
                 "plain": plain_runner(depth, width)}, steps_for(flops, start.gflops), rounds)
            for diag in (True, False):
                add({"bench": "mlp_step", "config": f"depth={depth} width={width} "
                     f"diagnostics={'on' if diag else 'off'}", "depth": depth, "width": width,
                     "seeds": 1, "diagnostics": diag, "compile_s": compiled[diag]["compile_s"]},
                    flops, per_step[diag], roof)
            add({"bench": "plain_jax_step", "config": f"depth={depth} width={width}",
                 "depth": depth, "width": width, "seeds": 1}, flops, per_step["plain"], roof)

    # seeds: the program against the hand-written step vmapped the same way, which shows what
    # batching the seeds' small matmuls can buy on this machine at all
    spec = RunSpec(depth=20, width=128, batch_size=BATCH, activation="relu", init="he_normal", lr=0.01)
    flops = mlp_flops(spec)
    counts = (1, 8) if args.quick else (1, 8, 32)
    builders = {}
    for n in counts:
        builders[n] = program_runner(spec, n, True, {})
        builders[("plain", n)] = plain_runner(20, 128, seeds=n)
    per_step, roof = seconds_per_step(builders, steps_for(flops * 8, start.gflops), rounds)
    for seeds in counts:
        add({"bench": "vmapped_seeds", "config": f"depth=20 width=128 seeds={seeds}",
             "depth": 20, "width": 128, "seeds": seeds, "diagnostics": True,
             "cost_vs_one_seed": per_step[seeds] / per_step[1]},
            seeds * flops, per_step[seeds], roof)
    for seeds in counts:
        add({"bench": "plain_jax_vmapped_seeds", "config": f"depth=20 width=128 seeds={seeds}",
             "depth": 20, "width": 128, "seeds": seeds,
             "cost_vs_one_seed": per_step[("plain", seeds)] / per_step[("plain", 1)]},
            seeds * flops, per_step[("plain", seeds)], roof)

    for depth in (8, 32, 128):
        spec = RunSpec(depth=depth, width=128, batch_size=BATCH, steps=100, log_every=LOG_EVERY)
        t0 = time.perf_counter()
        program = train.build_program(spec)
        params, state, keys = train.init_params(spec, [0], task=program.task)
        program.run.lower(params, state, keys, jnp.ones((1,))).compile()
        rows.append({"bench": "compile", "config": f"depth={depth} width=128", "depth": depth,
                     "width": 128, "compile_s": time.perf_counter() - t0})
        print(format_row(rows[-1]), flush=True)

    cnn_rows(add, start.gflops, rounds // 2)

    start.measure(repeats=3)
    rows.insert(0, {"bench": "roofline", "config": "matmul 2048^3 f32", "gflops": start.gflops,
                    "pct_roofline": 100.0})
    try:
        from perf_rnn import rnn_rows  # the recurrent rows (LSTM/GRU at T = 200)

        for row in rnn_rows(start.gflops):
            row = {"bench": row.pop("benchmark"), "config": f"{row.pop('implementation')} "
                   f"T={row['seq_len']} hidden={row['width']} batch={row['batch']}",
                   "pct_roofline": 100 * row.pop("fraction_of_roofline"), **row}
            rows.append(row)
            print(format_row(row), flush=True)
    except ImportError:
        pass

    return write_csv(rows, args.out)


if __name__ == "__main__":
    sys.exit(main())

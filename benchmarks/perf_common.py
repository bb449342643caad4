"""What the speed benchmarks share: the roofline matmul, interleaved differential timing of
compiled programs, the training program and hand-written SGD steps as timed runs, and the
CSV and the printed table of their rows.

``benchmarks/perf.py`` (``make perf``) and ``benchmarks/perf_cnn.py`` import it; it imports
neither.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

from vgbench import train
from vgbench.spec import RunSpec

LOG_EVERY = 25


class Roofline:
    """The fastest f32 n x n @ n x n matmul seen so far, as GFLOP/s."""

    def __init__(self, n: int = 2048):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        mm = jax.jit(lambda a, b: a @ b)
        mm(a, b).block_until_ready()
        self._run = lambda: mm(a, b).block_until_ready()
        self._flops = 2.0 * n ** 3
        self.best_s = np.inf

    def measure(self, repeats: int = 1) -> float:
        for _ in range(repeats):
            self.best_s = min(self.best_s, timed(self._run))
        return self.gflops

    @property
    def gflops(self) -> float:
        return self._flops / self.best_s / 1e9


def timed(fn) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def program_runner(spec: RunSpec, seeds: int, diagnostics: bool, record: dict,
                   sequential: bool | None = None):
    """``steps -> run()`` for the compiled training program; stores compile seconds in ``record``.
    ``sequential``: entries one after another or vmapped (None: as vgbench runs them here)."""
    def build(steps: int):
        s = spec.replace(steps=steps, log_every=LOG_EVERY)
        program = train.build_program(s, diagnostics=diagnostics, sequential=sequential)
        params, state, keys = train.init_params(s, list(range(seeds)), task=program.task)
        lrs = jnp.full((seeds,), s.lr, jnp.float32)
        t0 = time.perf_counter()
        compiled = program.run.lower(params, state, keys, lrs).compile()
        record["compile_s"] = time.perf_counter() - t0
        return lambda: jax.block_until_ready(compiled(params, state, keys, lrs))
    return build


def scanned_sgd(init, loss, seeds: int, steps: int):
    """``run()`` of ``steps`` plain SGD steps (lr 0.01) on one fixed batch, scanned and jitted;
    ``init(key) -> (params, x, y)``, vmapped over ``seeds`` models when there is more than one."""
    def step(p, x, y):
        g = jax.grad(loss)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, g)

    if seeds == 1:
        params, x, y = init(jax.random.PRNGKey(0))
    else:
        params, x, y = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), seeds))
        step = jax.vmap(step)

    @jax.jit
    def run(params):
        return jax.lax.scan(lambda p, _: (step(p, x, y), None), params, None, length=steps)[0]

    return lambda: jax.block_until_ready(run(params))


def seconds_per_step(builders: dict, steps: int, rounds: int) -> tuple[dict, float]:
    """Seconds per step of each variant, and the roofline GFLOP/s over the same rounds.

    Each round runs every variant for ``steps`` and ``2 * steps`` steps, and one roofline
    matmul; a variant's time per step is its fastest ``2 * steps`` run minus its fastest
    ``steps`` run. Timing the roofline inside the same rounds compares both at the same
    machine speed.
    """
    runs = {name: (build(steps), build(2 * steps)) for name, build in builders.items()}
    best = {name: [np.inf, np.inf] for name in runs}
    roof = Roofline()
    for _ in range(rounds + 1):            # the first round warms up
        roof.measure()
        for name, pair in runs.items():
            for i, run in enumerate(pair):
                best[name][i] = min(best[name][i], timed(run))
    return {name: max(b[1] - b[0], 1e-9) / steps for name, b in best.items()}, roof.gflops


def steps_for(flops: float, roof: float, seconds: float = 0.3) -> int:
    """Steps of ``flops`` each that take about ``seconds`` at ``roof`` GFLOP/s: a multiple of
    LOG_EVERY, from LOG_EVERY to 1000."""
    n = int(seconds * roof * 1e9 / max(flops, 1.0))
    return max(LOG_EVERY, min(1000, (n // LOG_EVERY) * LOG_EVERY))


def write_csv(rows: list, path: str) -> int:
    """Write ``rows`` to the CSV file ``path`` (``bench`` and ``config`` first); returns 0."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("bench", "config"), k))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {out}")
    return 0


def format_row(row: dict) -> str:
    """One printed line of the table: the row's name and whichever measures it has."""
    parts = [f"{row['bench']:<24} {row['config']:<40}"]
    for key, unit in (("ms_per_step", "ms/step"), ("gflops", "GFLOP/s"), ("pct_roofline", "% roof"),
                      ("cost_vs_one_seed", "x one seed"), ("cost_vs_builtin", "x built-in"),
                      ("cost_vs_patches", "x patches"), ("speedup_vs_pytorch", "x PyTorch"),
                      ("compile_s", "s compile")):
        if key in row:
            parts.append(f"{row[key]:8.2f} {unit}")
    return "  ".join(parts)

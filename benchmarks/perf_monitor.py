"""Cost of vgbench.monitor inside a user's own jitted step: a ResNet-18 in flax.linen with SGD.

    python benchmarks/perf_monitor.py [--batch 64] [--rounds 8] [--cond] [--out results/perf_monitor.csv]

ResNet-18 for 32 x 32 x 3 inputs (He et al. 2016, the CIFAR stem: one 3x3 convolution, no
max-pool; four stages of two basic blocks, 64-512 channels, batch norm; 21 probed layers),
softmax cross-entropy on random data, optax SGD with momentum. Settings, timed in the same
interleaved rounds (each round runs every variant for ``--steps`` steps; a setting's time is
the median over every step of every round after the first):

* ``plain``: the user's step, ``jax.value_and_grad`` of the loss and the optimizer update;
* ``monitor_every_step``: the same step through ``Monitor(..., linen=True)`` with the update
  ratio, and the writer (TensorBoard event file and CSV) called on every step;
* ``monitor_every_100, two functions``: the plain step on 99 steps of 100 and the monitored
  step (with the writer) on the 100th, both compiled once (``measure=`` a static argument):
  its cost is ``(99 plain + 1 monitored) / 100`` of the two measured medians;
* ``monitor_every_100, lax.cond`` (``--cond``): one compiled step that branches on
  ``step % 100`` between the monitored and the plain gradient; its non-logging steps are timed
  directly, after the interleaved rounds (on XLA:CPU they are ~30x slower than the plain step:
  the convolutions inside a conditional's branch do not get the plain step's fast kernels).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).parent))

from perf_common import write_csv  # noqa: E402

from vgbench.monitor import Monitor, Writer  # noqa: E402

EVERY = 100


class BasicBlock(nn.Module):
    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        y = nn.Conv(self.channels, (3, 3), self.stride, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
        y = norm()(y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = norm()(nn.Conv(self.channels, (1, 1), self.stride, use_bias=False)(x))
        return nn.relu(x + y)


class ResNet18(nn.Module):
    classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
            nn.Conv(64, (3, 3), use_bias=False)(x)))
        for stage, channels in enumerate((64, 128, 256, 512)):
            for block in range(2):
                x = BasicBlock(channels, 2 if stage and not block else 1)(x, train)
        return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))


def resnet_flops(batch: int) -> float:
    """Forward + backward FLOPs of one step (3 x the forward multiply-adds x 2)."""
    macs, side, c_in = 32 * 32 * 9 * 3 * 64, 32, 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for block in range(2):
            if stage and not block:
                side //= 2
                macs += side * side * c_in * c   # the 1x1 shortcut
            macs += side * side * 9 * (c_in * c + c * c)
            c_in = c
    return 6.0 * batch * (macs + 512 * 10)


def build(batch: int, logdir: str):
    """The variants' step functions, their starting state and the monitor's writers."""
    module = ResNet18()
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, 32, 32, 3))
    y = jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, 10)
    variables = module.init(jax.random.PRNGKey(0), x[:2], train=False)
    opt = optax.sgd(0.01, momentum=0.9)

    def loss_fn(params, batch_stats, x, y):
        logits, new = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                   mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    mon = Monitor(loss_fn, has_aux=True, linen=True)

    def update(params, opt_state, grads, stats):
        updates, opt_state = opt.update(grads, opt_state, params)
        if stats:
            stats["update_ratio"] = mon.update_ratio(params, updates)
        return optax.apply_updates(params, updates), opt_state, stats

    @jax.jit
    def plain_step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y)
        params, opt_state, _ = update(params, opt_state, grads, {})
        return params, batch_stats, opt_state, loss

    @partial(jax.jit, static_argnames="measure")
    def monitored_step(params, batch_stats, opt_state, x, y, measure=True):
        (loss, batch_stats), grads, stats = mon(params, batch_stats, x, y, measure=measure)
        params, opt_state, stats = update(params, opt_state, grads, stats)
        return params, batch_stats, opt_state, stats

    @jax.jit
    def cond_step(params, batch_stats, opt_state, x, y, step):
        def measured(p, s):
            (_, s), grads, stats = mon(p, s, x, y)
            return grads, s, stats

        def plain(p, s):
            (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
            shapes = jax.eval_shape(measured, p, s)[2]
            stats = {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()} | {"loss": loss}
            return grads, s, stats

        due = step % EVERY == 0
        grads, batch_stats, stats = jax.lax.cond(due, measured, plain, params, batch_stats)
        updates, opt_state = opt.update(grads, opt_state, params)
        stats["update_ratio"] = jax.lax.cond(
            due, mon.update_ratio, lambda p, u: jnp.full((len(mon.group_names),), jnp.nan), params, updates)
        return optax.apply_updates(params, updates), batch_stats, opt_state, stats

    state = (variables["params"], variables["batch_stats"], opt.init(variables["params"]))
    writers = {"every_step": Writer(Path(logdir) / "every_step", mon, every=1, warn=False),
               "cond": Writer(Path(logdir) / "cond", mon, every=EVERY, warn=False)}
    return mon, writers, (plain_step, monitored_step, cond_step), state, (x, y)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=2, help="steps of each variant per round")
    parser.add_argument("--cond", action="store_true", help="also time the lax.cond variant (slow)")
    parser.add_argument("--out", default="results/perf_monitor.csv")
    args = parser.parse_args(argv)
    logdir = tempfile.mkdtemp(prefix="vgbench-perf-monitor-")
    mon, writers, (plain_step, monitored_step, cond_step), state, (x, y) = build(args.batch, logdir)
    print(f"backend {jax.default_backend()}; ResNet-18, 32x32x3, batch {args.batch}, "
          f"{resnet_flops(args.batch) / 1e9:.1f} GFLOP/step", flush=True)

    def run_plain(s, step):
        p, b, o, loss = plain_step(*s, x, y)
        jax.block_until_ready(loss)
        return (p, b, o)

    def run_monitored(s, step):
        p, b, o, stats = monitored_step(*s, x, y)
        writers["every_step"](step, stats)   # transfers and writes on every step
        return (p, b, o)

    def run_cond(s, step):
        p, b, o, stats = cond_step(*s, x, y, jnp.int32(step))
        writers["cond"](step, stats)   # due only on multiples of EVERY: no transfer otherwise
        jax.block_until_ready(stats["loss"])
        return (p, b, o)

    variants = {"plain": run_plain, "monitor_every_step": run_monitored}
    compile_s, states, times = {}, {}, {name: [] for name in variants}
    for name, run in variants.items():
        t0 = time.perf_counter()
        states[name] = run(state, 0)   # step 0: compiles (the cond variant also logs)
        compile_s[name] = time.perf_counter() - t0
        print(f"  {name}: first step (compile) {compile_s[name]:.1f} s", flush=True)
    for r in range(args.rounds + 1):
        for name, run in variants.items():
            for i in range(args.steps):
                step = 1 + r * args.steps + i   # never a multiple of EVERY for the cond variant here
                t0 = time.perf_counter()
                states[name] = run(states[name], step)
                if r:
                    times[name].append(time.perf_counter() - t0)
    if args.cond:   # not interleaved: one of its steps takes as long as a round of the others
        states["cond"] = run_cond(state, 0)
        times["cond_off_step"] = []
        for step in range(1, 1 + args.steps):
            t0 = time.perf_counter()
            states["cond"] = run_cond(states["cond"], step)
            times["cond_off_step"].append(time.perf_counter() - t0)
    for w in writers.values():
        w.close()

    median = {name: statistics.median(t) for name, t in times.items()}
    plain, every = median["plain"], median["monitor_every_step"]
    settings = [
        ("plain", "user's jitted step", plain),
        ("monitor_every_step", "stats + writer every step", every),
        ("monitor_every_100", "two functions: plain 99, monitored 1", (99 * plain + every) / 100),
    ]
    if "cond_off_step" in median:
        cond = median["cond_off_step"]
        settings += [("monitor_every_100_cond", "lax.cond, non-logging step", cond),
                     ("monitor_every_100_cond", "lax.cond, amortized", (99 * cond + every) / 100)]
    rows = []
    print(f"\n{'setting':<24} {'how':<38} {'ms/step':>9} {'x plain':>8}")
    for name, how, seconds in settings:
        rows.append({"bench": name, "config": f"resnet18 b{args.batch} {how}", "ms_per_step": seconds * 1e3,
                     "cost_vs_plain": seconds / plain, "n_steps": args.rounds * args.steps,
                     "layers": len(mon.layer_names), **({"compile_s": compile_s[name]} if name in compile_s else {})})
        print(f"{name:<24} {how:<38} {seconds * 1e3:9.1f} {seconds / plain:8.3f}", flush=True)
    print(f"(medians of {args.rounds * args.steps} steps each, interleaved; "
          f"{len(mon.layer_names)} probed layers, {len(mon.group_names)} parameter groups)")
    return write_csv(rows, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""A monitored training loop in plain JAX: a deep sigmoid MLP on the digits, written to TensorBoard.

    python examples/monitor/monitor_loop.py [--logdir runs/monitor] [--steps 1000]
        [--figure docs/figures/monitor_tensorboard.png]

The loop of docs/flax.md ("A monitor inside your own training step"): every pre-activation is
tapped, the monitored step runs on logging steps only (``measure=writer.due(step)``, a static
argument: two compiled functions), and the writer warns when the ||dL/dh|| profile is
vanishing. ``--figure`` reads the event files back and draws ||dL/dh_l|| of every layer over
the steps.
"""

from __future__ import annotations

import argparse
from functools import partial

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgbench.monitor import Monitor, Writer, read_scalars, tap
from vgbench.tasks.classification import digits_split


def init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def loss_fn(params, x, y):
    h = x
    for i, layer in enumerate(params):
        h = tap(f"dense_{i}", h @ layer["w"] + layer["b"])   # a layer for the monitor
        if i < len(params) - 1:
            h = jax.nn.sigmoid(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def train(logdir: str, steps: int, depth: int = 10, width: int = 64, batch: int = 128,
          every: int = 10, lr: float = 1e-3) -> None:
    x_all, y_all, train_index, _, _ = digits_split()
    x_all = (x_all - x_all[train_index].mean(0)) / (x_all[train_index].std(0) + 1e-6)
    x_train, y_train = jnp.asarray(x_all[train_index]), jnp.asarray(y_all[train_index])
    params = init(jax.random.PRNGKey(0), [64] + [width] * depth + [10])
    opt = optax.adam(lr)
    opt_state = opt.init(params)
    mon = Monitor(loss_fn)

    @partial(jax.jit, static_argnames="measure")
    def train_step(params, opt_state, x, y, measure):
        loss, grads, stats = mon(params, x, y, measure=measure)
        updates, opt_state = opt.update(grads, opt_state, params)
        if measure:
            stats["update_ratio"] = mon.update_ratio(params, updates)
        return optax.apply_updates(params, updates), opt_state, stats

    rng = np.random.default_rng(0)
    with Writer(logdir, mon, every=every, histograms=True) as writer:
        for step in range(steps + 1):
            pick = rng.integers(0, len(x_train), batch)
            params, opt_state, stats = train_step(params, opt_state, x_train[pick], y_train[pick],
                                                  measure=writer.due(step))
            writer(step, stats)


def plot_delta_norm(frame, *, ax=None):
    """||dL/dh_l|| of every layer over the steps (log scale), from :func:`read_scalars`' frame."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.gca()
    rows = frame[frame["tag"].str.startswith("delta_norm/")]
    tags = sorted(rows["tag"].unique())
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, len(tags)))
    for colour, tag in zip(colours, tags):
        line = rows[rows["tag"] == tag].sort_values("step")
        ax.semilogy(line["step"], line["value"], color=colour, lw=1.4,
                    label=tag.removeprefix("delta_norm/"))
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\Vert\partial L/\partial h_l\Vert$ (RMS over the batch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, title="layer (input to output)", title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="runs/monitor")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--figure", default=None, help="PNG of ||dL/dh_l|| over the steps")
    args = parser.parse_args(argv)
    train(args.logdir, args.steps)
    print(f"wrote {args.logdir}: tensorboard --logdir {args.logdir}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.5))
        plot_delta_norm(read_scalars(args.logdir), ax=ax)
        ax.set_title("vgbench.monitor: an MLP of 10 sigmoid layers on the digits (Adam 1e-3), "
                     "read back from the TensorBoard event files", fontsize=9)
        fig.savefig(args.figure, dpi=160, bbox_inches="tight")
        plt.close(fig)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

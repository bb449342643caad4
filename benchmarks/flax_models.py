"""Flax models written as people write them, through vgbench's adapters: layers probed,
coverage, the verdict along the signal path, and the seconds to build and measure each.

    python benchmarks/flax_models.py [--out results/flax_models.csv]

Each model is adapted on the digits task's input (or a sequence of it), measured on one batch
at initialization (``vgbench.diagnose.layer_table``), and its verdict read along the signal
path of its layer graph (linen) or over all its layers (NNX). Seconds: adapting the module
(abstract traces) plus the first measurement (compilation included), one process, CPU.
"""

from __future__ import annotations

import argparse
import csv
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

import vgbench  # noqa: F401  # isort: split
from vgbench.diagnose import layer_table, verdict_text, with_roles
from vgbench.models.flax_adapter import adapt_module, coverage, graph
from vgbench.models.nnx_adapter import adapt_nnx_module


class DropoutMLP(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = False):
        for _ in range(4):
            x = nn.Dropout(0.1, deterministic=not training)(nn.relu(nn.Dense(64)(x)))
        return nn.Dense(10)(x)


class ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.tanh(nn.Dense(64)(x)), None


class ScannedStack(nn.Module):
    @nn.compact
    def __call__(self, x):
        blocks = nn.scan(ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=8)
        x, _ = blocks()(nn.Dense(64)(x), None)
        return nn.Dense(10)(x)


class LSTMNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.RNN(nn.LSTMCell(32))(x)[:, -1])


class RematBlock(nn.Module):
    train: bool = False

    @nn.compact
    def __call__(self, x, _):
        h = nn.Dense(128)(nn.LayerNorm()(x))
        h = nn.Dropout(0.1, deterministic=not self.train)(nn.gelu(h))
        return x + nn.Dense(64)(h), None


class RematEncoder(nn.Module):
    """A pre-norm residual MLP stack as flax's guides write one: nn.scan over nn.remat."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        blocks = nn.scan(nn.remat(RematBlock), variable_axes={"params": 0},
                         split_rngs={"params": True, "dropout": True}, length=6)
        x, _ = blocks(train, name="layers")(nn.Dense(64)(x), None)
        return nn.Dense(10)(nn.LayerNorm()(x))


class BiGRU(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Bidirectional(nn.RNN(nn.GRUCell(32)), nn.RNN(nn.GRUCell(32)))(x)
        return nn.Dense(10)(h[:, -1])


class TwoHeads(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(64)(nn.relu(nn.Dense(64)(x))))
        return jnp.concatenate([nn.Dense(9, name="policy")(h), nn.Dense(1, name="value")(h)], -1)


class ZeroScaleResNet(nn.Module):
    """Flax's ResNet block: the last BatchNorm of each residual branch starts at scale 0."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(16, (3, 3))(x)
        for _ in range(4):
            y = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(16, (3, 3))(x)))
            y = nn.BatchNorm(use_running_average=not train, scale_init=nn.initializers.zeros)(
                nn.Conv(16, (3, 3))(y))
            x = nn.relu(x + y)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class LocallyConnected(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.relu(nn.ConvLocal(8, (3, 3))(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class Gain(nnx.Module):
    def __init__(self, width):
        self.g = nnx.Param(jnp.ones((width,)))

    def __call__(self, x):
        return x * self.g[...]


class NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.gain = Gain(16)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.norm(self.conv(x))))
        return self.head(self.gain(h.mean(axis=(1, 2))))


LINEN = [("linen MLP with dropout (flag `training`)", DropoutMLP(), (64,)),
         ("linen nn.scan stack of 8 blocks", ScannedStack(), (64,)),
         ("linen nn.scan(nn.remat) pre-norm stack, dropout", RematEncoder(), (64,)),
         ("linen nn.RNN(LSTMCell) over 8 rows", LSTMNet(), (8, 8)),
         ("linen bidirectional nn.RNN(GRUCell)", BiGRU(), (8, 8)),
         ("linen two heads (policy 9 + value 1)", TwoHeads(), (64,)),
         ("linen ResNet, zero-init last BN scale", ZeroScaleResNet(), (8, 8, 1)),
         ("linen ConvLocal x 3", LocallyConnected(), (8, 8, 1))]


def measure(name, make_model, input_shape, out):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (32, *input_shape))
    y = jax.random.randint(jax.random.PRNGKey(1), (32,), 0, 10)

    def loss(logits, labels):
        return -jnp.mean(jax.nn.log_softmax(logits[:, :10])[jnp.arange(len(labels)), labels])

    start = time.perf_counter()
    model, params, state, roles = make_model(x)
    table = roles(layer_table(model, params, state, x, y, loss))
    seconds = time.perf_counter() - start
    row = {"model": name, "layers": len(table), "coverage": out["coverage"](),
           "verdict": verdict_text(table), "seconds": round(seconds, 1)}
    print(f"{row['model']:42s} {row['layers']:3d} layers  {row['seconds']:5.1f} s\n"
          f"    {row['coverage']}\n    {row['verdict']}")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="a CSV of the rows")
    args = parser.parse_args(argv)
    rows = []
    for i, (name, module, shape) in enumerate(LINEN):
        tag = f"tried_{i}"

        def make(x, module=module, shape=shape, tag=tag):
            model = adapt_module(module, shape, name=tag, output_shape=None)
            params, state = model.init(jax.random.PRNGKey(0))
            return model, params, state, lambda t: with_roles(t, graph(tag))

        rows.append(measure(name, make, shape,
                            {"coverage": lambda tag=tag: coverage(tag).line(tag).split(": ", 1)[1]}))

    def make_nnx(x):
        model, params, state = adapt_nnx_module(NNXCNN(nnx.Rngs(0)), (8, 8, 1), name="tried_nnx")
        return model, params, state, lambda t: t

    rows.append(measure("NNX CNN, BatchNorm, dropout, a hand-written gain", make_nnx, (8, 8, 1),
                        {"coverage": lambda: coverage("tried_nnx").line("tried_nnx").split(": ", 1)[1]}))
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()

"""The compiled run: a whole training run is one program, ``lax.scan`` over steps, over seeds side by side.

The program takes a stack of initial parameters (one per seed, or per (config, seed) for
configs that differ only in initializer or learning rate), a stack of data keys and a stack
of learning rates, and returns every diagnostic in preallocated ``[log_point, layer]`` arrays.

Step ``s`` of the run draws its batch with ``fold_in(data_key, s)``. Log point ``p`` is step
``p * log_every``: the diagnostic step computes the loss and gradients at the current
parameters with zero probes on every pre-activation (one backward pass gives dL/dW and
dL/dh_l), records the statistics, and applies the same update a plain step would; the
remaining ``log_every - 1`` steps of the block are plain steps. The last log point is always
step ``steps`` (``RunSpec.log_steps``): when ``steps`` is not a multiple of ``log_every``, the
last block holds the ``steps % log_every`` remaining steps. The last log point measures without
updating; its ``update_ratio`` is that of the update it would apply.

The entries of one call (seeds, and configs that share the program) run side by side: vmapped
on an accelerator, where that is the parallelism, and one after another inside the program
(``lax.map``) on a CPU, where a model that registers ``batch_split`` splits each batch over
the CPU's devices instead (one per core: :func:`batch_split`). XLA:CPU gains nothing from
batching small matmuls: one entry's step costs the same alone as inside a vmapped batch for
the MLP and CNN, and with 8 vmapped entries an LSTM entry (T = 200, width 32) costs 1.1-1.5x
and a GRU entry 1.0-1.2x what it costs in sequence (``benchmarks/perf.py --entries-only``;
docs/running.md). The sequential
program also compiles faster. An entry's numbers do not depend on which entries share its
call, in either form (``tests/test_train.py``).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgbench import models, optimizers, tasks
from vgbench.models.layers import tree_norm
from vgbench.spec import PROGRAM_INDEPENDENT, RunSpec


def program_key(spec: RunSpec) -> RunSpec:
    """The part of a spec that shapes the compiled program (initializer and lr do not)."""
    return spec.replace(**PROGRAM_INDEPENDENT)


class Program(NamedTuple):
    spec: RunSpec
    task: tasks.Task
    model: models.Model
    run: Any          # jitted (params_S, state_S, data_keys_S, lr_S) -> outputs with leading S
    split: int = 1    # CPU devices each batch is split over (batch_split)


def seed_keys(seeds) -> tuple[jax.Array, jax.Array]:
    """(init_keys, data_keys) for a list of integer seeds; the seed fixes both."""
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    pairs = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    return pairs[:, 0], pairs[:, 1]


def init_params(spec: RunSpec, seeds, *, task=None):
    """Initial (params, state) for each seed, stacked on a leading axis, and the data keys.

    The model is built from ``spec`` itself (its initializer is not part of the program), so
    configs that share a program each get their own initialization.
    """
    task = task or tasks.make(spec)
    model = models.make(spec, task)
    init_keys, data_keys = seed_keys(seeds)
    params, state = jax.jit(jax.vmap(model.init))(init_keys)
    return params, state, data_keys


def tree_finite(tree):
    """True when the sum of each leaf is finite: every infinity and NaN is caught.

    An infinity or a NaN makes its leaf's sum ±inf or NaN. A finite gradient whose entries sum
    beyond the float32 range (entries near 1e33 for a 512 x 512 layer) counts as non-finite
    too: its update would overflow the next forward pass. One vectorized read of each leaf;
    ``all(isfinite(leaf))`` costs four times as much on XLA:CPU, which runs it as an unfused
    is-finite and a reduce-window (about 1 ms of a 10 ms depth-20 width-512 step).
    """
    total = sum(jnp.sum(jnp.asarray(leaf, jnp.float32)) for leaf in jax.tree_util.tree_leaves(tree))
    return jnp.isfinite(jnp.asarray(total, jnp.float32))


def forward_in_chunks(model, params, state, x, chunk: int | None):
    """The model's evaluation outputs for every example of ``x``, at most ``chunk`` examples
    per forward pass (equal chunks, the last padded and its padding dropped; None: one pass)."""
    n = x.shape[0]
    if chunk is None or n <= chunk:
        return model.apply(params, state, x, train=False)[0]
    n_chunks = -(-n // chunk)
    size = -(-n // n_chunks)             # equal chunks: at most n_chunks - 1 padded examples
    padded = jnp.concatenate([x, jnp.zeros((n_chunks * size - n, *x.shape[1:]), x.dtype)])
    out = jax.lax.map(lambda c: model.apply(params, state, c, train=False)[0],
                      padded.reshape(n_chunks, size, *x.shape[1:]))
    return out.reshape(n_chunks * size, *out.shape[2:])[:n]


def entries_in_sequence() -> bool:
    """Whether a program runs its entries one after another (on a CPU) or vmapped."""
    return jax.default_backend() == "cpu"


def batch_split(spec: RunSpec) -> int:
    """CPU devices a program of ``spec`` splits each batch over (1: no split).

    A model that registers ``batch_split=True``, on a CPU backend with several devices (one per
    usable core, ``vgbench.cpu_devices``): the largest count up to the devices that divides the
    training batch, so every device gets an equal slice.
    """
    if not models.facts(spec.model).batch_split or jax.default_backend() != "cpu":
        return 1
    devices = jax.local_device_count()
    return max(d for d in range(1, devices + 1) if spec.batch_size % d == 0)


def split_shardings(split: int):
    """(by_batch, replicated): the layouts of a program split over ``split`` CPU devices, its
    batch along the first axis and everything else whole on every device (None, None: 1)."""
    if split == 1:
        return None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.local_devices()[:split]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


def build_program(spec: RunSpec, *, diagnostics: bool = True, jit: bool = True,
                  sequential: bool | None = None, split: int | None = None) -> Program:
    """Compile-ready program for every run that shares ``program_key(spec)``.

    ``sequential``: run the entries of a call one after another (``lax.map``) rather than
    vmapped; None: :func:`entries_in_sequence` decides. ``split``: CPU devices to split each
    batch over; None: :func:`batch_split` decides. A split program is one SPMD program over
    ``split`` devices: the batch (and each evaluation set whose size ``split`` divides) is laid
    out along its first axis, everything else replicated; XLA partitions the rest and sums the
    gradients across devices.
    """
    if sequential is None:
        sequential = entries_in_sequence()
    split = batch_split(spec) if split is None else int(split)
    if split < 1 or spec.batch_size % split or split > jax.local_device_count():
        raise ValueError(f"split={split}: expected a count of devices (at most "
                         f"{jax.local_device_count()}) that divides batch_size={spec.batch_size}")
    task = tasks.make(spec)
    model = models.make(spec, task)
    by_batch, replicated = split_shardings(split)

    def split_batch(*arrays):
        """The arrays laid out along their first (example) axis over the devices of the split."""
        if by_batch is None:
            return arrays
        return tuple(jax.lax.with_sharding_constraint(a, by_batch) for a in arrays)
    batch, every, n_blocks = spec.batch_size, spec.log_every, spec.steps // spec.log_every
    remainder = spec.steps % every   # steps of a last, shorter block (0: every block is full)
    splits = {"train": task.eval_train, "val": task.eval_val, "test": task.eval_test}

    def joined(*names):
        """The named evaluation sets' examples as one array (joined once, here), and for each
        set its name, labels and rows in it: they go through one forward pass, so the program
        holds one copy of the model for them, not one per set."""
        xs = [np.asarray(splits[n][0]) for n in names]
        bounds = np.cumsum([0] + [len(x) for x in xs])
        return jnp.asarray(np.concatenate(xs)), [(n, jnp.asarray(splits[n][1]), a, b)
                                                for n, a, b in zip(names, bounds[:-1], bounds[1:])]

    at_log_points, at_end = joined("val", "test"), joined("train", "val", "test")
    target_key = task.target_metric

    def loss_fn(params, state, x, y, probes=None):
        out, new_state, stats = model.apply(params, state, x, train=True, probes=probes)
        return task.loss(out, y), (new_state, stats)

    eval_chunk = models.facts(spec.model).eval_chunk

    def run_one(params, state, data_key, lr, *, chunk):
        def evaluate(params, state, sets):
            x, parts = sets
            if x.shape[0] % split == 0:
                x, = split_batch(x)
            outputs = forward_in_chunks(model, params, state, x, chunk)
            return {name: task.metrics(outputs[a:b], y) for name, y, a, b in parts}

        if model.compute_layout is not None:
            params = model.compute_layout(params)
        layer_axes = model.layer_axes(params) if model.layer_axes is not None else None
        opt = optimizers.build(spec, lr, layer_axes)
        opt_state = opt.init(params)

        def update(params, opt_state, grads):
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, updates

        def plain_step(carry, step):
            params, state, opt_state, diverged_at = carry
            x, y = split_batch(*task.sample(jax.random.fold_in(data_key, step), batch))
            (loss, (state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
            params, opt_state, _ = update(params, opt_state, grads)
            bad = ~(jnp.isfinite(loss) & tree_finite(grads))
            diverged_at = jnp.where((diverged_at < 0) & bad, step, diverged_at)
            return (params, state, opt_state, diverged_at), loss

        def diag_step(carry, step):
            params, state, opt_state, diverged_at = carry
            x, y = split_batch(*task.sample(jax.random.fold_in(data_key, step), batch))
            probes = model.probes(batch)
            grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 4), has_aux=True)
            (loss, (new_state, stats)), (grads, probe_grads) = grad_fn(params, state, x, y, probes)
            new_params, new_opt_state, updates = update(params, opt_state, grads)
            grad_global = tree_norm(grads)
            weight_norm = model.per_layer(params)
            ev = evaluate(params, state, at_log_points)
            val, test = ev["val"], ev["test"]
            log = {"loss": loss, "val_loss": val["loss"], "val_metric": val[target_key],
                   "test_loss": test["loss"], "test_metric": test[target_key],
                   "grad_global_norm": grad_global, "grad_norm": model.per_layer(grads),
                   "weight_norm": weight_norm,
                   "update_ratio": model.per_layer(updates) / weight_norm,
                   "weight_samples": model.weight_samples(params),
                   **model.probe_stats(probe_grads), **stats}
            bad = ~(jnp.isfinite(loss) & tree_finite(grads))
            diverged_at = jnp.where((diverged_at < 0) & bad, step, diverged_at)
            return (new_params, new_state, new_opt_state, diverged_at), log

        def logged_step(carry, step):
            if diagnostics:
                return diag_step(carry, step)
            new_carry, loss = plain_step(carry, step)
            return new_carry, {"loss": loss}

        def advance(c, start, length):
            if length > 0:
                # two steps per iteration: scanned one at a time inside the scan over
                # blocks, XLA:CPU copies every updated weight into the loop state per step
                c, _ = jax.lax.scan(plain_step, c, start + 1 + jnp.arange(length), unroll=2)
            return c

        def block(carry, b):
            # one diagnostic step, then log_every - 1 plain steps. Without a remainder the
            # extra last block only measures (step == steps): its update is computed for
            # update_ratio, not applied; with one, it is the short block of the remainder
            start = b * every
            new_carry, log = logged_step(carry, start)
            last = ((lambda: advance(new_carry, start, remainder - 1)) if remainder
                    else (lambda: carry))
            carry = jax.lax.cond(b < n_blocks, lambda: advance(new_carry, start, every - 1), last)
            return carry, log

        carry = (params, state, opt_state, jnp.int32(-1))
        carry, logs = jax.lax.scan(block, carry, jnp.arange(n_blocks + 1))
        if remainder:   # the end of training, measured without updating
            _, last_log = logged_step(carry, jnp.int32(spec.steps))
            logs = jax.tree_util.tree_map(lambda a, x: jnp.concatenate([a, x[None]]), logs, last_log)
        params, state, _, diverged_at = carry
        final = evaluate(params, state, at_end)
        return {"logs": logs, "final": final, "diverged_at": diverged_at}

    def run(params, state, data_keys, lrs):
        entries = lrs.shape[0]
        one = functools.partial(run_one, chunk=eval_chunk)
        if entries == 1:
            # XLA:CPU runs a batch-of-one matmul markedly slower than a plain one: a lone
            # entry, like each entry of a sequential program, runs unbatched
            alone = jax.tree_util.tree_map(lambda a: a[0], (params, state, data_keys, lrs))
            return jax.tree_util.tree_map(lambda a: a[None], one(*alone))
        if sequential:
            return jax.lax.map(lambda args: one(*args), (params, state, data_keys, lrs))
        # a model's eval_chunk counts the examples of one forward pass over all vmapped entries
        chunk = None if eval_chunk is None else max(1, eval_chunk // entries)
        return jax.vmap(functools.partial(run_one, chunk=chunk))(params, state, data_keys, lrs)

    if jit and replicated is not None:
        run = jax.jit(run, in_shardings=replicated, out_shardings=replicated)
    elif jit:
        run = jax.jit(run)
    return Program(spec=spec, task=task, model=model, run=run, split=split)


class RawRun(NamedTuple):
    """Host-side (numpy) outputs of a program call, plus timings."""

    outputs: dict
    compile_s: float
    run_s: float


def execute(program: Program, params, state, data_keys, lrs) -> RawRun:
    """Compile (timed) and run the program on stacked inputs; outputs come back as numpy."""
    lrs = jnp.asarray(lrs, jnp.float32)
    t0 = time.perf_counter()
    compiled = program.run.lower(params, state, data_keys, lrs).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = compiled(params, state, data_keys, lrs)
    out = jax.block_until_ready(out)
    run_s = time.perf_counter() - t0
    return RawRun(outputs=jax.tree_util.tree_map(np.asarray, out), compile_s=compile_s, run_s=run_s)


def train(spec: RunSpec, seeds) -> tuple[Program, RawRun]:
    """Run one config for the given seeds (vmapped) and return the program and raw outputs."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    program = build_program(spec)
    params, state, data_keys = init_params(spec, seeds, task=program.task)
    raw = execute(program, params, state, data_keys, [spec.lr] * len(seeds))
    return program, raw

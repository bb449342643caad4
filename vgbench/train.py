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
batching small matmuls, and the sequential program compiles faster (measured in
docs/running.md, "Entries in sequence on a CPU"). An entry's numbers do not depend on which
entries share its call, in either form (``tests/test_train.py``).

A step is written once, for one entry, at module level (:func:`train_step`,
:func:`diagnostic_step`, :func:`run_blocks`); :func:`build_program` adds how the entries run
fast: devices, evaluation chunks, side by side (:func:`side_by_side`).
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
from vgbench.diagnostics.measure import measure
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


class Step(NamedTuple):
    """What a training step of one entry needs: the program's parts and the entry's own."""

    task: tasks.Task
    model: models.Model
    opt: optax.GradientTransformation
    batch: int               # examples per step
    data_key: jax.Array      # the entry's; step s draws its batch with fold_in(data_key, s)
    place: Any               # lays a batch out over the program's devices (identity: one)
    evaluate: Any            # (params, state) -> {"val": metrics, "test": metrics}


class Carry(NamedTuple):
    params: Any
    state: Any
    opt_state: Any
    diverged_at: jax.Array   # the first step with a non-finite loss or gradient (-1: none)


def loss_fn(ctx: Step, params, state, x, y, probes=None):
    out, new_state, stats = ctx.model.apply(params, state, x, train=True, probes=probes)
    return ctx.task.loss(out, y), (new_state, stats)


def sample(ctx: Step, step):
    """The training batch of ``step``."""
    return ctx.place(*ctx.task.sample(jax.random.fold_in(ctx.data_key, step), ctx.batch))


def apply_update(ctx: Step, params, opt_state, grads):
    updates, opt_state = ctx.opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, updates


def diverged(diverged_at, step, loss, grads):
    """``diverged_at``, set to ``step`` if it is unset and the loss or a gradient is not finite."""
    bad = ~(jnp.isfinite(loss) & tree_finite(grads))
    return jnp.where((diverged_at < 0) & bad, step, diverged_at)


def train_step(ctx: Step, carry: Carry, step) -> tuple[Carry, jax.Array]:
    """One plain step: the loss and gradient of a batch, and the optimizer's update."""
    x, y = sample(ctx, step)
    (loss, (state, _)), grads = jax.value_and_grad(
        functools.partial(loss_fn, ctx), has_aux=True)(carry.params, carry.state, x, y)
    params, opt_state, _ = apply_update(ctx, carry.params, carry.opt_state, grads)
    return Carry(params, state, opt_state, diverged(carry.diverged_at, step, loss, grads)), loss


def diagnostic_step(ctx: Step, carry: Carry, step) -> tuple[Carry, dict]:
    """A plain step that also measures: zero probes on every pre-activation give dL/dW and
    dL/dh_l in one backward pass; the log is :func:`vgbench.diagnostics.measure.measure`."""
    x, y = sample(ctx, step)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, ctx), argnums=(0, 4), has_aux=True)
    (loss, (state, stats)), (grads, probe_grads) = grad_fn(
        carry.params, carry.state, x, y, ctx.model.probes(ctx.batch))
    params, opt_state, updates = apply_update(ctx, carry.params, carry.opt_state, grads)
    ev = ctx.evaluate(carry.params, carry.state)
    log = measure(ctx.model, loss=loss, grads=grads, params=carry.params, updates=updates,
                  probe_grads=probe_grads, stats=stats, val=ev["val"], test=ev["test"],
                  metric=ctx.task.target_metric)
    return Carry(params, state, opt_state, diverged(carry.diverged_at, step, loss, grads)), log


def run_blocks(ctx: Step, carry: Carry, steps: int, every: int, *, diagnostics: bool = True):
    """Train for ``steps`` steps, logging every ``every``-th (``RunSpec.log_steps``).

    A block is one logged step, then ``every - 1`` plain steps. Without a remainder the extra
    last block only measures (step == steps): its update is computed for ``update_ratio``, not
    applied; with one, it is the short block of the remainder, and the end of training is
    measured after it without updating. Returns the final carry and the stacked logs.
    """
    n_blocks, remainder = steps // every, steps % every

    def logged(c, step):
        if diagnostics:
            return diagnostic_step(ctx, c, step)
        c, loss = train_step(ctx, c, step)
        return c, {"loss": loss}

    def advance(c, start, length):
        if length > 0:
            # two steps per iteration: scanned one at a time inside the scan over blocks,
            # XLA:CPU copies every updated weight into the loop state per step
            c, _ = jax.lax.scan(functools.partial(train_step, ctx), c,
                                start + 1 + jnp.arange(length), unroll=2)
        return c

    def block(c, b):
        start = b * every
        new_c, log = logged(c, start)
        last = (lambda: advance(new_c, start, remainder - 1)) if remainder else (lambda: c)
        return jax.lax.cond(b < n_blocks, lambda: advance(new_c, start, every - 1), last), log

    carry, logs = jax.lax.scan(block, carry, jnp.arange(n_blocks + 1))
    if remainder:
        _, last_log = logged(carry, jnp.int32(steps))
        logs = jax.tree_util.tree_map(lambda a, x: jnp.concatenate([a, x[None]]), logs, last_log)
    return carry, logs


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
    place = placement(by_batch)
    at_log_points, at_end = eval_sets(task, ("val", "test")), eval_sets(task, ("train", "val", "test"))
    eval_chunk = models.facts(spec.model).eval_chunk

    def run_one(params, state, data_key, lr, *, chunk):
        def evaluate(params, state, sets):
            x, parts = sets
            if x.shape[0] % split == 0:
                x, = place(x)
            outputs = forward_in_chunks(model, params, state, x, chunk)
            return {name: task.metrics(outputs[a:b], y) for name, y, a, b in parts}

        if model.compute_layout is not None:
            params = model.compute_layout(params)
        layer_axes = model.layer_axes(params) if model.layer_axes is not None else None
        opt = optimizers.build(spec, lr, layer_axes)
        ctx = Step(task=task, model=model, opt=opt, batch=spec.batch_size, data_key=data_key,
                   place=place, evaluate=lambda p, s: evaluate(p, s, at_log_points))
        carry = Carry(params, state, opt.init(params), jnp.int32(-1))
        carry, logs = run_blocks(ctx, carry, spec.steps, spec.log_every, diagnostics=diagnostics)
        final = evaluate(carry.params, carry.state, at_end)
        return {"logs": logs, "final": final, "diverged_at": carry.diverged_at}

    run = side_by_side(run_one, eval_chunk, sequential)
    if jit:
        run = (jax.jit(run) if replicated is None
               else jax.jit(run, in_shardings=replicated, out_shardings=replicated))
    return Program(spec=spec, task=task, model=model, run=run, split=split)


def placement(by_batch):
    """A function laying arrays out along their first (example) axis in the ``by_batch``
    layout of :func:`split_shardings` (the identity for None: one device)."""
    if by_batch is None:
        return lambda *arrays: arrays
    return lambda *arrays: tuple(jax.lax.with_sharding_constraint(a, by_batch) for a in arrays)


def eval_sets(task: tasks.Task, names):
    """The named evaluation sets' examples as one array (joined once, here), and for each set
    its name, labels and rows in it: they go through one forward pass, so the program holds one
    copy of the model for them, not one per set."""
    splits = {"train": task.eval_train, "val": task.eval_val, "test": task.eval_test}
    xs = [np.asarray(splits[n][0]) for n in names]
    bounds = np.cumsum([0] + [len(x) for x in xs])
    return jnp.asarray(np.concatenate(xs)), [(n, jnp.asarray(splits[n][1]), a, b)
                                            for n, a, b in zip(names, bounds[:-1], bounds[1:])]


def side_by_side(run_one, eval_chunk: int | None, sequential: bool):
    """``run(params, state, data_keys, lrs)``: ``run_one`` over the leading (entry) axis of its
    inputs; one after another (``lax.map``) or vmapped, a lone entry unbatched."""
    one = functools.partial(run_one, chunk=eval_chunk)

    def run(params, state, data_keys, lrs):
        entries = lrs.shape[0]
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

    return run


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

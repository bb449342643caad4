"""Speed of the recurrent training step: LSTM and GRU at T = 200, hidden 128, batch 64.

One row per cell and implementation: the time of a full training step (forward, backward,
Adam update) on the adding task, and the achieved GFLOP/s against a roofline measured in the
same process (a 2048^3 float32 matmul, best of several). FLOPs count the matmuls only: the
recurrent product h W_h, the input projection x W_x and the head, forward and backward (3x
the forward products: ∂L/∂h and ∂L/∂W each cost one more). Every case is timed in
interleaved rounds (best of each), in wall-clock time and in process CPU time: on a shared
machine the wall-clock figures carry the neighbours' load, the CPU-time ones much less.

Implementations (``--compare``):

* ``straightforward``: the textbook lax.scan cell (four gate slices, jax.nn.sigmoid, an
  einsum plus a bias for the input projection), differentiated by JAX;
* ``vgbench cells, autodiff scan``: vgbench's cells (one tanh over the fused LSTM gates,
  sigmoid through tanh, the bias inside the projection matmul) under JAX's own scan transpose;
* ``vgbench``: the model as trained (:func:`vgbench.models.rnn.fused_recurrence`), its batch
  split over the process's CPU devices as a training program splits it
  (:func:`vgbench.train.batch_split`; one per usable core unless ``VGBENCH_CPU_DEVICES`` says);
* ``vgbench, one device``: the same step on one device (when the batch splits);
* ``vgbench, one step per call``: the same step dispatched from Python one call at a time;
* ``vgbench at REV`` (``--before REV``): the model of an earlier git revision;
* ``pytorch eager``: ``torch.nn.LSTM`` / ``torch.nn.GRU`` with a linear head and
  ``torch.optim.Adam``, when PyTorch is importable (the ``compare`` extra).

    python benchmarks/perf_rnn.py [--compare] [--before REV] [--rounds N]

``rnn_rows(roofline_gflops)`` is what benchmarks/perf.py calls for its table.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import vgbench  # noqa: F401  (first: importing it sets vgbench's XLA flags before JAX starts)

# isort: split
import jax
import jax.numpy as jnp
import optax

from vgbench import tasks, train
from vgbench.models import rnn
from vgbench.spec import RunSpec

SEQ_LEN, WIDTH, BATCH = 200, 128, 64
CELLS = ("lstm", "gru")


def roofline(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s (wall clock) of an n x n by n x n float32 matmul on the default device."""
    return 2 * n ** 3 / min(best_times([_matmul(n)], rounds=repeats, inner=1)[0]) / 1e9


def _matmul(n):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    return lambda: matmul(a)


def step_flops(cell: rnn.Cell, seq_len: int, width: int, batch: int, channels: int,
               outputs: int) -> float:
    """Matmul FLOPs of one training step of a one-layer network (3x the forward products)."""
    k = cell.blocks * width
    forward = 2 * seq_len * batch * (width * k + channels * k) + 2 * batch * width * outputs
    return 3.0 * forward


def straightforward(name: str):
    """``apply(params, x) -> out``: the textbook lax.scan LSTM / GRU on vgbench's parameters."""
    def lstm(z, c, h):
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return c, jax.nn.sigmoid(o) * jnp.tanh(c)

    def apply(params, x):
        p = params["first"]
        xp = jnp.einsum("btc,ck->tbk", x, p["w_x"]) + p["b"]
        h0 = jnp.zeros((x.shape[0], p["w_h"].shape[0]), x.dtype)

        def step(carry, xp_t):
            c, h = carry
            if name == "lstm":
                c, h = lstm(xp_t + h @ p["w_h"], c, h)
            else:
                x_r, x_z, x_n = jnp.split(xp_t, 3, axis=-1)
                h_r, h_z, h_n = jnp.split(h @ p["w_h"], 3, axis=-1)
                r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
                n = jnp.tanh(x_n + r * (h_n + p["cell"]["b_hn"]))
                h = (1 - z) * n + z * h
            return (c, h), None

        (_, h), _ = jax.lax.scan(step, (h0, h0), xp)
        return h @ params["out"]["w"] + params["out"]["b"]

    return apply


IMPLEMENTATIONS = ("straightforward", "vgbench cells, autodiff scan", "vgbench")
ONE_DEVICE = "vgbench, one device"   # the step without the batch split (when it splits)
STEPS_PER_CALL = 10                  # vgbench's steps, timed inside one compiled loop
ONE_PER_CALL = "vgbench, one step per call"
PYTORCH = "pytorch eager"


def torch_available() -> bool:
    try:
        import torch  # noqa: F401  (optional: the `compare` extra)
    except ImportError:
        return False
    return True


def build_torch_step(name: str, *, seq_len=SEQ_LEN, width=WIDTH, batch=BATCH):
    """``run()`` does one eager PyTorch training step of the same network (nn.LSTM / nn.GRU,
    one layer, a linear head on h_T, MSE, Adam 1e-3) on the same adding batch."""
    import numpy as np
    import torch

    spec = RunSpec(task="adding", model="rnn", cell=name, depth=1, width=width, seq_len=seq_len,
                   batch_size=batch)
    task = tasks.make(spec)
    torch.manual_seed(0)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](task.input_shape[1], width,
                                                              batch_first=True)
    head = torch.nn.Linear(width, task.output_dim)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=1e-3)
    x, y = (torch.from_numpy(np.array(a, np.float32)) for a in task.sample(jax.random.PRNGKey(1), batch))

    def run():
        opt.zero_grad(set_to_none=True)
        h, _ = layer(x)
        loss = torch.mean((head(h[:, -1]).squeeze(-1) - y) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    run()  # the first call allocates
    return run


def whole_run_rows(cells=CELLS, *, steps: int = 500, seq_len=SEQ_LEN, width=WIDTH,
                   batch=BATCH) -> list[dict]:
    """Wall time of a whole training run: ``vgbench train`` (compile, then the program with
    its diagnostics at the default log_every) against a plain PyTorch loop (eager, data drawn
    with torch at every step, one test evaluation at the end), one seed each."""
    from vgbench import train

    rows = []
    for name in cells:
        spec = RunSpec(task="adding", model="rnn", cell=name, depth=1, width=width,
                       seq_len=seq_len, batch_size=batch, optimizer="adam", lr=1e-3, steps=steps)
        t0 = time.perf_counter()
        _, raw = train.train(spec, [0])
        total = time.perf_counter() - t0
        rows.append({"benchmark": f"rnn_{name}_train_run", "implementation": "vgbench",
                     "steps": steps, "log_every": spec.log_every, "wall_s": round(total, 2),
                     "compile_s": round(raw.compile_s, 2), "run_s": round(raw.run_s, 2)})
        if torch_available():
            wall = _torch_run(name, steps=steps, seq_len=seq_len, width=width, batch=batch)
            rows.append({"benchmark": f"rnn_{name}_train_run", "implementation": PYTORCH,
                         "steps": steps, "wall_s": round(wall, 2)})
            rows[-2]["speedup_vs_pytorch"] = round(wall / total, 2)
    return rows


def _torch_run(name: str, *, steps: int, seq_len: int, width: int, batch: int) -> float:
    """Seconds of a plain PyTorch training loop on freshly drawn adding batches."""
    import torch

    def adding_batch(n, generator):
        values = torch.rand(n, seq_len, generator=generator)
        rows_ = torch.arange(n)
        first = torch.randint(0, seq_len // 2, (n,), generator=generator)
        second = torch.randint(seq_len // 2, seq_len, (n,), generator=generator)
        marker = torch.zeros(n, seq_len)
        marker[rows_, first] = 1.0
        marker[rows_, second] = 1.0
        return torch.stack([values, marker], -1), values[rows_, first] + values[rows_, second]

    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](2, width, batch_first=True)
    head = torch.nn.Linear(width, 1)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=1e-3)

    def loss_of(x, y):
        return torch.mean((head(layer(x)[0][:, -1]).squeeze(-1) - y) ** 2)

    for _ in range(steps):
        x, y = adding_batch(batch, generator)
        opt.zero_grad(set_to_none=True)
        loss_of(x, y).backward()
        opt.step()
    with torch.no_grad():
        loss_of(*adding_batch(512, generator)).item()
    return time.perf_counter() - t0


def model_at(revision: str):
    """The module vgbench/models/rnn.py as it was at git ``revision``, loaded on its own.

    For before/after timings in one process; the old module keeps its own cell registry, and
    its model is not registered (the current one is).
    """
    import importlib.util
    import subprocess
    import tempfile
    from pathlib import Path

    from vgbench import models, registry

    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{revision}:vgbench/models/rnn.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "rnn_before.py"
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location(f"rnn_at_{revision}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up
    register, models.register_model = models.register_model, lambda *a, **k: None
    axes = dict(getattr(registry, "_AXES", {}))   # its own cell registry claims no config field
    getattr(registry, "_AXES", {}).clear()
    try:
        module_spec.loader.exec_module(module)
    finally:
        models.register_model = register
        if hasattr(registry, "_AXES"):
            registry._AXES.clear()
            registry._AXES.update(axes)
    return module


def build_step(name: str, implementation: str = "vgbench", *, seq_len=SEQ_LEN, width=WIDTH,
               batch=BATCH, module=rnn, split: int | None = None,
               steps_per_call: int = STEPS_PER_CALL):
    """(run, flops): ``run()`` does ``steps_per_call`` compiled training steps (one compiled
    loop, as a training program runs them); flops counts the matmuls of one step.

    ``module``: the rnn module whose model is timed (:func:`model_at` for an older one).
    ``split``: CPU devices the batch is split over, laid out as a training program lays it
    out (``vgbench.train.split_shardings``); None: as ``vgbench train`` would
    (``train.batch_split``), 1: on one device.
    """
    spec = RunSpec(task="adding", model="rnn", cell=name, depth=1, width=width, seq_len=seq_len,
                   batch_size=batch, optimizer="adam", lr=1e-3)
    task = tasks.make(spec)
    recurrence = functools.partial(module.scan_recurrence, unroll=1) \
        if "autodiff" in implementation else module.fused_recurrence
    model = module.make_rnn(spec, task, recurrence=recurrence)
    params, state = model.init(jax.random.PRNGKey(0))
    if implementation == "straightforward":
        apply = straightforward(name)
    else:
        def apply(p, x):
            return model.apply(p, state, x, train=True)[0]
    opt = optax.adam(1e-3)

    if implementation == ONE_DEVICE:
        split = 1
    elif split is None:
        split = train.batch_split(spec)
    by_batch, replicated = train.split_shardings(split)

    def step(p, o, x, y):  # the batch is an argument, as in training: XLA cannot fold it
        if by_batch is not None:
            x, y = jax.lax.with_sharding_constraint((x, y), by_batch)
        value, grads = jax.value_and_grad(lambda p: task.loss(apply(p, x), y))(p)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    # a batch per step, as in training: nothing that depends on the batch can leave the loop
    xs, ys = jax.vmap(lambda key: task.sample(key, batch))(
        jax.random.split(jax.random.PRNGKey(1), steps_per_call))

    def steps(p, o, xs, ys):
        def body(carry, batch_):
            p, o, value = step(*carry, *batch_)
            return (p, o), value

        (p, o), values = jax.lax.scan(body, (p, o), (xs, ys))
        return p, o, values[-1]

    run_steps = jax.jit(steps) if by_batch is None else jax.jit(steps, in_shardings=replicated,
                                                                out_shardings=replicated)
    carry = jax.block_until_ready(run_steps(params, opt.init(params), xs, ys))

    def run():
        nonlocal carry
        carry = run_steps(*carry[:2], xs, ys)
        return carry

    flops = step_flops(rnn.get_cell(name), seq_len, width, batch, task.input_shape[1],
                       task.output_dim)
    return run, flops


def best_times(runs: list, rounds: int = 7, inner: int = 3) -> list[tuple[float, float]]:
    """(best wall seconds, best CPU seconds) per call of each function, in interleaved rounds.

    Interleaving keeps the comparison fair on a shared machine whose load changes.
    """
    best = [(float("inf"), float("inf"))] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready([run() for _ in range(inner)][-1])
            wall, cpu = (time.perf_counter() - wall) / inner, (time.process_time() - cpu) / inner
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def rnn_rows(roofline_gflops: float | None = None, *, cells=CELLS, compare: bool = False,
             before: str | None = None, rounds: int = 7, **sizes) -> list[dict]:
    """One row per cell (and per implementation with ``compare``) for benchmarks/perf.py.

    The roofline is re-measured in the same interleaved rounds (for its CPU-time figure); the
    wall-clock fraction uses ``roofline_gflops`` when given. ``before``: a git revision whose
    model is timed too (implementation ``vgbench at <revision>``). With PyTorch importable,
    its eager step of the same network is timed in the same rounds.
    """
    chosen = IMPLEMENTATIONS if compare else ("vgbench",)
    if train.batch_split(RunSpec(model="rnn", batch_size=sizes.get("batch", BATCH))) > 1:
        chosen = (*chosen, ONE_DEVICE)
    k = STEPS_PER_CALL
    # (cell, implementation, run, FLOPs per step, steps per call)
    cases = [(name, impl, *build_step(name, impl, **sizes), k) for name in cells for impl in chosen]
    if compare:   # the same step dispatched from Python one at a time, as PyTorch's is
        cases += [(name, ONE_PER_CALL, *build_step(name, steps_per_call=1, **sizes), 1)
                  for name in cells]
    if before:
        old = model_at(before)
        cases += [(name, f"vgbench at {before}", *build_step(name, module=old, **sizes), k)
                  for name in cells]
    if torch_available():  # timed in the same rounds; FLOPs as vgbench's step of the same cell
        cases += [(name, PYTORCH, build_torch_step(name, **sizes), case[3], 1)
                  for name in cells for case in cases if case[:2] == (name, "vgbench")]
    n = 2048
    times = best_times([_matmul(n)] + [case[2] for case in cases], rounds=rounds)
    peak_wall, peak_cpu = (2 * n ** 3 / t / 1e9 for t in times[0])
    peak_wall = roofline_gflops or peak_wall
    rows = []
    for (name, impl, _, flops, per_call), (wall, cpu) in zip(cases, times[1:]):
        wall, cpu = wall / per_call, cpu / per_call
        rows.append({"benchmark": f"rnn_{name}_train_step", "implementation": impl,
                     "steps_per_call": per_call,
                     "seq_len": sizes.get("seq_len", SEQ_LEN), "width": sizes.get("width", WIDTH),
                     "batch": sizes.get("batch", BATCH), "gflop_per_step": round(flops / 1e9, 3),
                     "ms_per_step": round(1e3 * wall, 2), "gflops": round(flops / wall / 1e9, 1),
                     "roofline_gflops": round(peak_wall, 1),
                     "fraction_of_roofline": round(flops / wall / 1e9 / peak_wall, 3),
                     "cpu_ms_per_step": round(1e3 * cpu, 2),
                     "cpu_fraction_of_roofline": round(flops / cpu / 1e9 / peak_cpu, 3)})
    torch_ms = {row["benchmark"]: row["ms_per_step"] for row in rows
                if row["implementation"] == PYTORCH}
    for row in rows:  # > 1: faster than PyTorch's eager step on the same machine
        if row["benchmark"] in torch_ms:
            row["speedup_vs_pytorch"] = round(torch_ms[row["benchmark"]] / row["ms_per_step"], 2)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", action="store_true", help="also time the reference versions")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", metavar="REV", help="also time the model of this git revision")
    parser.add_argument("--whole-run", type=int, metavar="STEPS",
                        help="time whole training runs of STEPS steps instead of single steps")
    args = parser.parse_args(argv)
    if args.whole_run:
        for row in whole_run_rows(args.cells.split(","), steps=args.whole_run):
            print(f"{row['benchmark']:22s} {row['implementation']:15s} {row['wall_s']:7.2f} s"
                  + (f" (compile {row['compile_s']:.2f} s, run {row['run_s']:.2f} s)"
                     if "compile_s" in row else "")
                  + (f" | {row['speedup_vs_pytorch']:.2f}x PyTorch" if "speedup_vs_pytorch" in row else ""))
        return
    rows = rnn_rows(cells=args.cells.split(","), compare=args.compare, before=args.before,
                    rounds=args.rounds)
    print(f"roofline: {rows[0]['roofline_gflops']:.1f} GFLOP/s (2048^3 float32 matmul, wall "
          f"clock), backend {jax.default_backend()}")
    for row in rows:
        print(f"{row['benchmark']:22s} {row['implementation']:29s} {row['ms_per_step']:7.1f} ms "
              f"{row['gflops']:6.1f} GFLOP/s {100 * row['fraction_of_roofline']:5.1f} % of roofline"
              f" | CPU time {row['cpu_ms_per_step']:7.1f} ms "
              f"{100 * row['cpu_fraction_of_roofline']:5.1f} %"
              + (f" | {row['speedup_vs_pytorch']:.2f}x PyTorch" if "speedup_vs_pytorch" in row else ""))
    if not torch_available():
        print("(no PyTorch column: install the `compare` extra, see docs/running.md)")


if __name__ == "__main__":
    main()

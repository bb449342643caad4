"""Where batches run: in this process, in local worker processes, or as tasks on a Ray cluster.

A :class:`Batch` is the unit of work: runs of one study that compile to the same program
(they differ only in seed, initializer or learning rate), run together in one vmapped call.
:func:`run_batch` runs one batch and writes its records to the results store; every executor
calls it, in the runner's process, in a local worker process or in a Ray worker, so records
are the same whichever executor made them.

A batch's membership is fixed by the grid alone, never by which of its runs are still
missing: XLA's results for one run can depend on the size of the vmapped batch it runs in, so
a resumed batch recomputes its finished runs with the others (and discards them) to give
the missing ones bit for bit the records an uninterrupted run would have written.

On a machine with several devices the batch is split across them along its leading
(run x seed) axis, padded to a multiple of the device count with copies of its last entry.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgbench import CPU_DEVICES_ENV, usable_cores
from vgbench.grid import Run
from vgbench.store import Store

RUN_STATES = ("missing", "corrupt", "other_seeds")   # store states that need a run
COMPILE_COST = 4.0                                     # seconds, roughly, per batch


@dataclass(frozen=True)
class Batch:
    """Runs of one study that share a program, in grid order; ``index`` orders the full plan."""

    index: int
    study: str
    meta: dict
    runs: tuple[Run, ...]
    plugins: tuple[str, ...] = ()

    @property
    def entries(self) -> int:
        return sum(len(r.seeds) for r in self.runs)

    @property
    def cost(self) -> float:
        """Rough expected seconds on one CPU core, to balance shards and workers.

        A compile (a few seconds) plus entries x steps x the model's cost of one step
        (:func:`vgbench.models.step_cost`, measured on a laptop CPU).
        """
        from vgbench import models

        s = self.runs[0].spec
        return COMPILE_COST + self.entries * max(s.steps, 1) * models.step_cost(s)

    def describe(self) -> str:
        from vgbench import models

        s = self.runs[0].spec
        extra = f" {described}" if (described := models.describe(s)) else ""
        return (f"{self.study}: {s.model} {s.task} depth={s.depth} {s.activation} norm={s.norm} "
                f"skip={s.skip}{extra} [{len(self.runs)} runs x {len(self.runs[0].seeds)} seeds"
                + ("" if self.runs[0].role == "study" else f", {self.runs[0].role}") + "]")


@dataclass
class Outcome:
    """What became of one run of a batch."""

    run_id: str
    result: str                 # "ran", "failed", "done" (finished elsewhere), "busy" (locked)
    status: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class BatchResult:
    index: int
    outcomes: list[Outcome] = field(default_factory=list)
    compile_s: float = 0.0
    run_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0          # CPU time of the process that ran it (all its threads)
    started: float = 0.0        # time.time() when the batch started


# ---------------------------------------------------------------------------- one batch

_CACHE_DIR: str | None = None
_PROGRAMS: OrderedDict = OrderedDict()
PROGRAM_CACHE_SIZE = 4


def use_compilation_cache(path: str | Path) -> None:
    """Keep JAX's persistent compilation cache under ``path`` (every program, however fast)."""
    global _CACHE_DIR
    path = str(Path(path).resolve())
    if _CACHE_DIR == path:
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()   # the cache is set up once per process: point it here
    _CACHE_DIR = path


def _program(spec):
    """The compiled-program bundle of ``spec``'s program key, reused within this process."""
    from vgbench import train

    key = train.program_key(spec)
    rid = key.run_id
    if rid in _PROGRAMS:
        _PROGRAMS.move_to_end(rid)
        return _PROGRAMS[rid]
    program = train.build_program(key)
    _PROGRAMS[rid] = program
    while len(_PROGRAMS) > PROGRAM_CACHE_SIZE:
        _PROGRAMS.popitem(last=False)
    return program


def _stack_on_devices(trees, lrs):
    """Concatenate per-run stacks; on several devices, pad and shard the leading axis."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vgbench import train

    stacked = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *trees)
    lrs = jnp.asarray(lrs, jnp.float32)
    devices = jax.local_devices()
    if len(devices) == 1 or train.entries_in_sequence():
        # a CPU's devices are its cores: a program there runs its entries in sequence and may
        # split each batch over them (train.batch_split); the entries are not sharded
        return stacked, lrs, 1
    n = lrs.shape[0]
    pad = (-n) % len(devices)

    def padded(a):
        return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a

    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
    stacked = jax.device_put(jax.tree_util.tree_map(padded, stacked), sharding)
    return stacked, jax.device_put(padded(lrs), sharding), len(devices)


def _records(batch: Batch, todo: list[Run]) -> tuple[list[dict], float, float]:
    """Run the whole batch in one call; the records of the runs in ``todo``."""
    import numpy as np

    from vgbench import record, train

    program = _program(batch.runs[0].spec)
    inits, lrs = [], []
    for run in batch.runs:
        inits.append(train.init_params(run.spec, run.seeds, task=program.task))
        lrs += [run.spec.lr] * len(run.seeds)
    (params, state, keys), lr_arr, n_dev = _stack_on_devices(inits, lrs)
    raw = train.execute(program, params, state, keys, lr_arr)
    wanted = {r.run_id for r in todo}
    out, start = [], 0
    for run in batch.runs:
        index = np.arange(start, start + len(run.seeds))
        start += len(run.seeds)
        if run.run_id not in wanted:
            continue
        task = program.task
        if run.spec.target is not None:
            task = task._replace(target=float(run.spec.target))
        rec = record.build_record(
            run.spec, run.seeds, record.slice_outputs(raw.outputs, index), task=task,
            layer_names=program.model.layer_names, compile_s=raw.compile_s, run_s=raw.run_s,
            batch_split=program.split, study=batch.meta["study"],
            grid_hash=batch.meta["grid_hash"], grid_axes=run.grid_axes,
            model_info=program.model.info)
        _protocol_fields(rec, batch, run)
        rec["timing"].update(batch_runs=len(batch.runs), batch_entries=batch.entries, devices=n_dev)
        out.append(rec)
    return out, raw.compile_s, raw.run_s


def _protocol_fields(rec: dict, batch: Batch, run: Run) -> None:
    """What a record says about its place in the study's protocol: its role (``study``,
    ``tune`` or ``confirm``; a confirmation record is stored under its own id), the values its
    entry was tried at, and for a confirmation run the choice it confirms."""
    rec["run_id"] = run.run_id
    rec["role"] = run.role
    rec["study_baseline"] = batch.meta.get("study_baseline")
    rec["compare_within"] = batch.meta.get("compare_within")
    rec["tuning"] = dict(run.tuning)
    if run.chosen:
        rec["chosen"] = dict(run.chosen)


def run_batch(batch: Batch, results: str | Path, *, retry_failed: bool = False) -> BatchResult:
    """Run the batch's unfinished runs (under their locks) and write their records."""
    from vgbench import plugins, record

    t0, cpu0 = time.perf_counter(), time.process_time()
    store = Store(results)
    result = BatchResult(index=batch.index, started=time.time())
    if batch.plugins:
        plugins.load(list(batch.plugins))
    use_compilation_cache(store.cache)
    wanted = set(RUN_STATES) | ({"failed"} if retry_failed else set())

    states = {r.run_id: store.check(r.run_id, r.spec.to_dict(), r.seeds) for r in batch.runs}
    pending = [r.run_id for r in batch.runs if states[r.run_id].state in wanted]
    with store.locked(pending) as held:
        if held is None:
            result.outcomes = [Outcome(rid, "busy") for rid in pending]
            return result
        todo = []
        for run in batch.runs:
            if run.run_id not in pending:
                continue
            now = store.check(run.run_id, run.spec.to_dict(), run.seeds)   # another runner may
            if now.state in wanted:                                        # have finished it
                todo.append(run)
                states[run.run_id] = now
            else:
                result.outcomes.append(Outcome(run.run_id, "done", now.status))
        if not todo:
            result.wall_s, result.cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
            return result
        try:
            records, result.compile_s, result.run_s = _records(batch, todo)
        except Exception as err:  # the batch's own failure: recorded, and the grid goes on
            message = f"{type(err).__name__}: {err}"
            detail = traceback.format_exc(limit=8)
            records = []
            for run in todo:
                rec = record.failed_record(run.spec, run.seeds, message, **batch.meta,
                                           grid_axes=run.grid_axes)
                _protocol_fields(rec, batch, run)
                rec["traceback"] = detail
                records.append(rec)
        for rec in records:
            if states[rec["run_id"]].state in ("other_seeds", "failed"):
                store.supersede(rec["run_id"])
            store.write(rec)
            failed = all(s == "failed" for s in rec["status"])
            result.outcomes.append(Outcome(rec["run_id"], "failed" if failed else "ran",
                                           tuple(rec["status"]),
                                           rec["error"][0] if failed else None))
    result.wall_s, result.cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return result


# ---------------------------------------------------------------------------- executors

class LocalExecutor:
    """Runs batches one after another in this process."""

    name = "local"

    def __init__(self, results, *, retry_failed=False):
        self.results, self.retry_failed = str(results), retry_failed

    def map(self, batches: Iterable[Batch], on_start=None) -> Iterator[BatchResult]:
        for batch in batches:
            if on_start:
                on_start(batch)
            yield run_batch(batch, self.results, retry_failed=self.retry_failed)

    def close(self):
        pass


class ProcessExecutor:
    """Runs batches in ``jobs`` local worker processes (fresh interpreters, not forks)."""

    name = "processes"

    def __init__(self, results, jobs: int, *, retry_failed=False):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.results, self.retry_failed = str(results), retry_failed
        # the workers share the cores: each asks for its share of CPU devices (vgbench.cpu_devices)
        # unless the user set the count; a spawned worker reads the environment it starts with
        self._user_devices = os.environ.get(CPU_DEVICES_ENV)
        if self._user_devices is None:
            os.environ[CPU_DEVICES_ENV] = str(max(1, usable_cores() // jobs))
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def map(self, batches, on_start=None):
        from concurrent.futures import FIRST_COMPLETED, wait

        futures = {}
        for batch in batches:   # in grid order: studies finish one after another
            futures[self.pool.submit(run_batch, batch, self.results,
                                     retry_failed=self.retry_failed)] = batch
        running = set(futures)
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                if on_start:
                    on_start(futures[fut])
                yield fut.result()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._user_devices is None:
            os.environ.pop(CPU_DEVICES_ENV, None)


def _ray_run_batch(batch, results, retry_failed):
    return run_batch(batch, results, retry_failed=retry_failed)


class RayExecutor:
    """Sends each batch to a Ray cluster as a task; workers write records to the shared results."""

    name = "ray"

    def __init__(self, results, *, address: str | None = None, gpus_per_task: float | None = None,
                 retry_failed=False, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'vgbench[ray]'") from None
        self.ray = ray
        self.results, self.retry_failed = str(Path(results).resolve()), retry_failed
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
            self._owns = True
        else:
            self._owns = False
        if gpus_per_task is None:
            gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        # a task holds one CPU: its worker asks for one CPU device (vgbench.cpu_devices)
        env = {CPU_DEVICES_ENV: os.environ.get(CPU_DEVICES_ENV, "1")}
        self.task = ray.remote(_ray_run_batch).options(num_cpus=1, num_gpus=gpus_per_task,
                                                       max_retries=0, runtime_env={"env_vars": env})

    def map(self, batches, on_start=None):
        futures = {self.task.remote(b, self.results, self.retry_failed): b
                   for b in sorted(batches, key=lambda b: -b.cost)}
        running = list(futures)
        while running:
            done, running = self.ray.wait(running, num_returns=1)
            for ref in done:
                if on_start:
                    on_start(futures[ref])
                yield self.ray.get(ref)

    def close(self):
        if self._owns:
            self.ray.shutdown()


def make_executor(kind: str, results, *, jobs: int = 1, address: str | None = None,
                  gpus_per_task: float | None = None, retry_failed: bool = False):
    if kind == "ray":
        return RayExecutor(results, address=address, gpus_per_task=gpus_per_task,
                           retry_failed=retry_failed, num_cpus=jobs if jobs > 1 else None)
    if kind == "local":
        if jobs > 1:
            return ProcessExecutor(results, jobs, retry_failed=retry_failed)
        return LocalExecutor(results, retry_failed=retry_failed)
    raise ValueError(f"unknown executor {kind!r}; valid choices: local, ray")

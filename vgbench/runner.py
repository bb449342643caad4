"""``vgbench run GRID...``: expand grid files, skip finished runs, run the rest in batches.

    vgbench run benchmarks/default.toml [--results results] [--jobs N]
                [--executor local|ray] [--address HOST:PORT|auto] [--shard i/N]

Every grid is read and checked before anything runs. Runs of a study that share a compiled
program form batches (one vmapped call each); a run whose record exists is skipped, so a
stopped grid resumes and an edited grid runs only what is new. ``--shard i/N`` keeps the
i-th of N deterministic, cost-balanced slices of the batches (for Slurm job arrays).

A tuned study runs in phases (docs/reporting.md, "Tuning protocol"): its candidates on the
tuning seeds; extension rounds while some entry's winner sits at an end of its range
(:func:`extensions`); then each entry's choice on the confirmation seeds
(:func:`confirmation_grid`). Every phase is worked out again from the stored records, so a
stopped or resumed run finds the same extensions and the same choices.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from vgbench import grid as grid_mod
from vgbench.executors import RUN_STATES, Batch, make_executor
from vgbench.store import Store

DEFAULT_MAX_BATCH = 64     # (run x seed) entries per compiled call
RETRY_WAIT_S = 1.0         # between looks at runs that another runner holds


def parse_shard(text: str) -> tuple[int, int]:
    """'2/3' -> (2, 3): the second of three slices (numbered from 1, like --array=1-3)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/N, e.g. 2/3, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard i/N needs 1 <= i <= N, got {text!r}")
    return i, n


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grids", nargs="+", metavar="GRID",
                        help="study grid files (TOML) or suite files listing them")
    parser.add_argument("--results", default="results", help="results directory (default: results)")
    parser.add_argument("--jobs", type=_positive, default=1,
                        help="local worker processes (default 1: run in this process)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (HOST:PORT or auto); default: start a local Ray")
    parser.add_argument("--gpus-per-task", type=float, default=None,
                        help="GPUs each Ray task requests (default: 1 if the cluster has GPUs)")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="i/N",
                        help="run only the i-th of N deterministic slices (1 <= i <= N)")
    parser.add_argument("--max-batch", type=_positive, default=DEFAULT_MAX_BATCH,
                        help=f"most (run x seed) entries in one compiled call (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the runs whose record says every seed failed")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------- planning

def make_batches(grids, max_batch: int = DEFAULT_MAX_BATCH) -> list[Batch]:
    """Every run of every study, grouped by program and cut into batches; a pure function of the grids."""
    from vgbench.train import program_key

    batches = []
    for g in grids:
        groups: dict[str, list] = {}
        for run in g.runs:
            groups.setdefault(program_key(run.spec).run_id, []).append(run)
        for runs in groups.values():
            chunk, size = [], 0
            for run in runs:
                if chunk and size + len(run.seeds) > max_batch:
                    batches.append(Batch(len(batches), g.name, g.meta(), tuple(chunk), g.plugins))
                    chunk, size = [], 0
                chunk.append(run)
                size += len(run.seeds)
            batches.append(Batch(len(batches), g.name, g.meta(), tuple(chunk), g.plugins))
    return batches


def select_shard(batches: list[Batch], shard: tuple[int, int] | None) -> list[Batch]:
    """The batches of slice i of N: longest first to the least loaded slice (deterministic)."""
    if shard is None:
        return batches
    i, n = shard
    load = [0.0] * n
    owner = {}
    for b in sorted(batches, key=lambda b: (-b.cost, b.index)):
        k = min(range(n), key=lambda j: (load[j], j))
        load[k] += b.cost
        owner[b.index] = k
    return [b for b in batches if owner[b.index] == i - 1]


def manifest(g: grid_mod.Grid) -> dict:
    """The study file: what the study is and which runs belong to it."""
    return {"schema": "vgbench.study/1", "name": g.name, "description": g.description,
            "grid_file": g.path, "grid_hash": g.grid_hash, "seeds": list(g.seeds),
            "protocol": g.protocol(), "compare_within": g.compare_within,
            "axes": list(g.axes), "baseline": g.baseline, "tuning": dict(g.tuning),
            "tuning_when": list(g.tuning_when), "plugins": list(g.plugins),
            "runs": [{"run_id": r.run_id, "grid_axes": r.grid_axes, "tuning": r.tuning}
                     for r in g.runs]}


@dataclass
class StudyTally:
    runs: int = 0
    new: int = 0
    first_start: float | None = None     # time.time() of the study's first batch, this invocation
    last_end: float | None = None
    cpu_s: float = 0.0
    status: dict = field(default_factory=dict)   # run_id -> per-seed status

    def add(self, result) -> None:
        end = result.started + result.wall_s
        self.first_start = min(self.first_start or result.started, result.started)
        self.last_end = max(self.last_end or end, end)
        self.cpu_s += result.cpu_s

    def line(self, name: str) -> str:
        diverged = sum(any(s == "diverged" for s in st) for st in self.status.values())
        failed = sum(any(s == "failed" for s in st) for st in self.status.values())
        missing = self.runs - len(self.status)
        wall = (self.last_end - self.first_start) if self.first_start is not None else 0.0
        return (f"{name}: {self.runs} runs ({self.new} run now), {diverged} diverged, "
                f"{failed} failed" + (f", {missing} not done" if missing else "")
                + f", wall {wall:.1f} s, CPU {self.cpu_s:.1f} s")


# ---------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> int:
    """Phase 1 runs every study's grid (a tuned study: every candidate on its tuning seeds);
    then, for tuned studies, extension rounds grow the ranges whose winner sits at an end
    (:mod:`vgbench.selection`), and the chosen configurations run on the confirmation seeds."""
    t_start = time.perf_counter()
    grids = grid_mod.load_many(args.grids)            # every mistake is found before any run
    grid_mod.check_fit(grids)                         # ... including a model that cannot take its task
    store = Store(args.results)
    code = _phase(args, grids, store, t_start, "", manifests=True)
    tuned = [g for g in grids if g.tuning]
    if code or not tuned or args.dry_run:
        if args.dry_run and tuned:
            print("then, per tuned study: extensions where a winner sits at an end of its range, "
                  "and the chosen values on the confirmation seeds (they depend on the results)")
        return code
    rounds = max(g.extend for g in tuned)
    later: dict[str, list] = {}   # study -> its extension and confirmation runs
    for k in range(rounds):
        extended = [g for g in (extension_grid(g, store) for g in tuned) if g.runs]
        if not extended:
            break
        for g in extended:
            later.setdefault(g.name, []).extend(g.runs)
        code = _phase(args, extended, store, time.perf_counter(), f"extension round {k + 1}: ")
        if code:
            return code
    confirm = [g for g in (confirmation_grid(g, store) for g in tuned) if g.runs]
    for g in confirm:
        later.setdefault(g.name, []).extend(g.runs)
    _set_aside_stale_confirmations(store, confirm)
    # every run of a study in its manifest: a run another study made first (the same config,
    # seeds and choice) belongs to both, and its record names only the study that made it
    for g in tuned:
        found = manifest(g)
        listed = {r["run_id"] for r in found["runs"]}
        for r in later.get(g.name, []):
            if r.run_id not in listed:
                listed.add(r.run_id)
                found["runs"].append({"run_id": r.run_id, "grid_axes": r.grid_axes,
                                      "tuning": r.tuning})
        store.write_study(found)
    if confirm:
        code = _phase(args, confirm, store, time.perf_counter(), "confirmation: ")
    print(f"suite wall time {time.perf_counter() - t_start:.1f} s")
    return code


def _set_aside_stale_confirmations(store: Store, confirm) -> None:
    """Move aside (runs/superseded/) the confirmation records of a study that no longer match
    its choice (the tuning records or the rule changed since they were made): each entry and
    setting has one confirmation, the current one. Nothing is deleted."""
    import json

    current = {g.name: {r.run_id for r in g.runs} for g in confirm}
    for path in sorted(store.runs.glob(f"*{grid_mod.CONFIRM_SUFFIX}.json")):
        try:
            study = json.loads(path.read_bytes()).get("study")
        except (OSError, ValueError):
            continue
        run_id = path.name.removesuffix(".json")
        if study in current and run_id not in current[study]:
            store.supersede(run_id)
            print(f"note: {study}: the confirmation {run_id} no longer matches the choice; "
                  f"kept under {store.runs / 'superseded'}", file=sys.stderr)


def _phase(args, grids, store: Store, t_start: float, label: str, manifests=False) -> int:
    """Run the given studies' runs (those not done yet) and print a tally per study."""
    batches = select_shard(make_batches(grids, args.max_batch), args.shard)
    wanted = set(RUN_STATES) | ({"failed"} if args.retry_failed else set())

    tallies = {g.name: StudyTally() for g in grids}
    owner: dict[str, str] = {}
    pending: list[Batch] = []
    backfill: list = []   # done runs whose records predate a field they should carry
    done = total = 0
    for b in batches:
        needs = False
        for run in b.runs:
            tally = tallies[b.study]
            tally.runs += 1
            total += 1
            if run.run_id in owner and owner[run.run_id] != b.study:
                print(f"note: a run of {b.study} ({run.run_id}) is the same config as one of "
                      f"{owner[run.run_id]}; it runs once", file=sys.stderr)
            owner.setdefault(run.run_id, b.study)
            state = store.check(run.run_id, run.spec.to_dict(), run.seeds)
            if state.state == "corrupt":
                print(f"warning: {state.path} is not a valid record ({state.reason}); "
                      "it will be run again", file=sys.stderr)
            elif state.state == "other_seeds":
                print(f"note: {state.path} was {state.reason}, the grid asks for "
                      f"{list(run.seeds)}; it will be run again (the old record is kept under "
                      f"{store.runs / 'superseded'})", file=sys.stderr)
            if state.state in wanted:
                needs = True
            else:
                tally.status[run.run_id] = state.status
                done += 1
                if state.state == "done" and "theory" not in state.fields:
                    backfill.append(run)
        if needs:
            pending.append(b)

    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard else ""
    if args.dry_run:
        for b in pending:
            print(b.describe())
        print(f"{total} runs{shard}: {done} done, {total - done} to run in {len(pending)} batches")
        return 0

    for g in grids if manifests else ():
        store.write_study(manifest(g))
    _backfill(store, backfill)
    if not pending:
        print(f"{label}nothing to run: all {total} runs{shard} are done "
              f"({time.perf_counter() - t_start:.1f} s)")
        for name, tally in tallies.items():
            print(label + tally.line(name))
        return 0

    exit_code = _execute(args, pending, store, tallies, done, total)
    for name, tally in tallies.items():
        print(label + tally.line(name))
    print(f"{label}wall time {time.perf_counter() - t_start:.1f} s; records in {store.runs}")
    return exit_code


# ---------------------------------------------------------------------------- tune, then confirm

def _candidates(g: grid_mod.Grid, store: Store, runs) -> dict[str, list]:
    """group -> [(run, record)] of the tuning runs whose records are done; a group with a
    missing record is left out (another shard, or a failed write, has it still to come)."""
    groups: dict[str, list] = {}
    missing: set[str] = set()
    for run in runs:
        state = store.check(run.run_id, run.spec.to_dict(), run.seeds)
        if state.state != "done" and state.state != "failed":
            missing.add(run.group)
            continue
        groups.setdefault(run.group, []).append((run, store.read(run.run_id)))
    return {k: v for k, v in groups.items() if k not in missing}


def _all_tuning_runs(g: grid_mod.Grid, store: Store) -> list:
    """The grid's tuning runs and every extension made so far (recomputed from the records,
    so a resumed invocation finds the same ones)."""
    runs = list(g.runs)
    for _ in range(g.extend):
        more = extensions(g, store, runs)
        if not more:
            break
        runs += more
    return runs


def _choice(g: grid_mod.Grid, pairs: list) -> dict:
    """The selection rule over one group's candidates (see :mod:`vgbench.selection`)."""
    import numpy as np

    from vgbench import selection

    fields = list(g.tuning)
    values = np.array([[getattr(run.spec, f) for f in fields] for run, _ in pairs], float)
    n_lost, val_mean, val_loss, val_gain = [], [], [], []
    higher, baseline = True, None
    for _, rec in pairs:
        status = rec.get("status") or []
        ok = [s == "ok" for s in status]
        n_lost.append(len(status) - sum(ok))
        target = rec.get("target") or {}
        metric = str(target.get("metric") or "test_loss").removeprefix("test_")
        higher = bool(target.get("higher_is_better", metric.endswith("accuracy")))
        metrics = rec.get("metrics") or {}
        final = metrics.get(f"final_val_{metric}") or []
        val_mean.append(_mean_ok(final, ok))
        val_loss.append(_mean_ok(metrics.get("final_val_loss"), ok))
        series = (rec.get("diagnostics") or {}).get("val_metric") or []
        initial = [s[0] if isinstance(s, list) and s else None for s in series]
        val_gain.append(_mean_ok([None if a is None or b is None else a - b
                                  for a, b in zip(final, initial)], ok))
        baseline = baseline if baseline is not None else _first(metrics.get("task_baseline"))
    ranks = selection.rank(values, n_lost, val_mean, higher)
    chosen = int(np.argmin(ranks))
    return {"fields": fields, "values": values, "n_lost": n_lost, "val_mean": val_mean,
            "chosen": chosen,
            "at_chance": selection.at_chance(val_loss, baseline, val_gain, higher)}


def _mean_ok(values, ok) -> float:
    finite = [v for v, good in zip(values or [], ok) if good and isinstance(v, (int, float))]
    return sum(finite) / len(finite) if finite else float("nan")


def _first(values):
    return values[0] if isinstance(values, list) and values else None


def extensions(g: grid_mod.Grid, store: Store, runs=None) -> list:
    """The next extension runs of a tuned study: per group whose winner sits at an end of its
    range and beats its neighbour, one value further that way, unless the entry is at chance,
    the value passes a ``tune.limits`` bound, or the group has had ``tune.extend`` steps that
    way. Empty when every group's winner is inside (or stopped)."""
    import dataclasses

    from vgbench import selection

    runs = list(g.runs) if runs is None else runs
    base_values = {run.group: run.tuning for run in g.runs}
    new = []
    for group, pairs in _candidates(g, store, runs).items():
        c = _choice(g, pairs)
        if c["at_chance"]:
            continue
        chosen_run = pairs[c["chosen"]][0]
        for j, f in enumerate(c["fields"]):
            others = [k for k in range(len(c["fields"])) if k != j]
            line = [i for i in range(len(pairs))
                    if all(c["values"][i, k] == c["values"][c["chosen"], k] for k in others)]
            side = selection.edge_side(c["values"][line, j], [c["n_lost"][i] for i in line],
                                       [c["val_mean"][i] for i in line], line.index(c["chosen"]))
            if not side:
                continue
            tried = sorted(set(c["values"][line, j].tolist()))
            start = base_values[group][f]
            done = sum(v < min(start) for v in tried) if side < 0 else sum(v > max(start) for v in tried)
            value = selection.next_value(tried, side)
            low, high = g.limits.get(f, (-float("inf"), float("inf")))
            if done >= g.extend or not low <= value <= high:
                continue
            spec = dataclasses.replace(chosen_run.spec, **{f: value})
            tuning = {**chosen_run.tuning, f: sorted({*chosen_run.tuning[f], *tried, value})}
            new.append(dataclasses.replace(chosen_run, spec=spec, tuning=tuning))
    return new


def extension_grid(g: grid_mod.Grid, store: Store) -> grid_mod.Grid:
    """``g`` holding the extension runs that are not done yet (one round's work)."""
    import dataclasses

    todo = [r for r in _all_tuning_runs(g, store)[len(g.runs):]
            if store.check(r.run_id, r.spec.to_dict(), r.seeds).state != "done"]
    return dataclasses.replace(g, runs=tuple(todo))


def confirmation_grid(g: grid_mod.Grid, store: Store) -> grid_mod.Grid:
    """``g`` holding one confirmation run per group whose tuning is complete: the chosen
    config on the study's own seeds, carrying the values tried and why the choice stands."""
    import dataclasses

    from vgbench import selection

    runs = _all_tuning_runs(g, store)
    out = []
    for group, pairs in _candidates(g, store, runs).items():
        c = _choice(g, pairs)
        run = pairs[c["chosen"]][0]
        tried = {f: sorted(set(c["values"][:, j].tolist())) for j, f in enumerate(c["fields"])}
        edge = {}
        for j, f in enumerate(c["fields"]):
            side = selection.edge_side(c["values"][:, j], c["n_lost"], c["val_mean"], c["chosen"])
            if side and not c["at_chance"] and len(c["fields"]) == 1:
                low, high = g.limits.get(f, (None, None))
                nxt = selection.next_value(tried[f], side)
                past = (low is not None and nxt < low) or (high is not None and nxt > high)
                edge[f] = "limit" if past else "budget"
        chosen = {"values": {f: getattr(run.spec, f) for f in c["fields"]},
                  "at_chance": bool(c["at_chance"]), "at_edge": edge,
                  "tune_seeds": list(g.tune_seeds)}
        out.append(dataclasses.replace(run, seeds=g.seeds, role="confirm", tuning=tried,
                                       chosen=chosen))
    return dataclasses.replace(g, runs=tuple(out))


def _backfill(store: Store, runs: list) -> None:
    """Add the mean-field theory's inputs to finished records made before they were recorded
    (``record.theory_inputs``): no training, only the registry entries the config names."""
    from vgbench import models, record

    written = sum(store.update(run.run_id, record.with_theory_inputs) is not None
                  for run in runs if models.facts(run.spec.model).mean_field)
    if written:
        print(f"added the theory inputs to {written} existing record{'s' * (written != 1)}")


def _execute(args, pending: list[Batch], store: Store, tallies, done: int, total: int) -> int:
    from tqdm import tqdm

    executor = make_executor(args.executor, store.root, jobs=args.jobs, address=args.address,
                             gpus_per_task=args.gpus_per_task, retry_failed=args.retry_failed)
    bar = tqdm(total=total, initial=done, unit="run", dynamic_ncols=True, file=sys.stderr,
               disable=True if args.no_progress else None)
    by_index = {b.index: b for b in pending}
    exit_code = 0
    try:
        todo = pending
        while todo:
            busy = []
            for result in executor.map(todo, on_start=lambda b: bar.set_postfix_str(b.describe(),
                                                                                      refresh=True)):
                batch = by_index[result.index]
                tally = tallies[batch.study]
                tally.add(result)
                finished = 0
                for o in result.outcomes:
                    if o.result == "busy":
                        continue
                    finished += 1
                    tally.status[o.run_id] = o.status
                    if o.result in ("ran", "failed"):
                        tally.new += 1
                    if o.result == "failed":
                        bar.write(f"failed: {batch.study} run {o.run_id}: {o.error}")
                bar.update(finished)
                if any(o.result == "busy" for o in result.outcomes):
                    busy.append(batch)
            if busy:   # another runner holds them: look again when it may be done
                bar.set_postfix_str(f"waiting for {len(busy)} batches held by another runner")
                time.sleep(RETRY_WAIT_S)
            todo = busy
    except KeyboardInterrupt:
        bar.write("interrupted: finished runs are kept; run the same command again to resume")
        exit_code = 130
    finally:
        bar.close()
        executor.close()
    return exit_code

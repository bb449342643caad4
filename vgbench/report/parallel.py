"""Run the report's independent tasks (figures of a study, a slice of a CSV) on several cores.

Workers are forked after the frames are built, so they read the frames from the parent's
memory instead of receiving copies. Where forking is not safe or not possible (not Linux, JAX
already imported with its threads, a daemon process, one worker) the tasks run one after the
other in this process; the outputs are the same either way.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

_SHARED: dict[str, Any] = {}


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def can_fork() -> bool:
    return (sys.platform.startswith("linux") and "jax" not in sys.modules
            and not multiprocessing.current_process().daemon)


def run_tasks(tasks: list[tuple[Callable, tuple]], shared: dict, workers: int) -> list:
    """``[fn(shared, *args) for fn, args in tasks]``, on up to ``workers`` forked processes.

    ``fn`` must be a module-level function. Results come back in the order of ``tasks``.
    """
    if workers <= 1 or len(tasks) <= 1 or not can_fork():
        return [fn(shared, *args) for fn, args in tasks]
    _SHARED.clear()
    _SHARED.update(shared)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
            futures = [pool.submit(_call, fn, args) for fn, args in tasks]
            return [f.result() for f in futures]
    finally:
        _SHARED.clear()


def _call(fn: Callable, args: tuple):
    return fn(_SHARED, *args)

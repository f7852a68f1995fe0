"""``convert(..., dask=...)``: the same per-slab tasks on a dask.distributed cluster (and
:func:`run_calls`, which ``ngserve mesh --dask`` shares).

The driver plans, creates the arrays and keeps the manifest; each task re-derives the
plan from the options (once per worker process), reads its slab from the inputs and writes
every level's whole chunks of it, so a task that runs twice (a lost worker) writes the same
bytes again.  The scheduler is dask's; nothing here schedules.
"""

from __future__ import annotations

import os
from typing import Any, Callable

_PLANS: dict[str, Any] = {}  # per worker process: the plan of each conversion it has run tasks of


def _task(recipe: dict, key: str, index: int, s: int):
    from . import conversion

    conversion._limit_arenas()
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = conversion._prepare(**recipe)
    return conversion.slab_task(plan, index, s)


def run_on_dask(address: str, recipe: dict, key: str, todo: list[tuple[int, int]], finished: Callable) -> None:
    """Run ``todo`` (job index, slab) on the cluster at ``address`` ("local": a LocalCluster here),
    calling ``finished(index, slab, stats, sample)`` as each task completes."""
    calls = {f"ngserve-slab-{key[:12]}-{i}-{s}": (_task, (recipe, key, i, s)) for i, s in todo}
    where = {name: args[2:] for name, (_, args) in calls.items()}
    run_calls(address, recipe.get("workers"), calls, lambda name, result: finished(*where[name], *result))


def run_calls(address: str, workers: int | None, calls: dict[str, tuple[Callable, tuple]],
              finished: Callable[[str, Any], None]) -> None:
    """Run ``calls`` (task name -> (function, arguments)) on the dask.distributed scheduler at
    ``address``, or on a LocalCluster of ``workers`` processes for "local", calling
    ``finished(name, result)`` as each completes (ConvertError when dask is missing or unreachable)."""
    from .convert_sources import ConvertError

    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConvertError("--dask needs dask.distributed: pip install 'ngserve[dask]'") from None

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, dashboard_address=None)
        address = cluster
    try:
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise ConvertError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        with client:
            futures = {client.submit(fn, *args, pure=False, key=name): name for name, (fn, args) in calls.items()}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    finally:
        if cluster is not None:
            cluster.close()

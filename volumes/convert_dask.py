"""``convert(..., dask=...)``: the same per-slab tasks on a dask.distributed cluster.

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
    from .convert_sources import ConvertError

    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConvertError("--dask needs dask.distributed: pip install 'ngserve[dask]'") from None

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=recipe.get("workers") or os.cpu_count() or 1, threads_per_worker=1,
                               dashboard_address=None)
        address = cluster
    try:
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise ConvertError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        with client:
            futures = {client.submit(_task, recipe, key, i, s, pure=False, key=f"ngserve-slab-{key[:12]}-{i}-{s}"): (i, s)
                       for i, s in todo}
            for future in as_completed(futures):
                i, s = futures[future]
                stats, sample = future.result()
                finished(i, s, stats, sample)
    finally:
        if cluster is not None:
            cluster.close()

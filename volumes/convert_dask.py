"""``convert(..., dask=...)``: the same tasks on a dask.distributed cluster.

The driver plans, creates the arrays and keeps the manifest; each task re-derives the
plan from the options (once per worker process), builds its tile of every level it covers
and writes whole write chunks (chunks or shards), so a task that runs twice (a lost worker)
writes the same bytes again.  Rounds run one after the other (a round reads the level the
previous one wrote); within a round the scheduler is dask's.
"""

from __future__ import annotations

import os
from typing import Any, Callable

_PLANS: dict[str, Any] = {}  # per worker process: the plan of each conversion it has run tasks of


def _task(recipe: dict, key: str, index: int, t: int):
    from . import conversion

    conversion._limit_arenas()
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = conversion._prepare(**recipe)
    return conversion.task(plan, index, t)


def run_on_dask(address: str, recipe: dict, key: str, batches: list[list[tuple[int, int]]], finished: Callable) -> None:
    """Run each batch of (job index, task) in turn on the cluster at ``address`` ("local": a
    LocalCluster here), calling ``finished(index, task, stats, sample)`` as each task completes."""
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
            for todo in batches:
                futures = {client.submit(_task, recipe, key, i, t, pure=False, key=f"ngserve-task-{key[:12]}-{i}-{t}"): (i, t)
                           for i, t in todo}
                for future in as_completed(futures):
                    i, t = futures[future]
                    stats, sample = future.result()
                    finished(i, t, stats, sample)
    finally:
        if cluster is not None:
            cluster.close()

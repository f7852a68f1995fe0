"""``convert(..., dask=...)``: the same tasks on a dask.distributed cluster (and
:func:`run_calls`, which ``ngserve mesh --dask`` shares).

The driver plans, creates the arrays and keeps the manifest; each task re-derives the
plan from the options (once per worker process), builds its tile of every level it covers
and writes whole write chunks (chunks or shards), so a task that runs twice (a lost worker)
writes the same bytes again.  Rounds run one after the other (a round reads the level the
previous one wrote); within a round the scheduler is dask's.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

_PLANS: dict[str, Any] = {}  # per worker process: the plan of each conversion it has run tasks of


def _task(recipe: dict, key: str, index: int, t: int):
    from . import conversion

    conversion._tune_malloc()
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = conversion._prepare(**recipe)
    return conversion.task(plan, index, t)


def run_on_dask(address: str, recipe: dict, key: str, batches: list[list[tuple[int, int]]], finished: Callable) -> None:
    """Run each batch of (job index, task) in turn on the cluster at ``address`` ("local": a
    LocalCluster here), calling ``finished(index, task, stats, sample)`` as each task completes."""
    where: dict[str, tuple[int, int]] = {}
    rounds = []
    for todo in batches:
        calls = {f"ngserve-task-{key[:12]}-{i}-{t}": (_task, (recipe, key, i, t)) for i, t in todo}
        where.update(zip(calls, todo))
        rounds.append(calls)
    run_calls(address, recipe.get("workers"), rounds, lambda name, result: finished(*where[name], *result))


def run_calls(address: str, workers: int | None, rounds: Sequence[dict[str, tuple[Callable, tuple]]],
              finished: Callable[[str, Any], None]) -> None:
    """Run each round of calls (task name -> (function, arguments)) after the one before, on the
    dask.distributed scheduler at ``address``, or on a LocalCluster of ``workers`` processes for
    "local", calling ``finished(name, result)`` as each completes (ConvertError when dask is
    missing or unreachable)."""
    from .convert_sources import ConvertError

    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConvertError("--dask needs dask.distributed: pip install 'ngserve[dask]'") from None

    cluster = None
    if address == "local":
        import dask

        # No statistical profiler in our workers: its sys._current_frames() every 10 ms can deadlock
        # CPython 3.11 up to 3.11.8 against a thread that ends (gh-106883); a 16 GiB run hung so.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                   dashboard_address=None)
        address = cluster
    try:
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise ConvertError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        with client:
            for calls in rounds:
                futures = {client.submit(fn, *args, pure=False, key=name): name for name, (fn, args) in calls.items()}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    finally:
        if cluster is not None:
            cluster.close()

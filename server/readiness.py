"""``/-/ready``: whether this replica can do its work, for load balancers and orchestrators.

``/-/health`` says the process is up; ``/-/ready`` also asks the short-link
store and every remote mount's upstream (one cheap request each, bounded by
:data:`TIMEOUT`).  Answers are remembered for :data:`REMEMBER` seconds, so a
probe every second costs the upstreams little, and concurrent probes share one check in flight
(a burst of probes from many balancers asks each upstream once).  503 names what is not ready.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from . import states
from .auth import AUTHORITY

TIMEOUT = 3.0  # seconds an upstream has to answer the probe
REMEMBER = 5.0  # seconds an outcome is reused
_LAST = web.AppKey("ready_last", list)  # [monotonic time, problems] of the last check
_CHECKING = web.AppKey("ready_checking", dict)  # "task": the check in flight, if any


async def _problems(app: web.Application) -> dict[tuple[str, str], str]:
    from .app import MOUNTS
    from .remote import RemoteStorage

    problems: dict[tuple[str, str], str] = {}
    try:
        await asyncio.get_running_loop().run_in_executor(None, app[states.STORE].check)
    except states.StoreUnavailable:
        problems[("states", "")] = "the short-link store does not answer"
    remotes = {name: s for name, s in app[MOUNTS].items() if isinstance(s, RemoteStorage)}
    answers = await asyncio.gather(*(s.ping(TIMEOUT) for s in remotes.values()))
    for name, problem in zip(remotes, answers):
        if problem:
            problems[("mount", name)] = problem
    return problems


async def _check(app: web.Application) -> None:
    try:
        app[_LAST][:] = [time.monotonic(), await _problems(app)]
    finally:
        app[_CHECKING].pop("task", None)


async def handle_ready(request: web.Request) -> web.Response:
    last = request.app[_LAST]
    if time.monotonic() - last[0] >= REMEMBER:
        checking = request.app[_CHECKING]
        if "task" not in checking:
            checking["task"] = asyncio.ensure_future(_check(request.app))
        await asyncio.shield(checking["task"])  # a probe that gives up does not cancel the others' check
    authority = request.app[AUTHORITY]  # as /-/health: protected mounts stay unnamed to those who cannot read them
    problems = {}
    for (kind, name), problem in last[1].items():
        shown = "states" if kind == "states" else (
            f"mount {name!r}" if await authority.may_read(request, name) else "a protected mount")
        problems[shown] = problem
    body = {"status": "not ready", "problems": problems} if problems else {"status": "ready"}
    return web.json_response(body, status=503 if problems else 200, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app[_LAST] = [-REMEMBER, {}]
    app[_CHECKING] = {}
    app.router.add_get("/-/ready", handle_ready)

"""``ngserve view PATH_OR_URL...``: look at datasets in the built-in viewer in one step.

Local folders are served on a free port (or by a running ngserve that already serves them,
found through the registry), the state is built as ``ngserve link`` builds it, and the viewer
opens in a browser.  The server runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import webbrowser
from pathlib import Path

from .link import add_state_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="open datasets (local paths or URLs) in the built-in viewer, serving what is needed")
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="local paths or http(s) URLs, one layer each")
    add_state_options(p)
    p.add_argument("--no-browser", dest="browser", action="store_false",
                   help="only print the URL (e.g. on a remote shell)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ngstate import NGSERVE_VIEWER_PATH, registry

    from . import UsageError
    from .link import build

    local = [s for s in args.sources if not s.startswith(("http://", "https://"))]
    for path in local:
        if not Path(path).expanduser().exists():
            raise UsageError(f"{path} does not exist")
    servers = registry.running()
    urls = [registry.serving_url(p, servers) for p in local]
    if servers and all(urls):
        # Everything local is served already: its server hosts the viewer, and nothing to start.
        first = urls[0] if urls else servers[0]["url"]
        viewer = next(s["url"] for s in servers if first.startswith(s["url"])) + NGSERVE_VIEWER_PATH
        state = build(args, args.sources, viewer=viewer)
        url = state.to_url()
        _notes(state)
        print(f"ngserve: open {url}", flush=True)
        if args.browser:
            webbrowser.open(url)
        return 0
    show(args, args.sources, folders_of(local), host=args.host, port=args.port, browser=args.browser)
    return 0


def show(
    args: argparse.Namespace, sources: list[str], folders: list[Path], *, host: str, port: int, browser: bool,
    access_log: bool = False,
) -> None:
    """Serve ``folders`` and open the view of ``sources`` (state options in ``args``) until Ctrl-C.

    No access log by default: a terminal showing one view has no use for a line per chunk."""
    from ngstate import NGSERVE_VIEWER_PATH

    from ..config import ServerConfig
    from ..runner import serve
    from .link import build

    with tempfile.TemporaryDirectory(prefix="ngserve-view-") as empty:
        # Only URLs: the server is there for its viewer, so it serves an empty folder.
        mounts = folder_mounts(folders or [Path(empty)])
        config = ServerConfig(host=host, port=port, mounts=mounts, open_browser=browser, access_log=access_log)

        def landing(base: str) -> str:  # the state names the port just bound
            from ngstate.urls import mark_ngserve, origin_of

            mark_ngserve(origin_of(base))  # not serving yet: its /-/health would not answer
            served = {str(m.source): base + (f"/{m.name}" if m.name else "") for m in mounts}
            state = build(args, sources, served_at=served, viewer=base + NGSERVE_VIEWER_PATH)
            _notes(state)
            return state.to_url()

        serve(config, access_log=access_log, landing=landing)


def folders_of(paths: list[str]) -> list[Path]:
    """The folders to serve: each local source's parent, once (a folder inside another is covered by it)."""
    parents = sorted({Path(p).expanduser().resolve().parent for p in paths}, key=lambda f: len(f.parts))
    kept: list[Path] = []
    for folder in parents:
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return kept


def folder_mounts(folders: list[Path]) -> list:
    """The public mounts serving ``folders`` (see :func:`mount_names`)."""
    from ..config import MountConfig

    return [MountConfig(n, str(f)) for n, f in zip(mount_names(folders), folders)]


def mount_names(folders: list[Path]) -> list[str]:
    """One folder at the root; several as mounts named after them (unique, URL-safe)."""
    if len(folders) == 1:
        return [""]
    names: list[str] = []
    for folder in folders:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-") or "data"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _notes(state) -> None:
    for note in state.notes:
        print(f"note: {note}", file=sys.stderr)

"""``ngserve serve``: the data server."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError, MountConfig, ServerConfig, parse_mount


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve folders to Neuroglancer over HTTP")
    p.add_argument("dir", nargs="?", help="folder served at / (optional when --mount is given)")
    add_server_options(p)
    p.set_defaults(run=run)


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The options every command that starts a server shares."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9000, help="port to bind (default 9000; 0 picks a free one)")
    p.add_argument("--mount", action="append", default=[], metavar="NAME=DIR", help="also serve DIR at /NAME/")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allowed CORS origin (repeatable; default: any)")
    p.add_argument("--public-url", help="base URL clients use to reach this server, when behind a proxy")
    p.add_argument("--open", action="store_true", help="open the landing page in a browser")
    p.add_argument("--quiet", action="store_true", help="no access log")


def config_from_args(args: argparse.Namespace, root: str | None) -> ServerConfig:
    mounts = []
    if root is not None:
        mounts.append(MountConfig("", root))
    mounts += [parse_mount(m) for m in args.mount]
    for m in mounts:
        path = Path(m.source)
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a folder"
            label = f"--mount {m.name}" if m.name else "DIR"
            raise ConfigError(f"{label}: {m.source} {what}")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        mounts=mounts,
        workers=args.workers,
        cors_origins=args.cors_origin or ["*"],
        public_url=args.public_url,
        open_browser=args.open,
    )
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    from ..runner import serve

    serve(config_from_args(args, args.dir), access_log=not args.quiet)
    return 0

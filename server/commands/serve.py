"""``ngserve serve``: the data server."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError, MountConfig, ServerConfig, is_remote, parse_mount


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve folders to Neuroglancer over HTTP")
    p.add_argument("dir", nargs="?", help="folder served at / (optional when --mount or --config is given)")
    p.add_argument("--config", metavar="FILE", help="a deployment's ngserve.toml; flags given here win over it")
    add_server_options(p)
    p.set_defaults(run=run)


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The options every command that starts a server shares.

    Defaults are None so a config file's value stands unless the flag is given.
    """
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 9000; 0 picks a free one)")
    p.add_argument("--mount", action="append", default=[], metavar="NAME=DIR", help="also serve DIR at /NAME/")
    p.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allowed CORS origin (repeatable; default: any)")
    p.add_argument("--frame-ancestor", action="append", metavar="ORIGIN",
                   help="a site that may embed the viewer and listings in a frame (repeatable; "
                        "default: this server only; * for any)")
    p.add_argument("--public-url", help="base URL clients use to reach this server, when behind a proxy")
    p.add_argument("--data-dir", help="folder for the server's own state, e.g. short links (default ~/.local/share/ngserve)")
    p.add_argument("--open", action="store_true", default=None, help="open the landing page in a browser")
    p.add_argument("--quiet", action="store_true", default=None, help="no access log")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="text lines (default) or one JSON object per log line, with request ids")


def config_from_args(args: argparse.Namespace, root: str | None) -> ServerConfig:
    if getattr(args, "config", None):
        from ..config_file import load_config

        config = load_config(args.config)
    else:
        config = ServerConfig()
    cli_mounts = []
    if root is not None:
        cli_mounts.append(MountConfig("", root))
    cli_mounts += [parse_mount(m) for m in args.mount]
    for m in cli_mounts:
        if is_remote(m.source):
            continue
        path = Path(m.source)
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a folder"
            label = f"--mount {m.name}" if m.name else "DIR"
            raise ConfigError(f"{label}: {m.source} {what}")
    # A mount given on the command line replaces the config file's mount of that name.
    replaced = {m.name for m in cli_mounts}
    config.mounts = [m for m in config.mounts if m.name not in replaced] + cli_mounts
    for dest, attr in (("host", "host"), ("port", "port"), ("workers", "workers"), ("public_url", "public_url")):
        if getattr(args, dest, None) is not None:
            setattr(config, attr, getattr(args, dest))
    if args.cors_origin:
        config.cors_origins = args.cors_origin
    if getattr(args, "frame_ancestor", None):
        config.frame_ancestors = args.frame_ancestor
    if getattr(args, "data_dir", None) is not None:
        config.data_dir = Path(args.data_dir)
    if args.open:
        config.open_browser = True
    if args.quiet:
        config.access_log = False
    if getattr(args, "log_format", None):
        config.log_format = args.log_format
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    from ..runner import serve

    config = config_from_args(args, args.dir)
    serve(config, access_log=config.access_log)
    return 0

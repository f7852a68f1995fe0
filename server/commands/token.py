"""``ngserve token create``: a signed share token for a mount (or a path inside it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ServerConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create share tokens for protected mounts")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="print a token that grants read access to a mount until it expires")
    c.add_argument("--mount", required=True, metavar="NAME", help="the mount the token opens")
    c.add_argument("--path", default="", metavar="PREFIX", help="only this folder (and below) inside the mount")
    c.add_argument("--ttl", default="7d", help="lifetime, e.g. 12h, 7d, 2w (default 7d)")
    c.add_argument("--config", metavar="FILE",
                   help="the server's ngserve.toml, for its [auth] secret (else $NGSERVE_SECRET)")
    c.set_defaults(run=run)


def server_secret(config_path: str | None) -> tuple[bytes, ServerConfig | None]:
    """The signing secret and, when a config file is given, the config (its mounts, public_url)."""
    from ..config import ConfigError

    if config_path:
        from ..config_file import load_config

        config = load_config(config_path, upstreams=False)  # the secret and mount names, not upstream credentials
        if config.auth.secret is None:
            raise ConfigError(f"{config_path}: [auth] has no secret_env or secret_file")
        return config.auth.secret, config
    secret = os.environ.get("NGSERVE_SECRET")
    if not secret:
        raise ConfigError("no server secret: give --config ngserve.toml or set NGSERVE_SECRET")
    return secret.encode(), None


def run(args: argparse.Namespace) -> int:
    from ..config import parse_duration
    from ..paths import split_path
    from ..tokens import mint
    from . import UsageError

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    segments = split_path(args.path)
    if segments is None:
        raise UsageError(f"--path {args.path!r} is not a plain path inside the mount")
    secret, config = server_secret(args.config)
    mounts = [m.name for m in config.mounts] if config else None
    if mounts is not None and args.mount not in mounts:
        raise UsageError(f"--mount {args.mount!r}: {args.config} has no such mount (it has: {', '.join(mounts)})")
    print(mint(secret, args.mount, "/".join(segments), ttl))
    if sys.stderr.isatty():
        print("use it in a source URL as https://SERVER/-/t/TOKEN/PATH (what Neuroglancer needs), "
              "or as ?token=... or 'Authorization: Bearer ...'", file=sys.stderr)
    return 0

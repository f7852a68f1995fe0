"""``ngserve nginx-config``: the nginx configuration for a deployment, from its ngserve.toml.

nginx then sends the local mounts' files itself, at its own speed, and asks ngserve only
whether the client may read them (``auth_request`` to ``/-/authz``, see :mod:`server.authz`),
caching each allow per folder and credentials for ``verdict_ttl`` seconds.  Everything nginx
should not decide goes to ngserve: listings, ``/-/`` pages and views, remote mounts, and any
answer other than a file (401/403 with ngserve's sign-in hints, 404, a folder's redirect, a
``.gz`` sibling, a symlink, a refused method).

ngserve's file rules are kept by construction, not re-implemented: the locations match only
paths of plain visible segments (dotfiles other than zarr's metadata, backslashes and
non-ASCII names go to ngserve, which refuses or serves them by its rules), and
``disable_symlinks on`` hands every path through a symlink to ngserve, which follows it only
inside the root.  Generated from the config, the mounts, their sources and access live in one
place: regenerate after changing them.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import MountConfig, ServerConfig

VERDICT_LOCATION = "/_ngserve_verdict"  # nginx's internal location for the auth subrequest
CACHE_ZONE = "ngserve_verdicts"
# nginx's cache key for a verdict, also sent to ngserve (server.authz.KEY): its parts in that order.
KEY = "$ngserve_dir|$http_authorization|$cookie_ngserve_session|$cookie_ngserve_token|$ngserve_arg_token"
DEFAULT_CACHE_DIR = "/var/cache/nginx/ngserve_verdicts"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")  # mount names written into a location regex as they are
_UNSAFE_TEXT = re.compile(r'["\\$;{}\x00-\x1f\x7f]')  # what cannot go in a quoted nginx string as it is
# One path segment nginx may serve: printable ASCII without "/" and "\" (ngserve refuses "\"),
# not starting with "." (ngserve's dotfile rule) unless it is one of the zarr metadata names.
# Written with \x escapes: nginx's parser would eat a backslash before a backslash.
_CHAR = r"[\x20-\x2e\x30-\x5b\x5d-\x7e]"
_FIRST = r"[\x20-\x2d\x30-\x5b\x5d-\x7e]"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nginx-config", help="print an nginx configuration that sends local files itself, "
                                              "asking ngserve who may read them")
    p.add_argument("--config", required=True, metavar="FILE", help="the deployment's ngserve.toml")
    p.add_argument("--upstream", action="append", metavar="HOST:PORT",
                   help="an ngserve replica nginx proxies to (repeatable; default: the config's host and port)")
    p.add_argument("--listen", default="80", metavar="ADDR",
                   help="nginx's listen address, e.g. 443 ssl or 127.0.0.1:8080 (default 80)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR",
                   help=f"where nginx keeps cached verdicts (default {DEFAULT_CACHE_DIR}); "
                        "their keys hold credentials: a folder only nginx reads, on tmpfs ideally")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config_file import load_config
    from . import UsageError

    config = load_config(args.config, upstreams=False, secrets=False)  # mounts and [server], no secret
    if not config.mounts:
        raise UsageError(f"{args.config} has no [[mounts]]: nothing for nginx to serve")
    upstreams = args.upstream or [f"{_loopback(config.host)}:{config.port}"]
    for value in [*upstreams, args.listen, args.cache_dir]:
        if _UNSAFE_TEXT.search(value) or not value.strip():
            raise UsageError(f"{value!r} cannot be written into an nginx configuration: no quotes, "
                             "backslashes, '$', ';', braces or control characters")
    print(render(config, upstreams, args.listen, args.cache_dir), end="")
    return 0


def _loopback(host: str) -> str:
    """Where nginx on this host reaches a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def render(config: ServerConfig, upstreams: list[str], listen: str = "80",
           cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """The nginx configuration (for nginx's ``http`` context) serving ``config``'s deployment."""
    from ..app import EXPOSE_HEADERS
    from ..config import is_remote
    from ..storage import MEMORY_SOURCE

    local = [m for m in config.mounts if not is_remote(m.source) and m.source != MEMORY_SOURCE]
    fast = [m for m in local if (_SAFE_NAME.match(m.name) or m.name == "") and not _UNSAFE_TEXT.search(m.source)]
    named = [m.name for m in config.mounts if m.name]
    if any(not _SAFE_NAME.match(n) for n in named):  # the root's regex could not leave such a mount out
        fast = [m for m in fast if m.name]
    protected = any(m.access != "public" for m in fast)
    any_origin = "*" in config.cors_origins

    out = [
        "# Generated by `ngserve nginx-config`: nginx sends the local mounts' files itself and asks\n"
        f"# ngserve ({VERDICT_LOCATION} -> /-/authz) who may read them, caching each allow per folder for\n"
        f"# [server] verdict_ttl = {config.verdict_ttl} s. Put it in nginx's http context (e.g. conf.d/);\n"
        "# regenerate it whenever the mounts change. List nginx's address in [auth] trusted_proxies\n"
        "# so ngserve keeps nginx's X-Request-ID; `pcre_jit on;` (main context) speeds the locations.\n",
    ]
    if protected:
        out.append(
            "\n# Cached verdicts. Their keys hold the credentials asked with: keep the folder nginx's own.\n"
            f"proxy_cache_path {cache_dir} levels=1:2 keys_zone={CACHE_ZONE}:10m max_size=256m inactive=10m "
            "use_temp_path=off;\n")
    out.append("\nupstream ngserve {\n")
    out += [f"    server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams]
    out.append("    keepalive 16;\n}\n")
    if not any_origin:
        out.append("\n# [server] cors_origins: the origins whose pages may read the data.\n"
                   "map $http_origin $ngserve_cors_origin {\n    default \"\";\n")
        out += [f"    \"{o}\" $http_origin;\n" for o in config.cors_origins if not _UNSAFE_TEXT.search(o)]
        out.append("}\n")

    out.append(f"\nserver {{\n    listen {listen};\n\n")
    out.append("    # Listings, /-/ pages and views, remote mounts: ngserve.\n    location / {\n")
    out += _proxy_lines()
    out.append("    }\n\n    # Whatever nginx will not answer itself (error_page): ngserve gives the real answer.\n"
               "    location @ngserve {\n")
    out += _proxy_lines()
    out.append("    }\n")
    if protected:
        out.append(_verdict_location())
    headers = _file_headers(EXPOSE_HEADERS, any_origin)
    for m in fast:
        out.append(_mount_locations(m, named, headers))
    for m in local:
        if m not in fast:
            out.append(f"\n    # mount {m.name!r}: its name or source cannot be written in a location; ngserve serves it.\n")
    if config.accel_redirect:
        out.append(_accel_locations(config.accel_redirect, local))
    out.append("}\n")
    return "".join(out)


def _proxy_lines() -> list[str]:
    return [
        "        proxy_pass http://ngserve;\n",
        "        proxy_http_version 1.1;\n",
        "        proxy_set_header Connection \"\";\n",
        "        proxy_set_header Host $http_host;\n",
        "        proxy_set_header X-Request-ID $request_id;\n",
        "        proxy_set_header X-Forwarded-User \"\";   # only a signing-in proxy may say who a user is\n",
        "        proxy_set_header X-Forwarded-Email \"\";\n",
        "        proxy_buffering off;\n",
        "        proxy_buffer_size 256k;                # a chunk in one buffer, not 64 pages\n",
        "        proxy_buffers 4 256k;\n",
        "        proxy_busy_buffers_size 256k;\n",
        "        proxy_next_upstream error timeout http_502;   # a replica that dies: GETs go on to another\n",
    ]


def _verdict_location() -> str:
    return (
        "\n    # ngserve's verdict on the request being served: the client's headers, the asked URI.\n"
        f"    location = {VERDICT_LOCATION} {{\n"
        "        internal;\n"
        "        proxy_pass http://ngserve/-/authz;\n"
        "        proxy_method GET;\n"
        "        proxy_pass_request_body off;\n"
        "        proxy_http_version 1.1;\n"
        "        proxy_set_header Connection \"\";\n"
        "        proxy_set_header Content-Length \"\";\n"
        "        proxy_set_header Host $http_host;\n"
        "        proxy_set_header X-Original-URI $request_uri;\n"
        "        proxy_set_header X-Request-ID $request_id;\n"
        "        proxy_set_header X-Forwarded-User \"\";\n"
        "        proxy_set_header X-Forwarded-Email \"\";\n"
        f"        proxy_cache {CACHE_ZONE};\n"
        "        # The file's folder (with any /-/t/<token>/ prefix) and every credential ngserve reads;\n"
        "        # ngserve lets nginx keep an allow only when the key's own parts win it.\n"
        f"        proxy_cache_key \"{KEY}\";\n"
        f"        proxy_set_header X-Verdict-Key \"{KEY}\";\n"
        # No proxy_cache_lock: its waiters poll every 500 ms, a stall for a viewer's first chunks;
        # a burst of verdicts costs ngserve far less.
        "        # Only ngserve's X-Accel-Expires decides: the TTL for a folder-wide allow, 0 otherwise.\n"
        "        proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;\n"
        "        # A cached verdict is a file: keep it open rather than open, stat and close it per chunk.\n"
        "        # Safe: its expiry is read from the file, so a stale descriptor only means asking again.\n"
        "        open_file_cache max=4096 inactive=60s;\n"
        "        open_file_cache_valid 1s;\n"
        "    }\n"
    )


def _file_headers(expose: str, any_origin: bool) -> list[str]:
    """What ngserve puts on every answer (app._add_cors), for the answers nginx sends itself."""
    origin = ["        add_header Access-Control-Allow-Origin \"*\" always;\n"] if any_origin else [
        "        add_header Access-Control-Allow-Origin $ngserve_cors_origin always;\n",
        "        add_header Vary Origin always;\n"]
    return origin + [
        f"        add_header Access-Control-Expose-Headers \"{expose}\" always;\n",
        "        add_header X-Content-Type-Options nosniff always;\n",
        "        add_header X-Request-ID $request_id always;\n",
    ]


def _mount_locations(m: MountConfig, named: list[str], headers: list[str]) -> str:
    """Two regex locations (JSON metadata, other files) serving mount ``m``'s files, each path
    also behind a ``/-/t/<token>/`` prefix."""
    from ..paths import ALLOWED_DOTFILES
    from ..responses import METADATA_NAMES

    seg = "(?:" + "|".join([_FIRST + _CHAR + "*", *sorted(re.escape(n) for n in ALLOWED_DOTFILES)]) + ")"
    if m.name:
        top = "/" + re.escape(m.name) + "/"
    else:  # the root mount: not a named mount's path, nor /-/
        top = "/(?!(?:" + "|".join(["-", *(re.escape(n) for n in named)]) + ")(?:/|$))"
    folder = f"(?<ngserve_dir>(?:/-/t/[^/]+)?{top}(?<ngserve_sub>(?:{seg}/)*))"
    meta = "|".join([*sorted(re.escape(n) for n in METADATA_NAMES if not n.endswith(".json")),
                     _FIRST + _CHAR + r"*\.json"])
    label = f"mount {m.name!r} (access = {m.access!r}): {m.source}"
    out = [f"\n    # {label}\n"]
    for name, content_type in ((f"(?:{meta})", "application/json"), (seg, "application/octet-stream")):
        out.append(f"    location ~ \"^{folder}(?<ngserve_name>{name})$\" {{\n")
        if m.access != "public":
            out += [f"        auth_request {VERDICT_LOCATION};\n",
                    "        set $ngserve_arg_token $arg_token;   # for the verdict's cache key (a subrequest has no query)\n"]
        out += [
            f"        alias \"{m.source}/$ngserve_sub$ngserve_name\";\n",
            "        disable_symlinks on;                 # a symlink: ngserve follows it only inside the root\n",
            "        types { }\n",
            f"        default_type {content_type};\n",
            "        sendfile on;\n",
            "        max_ranges 1;                        # several ranges: the whole file, as ngserve answers them\n",
            "        error_page 301 401 403 404 405 = @ngserve;\n",
            *headers,
        ]
        if m.cache_control:
            out.append(f"        add_header Cache-Control \"{m.cache_control}\";\n")
        out.append("    }\n")
    return "".join(out)


def _accel_locations(prefix: str, mounts: list[MountConfig]) -> str:
    """``[server] accel_redirect``: where nginx sends the files ngserve itself authorized."""
    out = [f"\n    # [server] accel_redirect = \"{prefix}\": files ngserve answered with X-Accel-Redirect.\n"]
    for m in mounts:
        if (m.name and not _SAFE_NAME.match(m.name)) or _UNSAFE_TEXT.search(m.source):
            continue
        out += [
            f"    location {prefix}{m.name + '/' if m.name else ''} {{\n",
            "        internal;\n",
            f"        alias \"{m.source}/\";\n",
            "        sendfile on;\n",
            "        max_ranges 1;                        # several ranges: the whole file, as ngserve answers them\n",
            "        add_header Content-Encoding $upstream_http_content_encoding;\n",
            "        add_header Vary $upstream_http_vary;\n",
            "        add_header Access-Control-Allow-Origin $upstream_http_access_control_allow_origin;\n",
            "        add_header Access-Control-Expose-Headers $upstream_http_access_control_expose_headers;\n",
            "        add_header X-Content-Type-Options $upstream_http_x_content_type_options;\n",
            "        add_header X-Request-ID $upstream_http_x_request_id;\n",
            "    }\n",
        ]
    return "".join(out)

"""``ngserve serve --config ngserve.toml``: read a deployment's config file into a ServerConfig.

Secrets are never written in the file: each comes from an environment
variable (``*_env``) or a file (``*_file``), so the config can be committed
and mounted read-only.  Every error names the key and says what is wrong.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from .config import (
    ACCESS_MODES,
    AuthConfig,
    ConfigError,
    EncryptedKeyError,
    MountConfig,
    ServerConfig,
    UpstreamConfig,
    UserConfig,
    is_remote,
    parse_duration,
    parse_host,
    parse_size,
    source_problem,
)
from .passwords import check_hash_format

# ``ngserve serve`` flag (argparse dest) -> the config key that sets the same thing.
CLI_KEYS = {
    "dir": 'mounts (name = "")',
    "host": "server.host",
    "port": "server.port",
    "mount": "mounts",
    "workers": "server.workers",
    "cors_origin": "server.cors_origins",
    "frame_ancestor": "server.frame_ancestors",
    "public_url": "server.public_url",
    "data_dir": "server.data_dir",
    "open": "server.open",
    "quiet": "server.access_log",
    "log_format": "server.log_format",
    "config": None,  # the file itself
}

# Keys that would hold a secret inline, and what to write instead.
_INLINE_SECRETS = {
    "secret": "secret_env or secret_file",
    "password": "password_env or password_file",
    "bearer": "bearer_env or bearer_file",
    "token": "bearer_env or bearer_file",
    "macaroon": "bearer_env or bearer_file",
}


class _Table:
    """One TOML table, read key by key, with every error naming its full key."""

    def __init__(self, data: Any, where: str, base: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table")
        self.data, self.where, self.base = dict(data), where, base
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple, default: Any = None, check: Callable | None = None) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float, (int, float)))
        if not ok:
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{self.key(name)}: expected {names}, got {value!r}")
        if check is not None:
            try:
                return check(value)
            except ValueError as exc:
                raise ConfigError(f"{self.key(name)}: {exc}") from None
        return value

    def path(self, name: str) -> str | None:
        value = self.get(name, str, check=_no_nul)
        return None if value is None else str((self.base / value).resolve())

    read_secrets = True  # False: the keys are checked but no variable or file is read (None)

    def secret(self, name: str) -> str | None:
        """A secret from ``<name>_env`` or ``<name>_file`` (never inline)."""
        env, file = self.get(f"{name}_env", str), self.get(f"{name}_file", str, check=_no_nul)
        if not self.read_secrets:
            return None
        if env and file:
            raise ConfigError(f"{self.key(name + '_env')}: give {name}_env or {name}_file, not both")
        if env:
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"{self.key(name + '_env')}: environment variable {env} is not set")
            return value
        if file:
            path = self.base / file
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{self.key(name + '_file')}: cannot read {path}: {exc.strerror}") from None
            if not value:
                raise ConfigError(f"{self.key(name + '_file')}: {path} is empty")
            return value
        return None

    def finish(self) -> None:
        for name in self.data:
            if name in self.used:
                continue
            if name in _INLINE_SECRETS:
                raise ConfigError(
                    f"{self.key(name)}: secrets are not written in the config file; "
                    f"use {_INLINE_SECRETS[name]}"
                )
            allowed = ", ".join(sorted(self.used))
            raise ConfigError(f"{self.key(name)}: unknown key (expected one of: {allowed})")


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``path.is_dir()`` or ``is_file()``, False where pathlib raises instead (a name too long)."""
    try:
        return test(path)
    except OSError:
        return False


def _no_nul(value: str) -> str:
    # The OS cannot take a NUL in a file name; pathlib would raise a bare ValueError deep inside.
    if "\x00" in value:
        raise ValueError("a file name cannot contain a NUL character")
    return value


def _postgres_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{value!r} is not a PostgreSQL URL: use postgresql://USER@HOST:PORT/DATABASE")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(f"{value!r} has a port that is not a number: use postgresql://USER@HOST:PORT/DATABASE") from None
    if parts.password is not None or "password=" in parts.query:
        raise ValueError("secrets are not written in the config file: drop the password from the URL "
                         "and use states_password_env or states_password_file")
    return value


def _accel_prefix(value: str) -> str:
    if not (value.startswith("/") and value.endswith("/") and len(value) > 2) or any(c in value for c in " ?#%\r\n"):
        raise ValueError(f"{value!r} is not a URL path prefix: use e.g. \"/_ngserve_files/\" (with both slashes)")
    return value


def _whole_seconds(value: str | int) -> int:
    """0, or a duration in whole seconds (nginx's X-Accel-Expires counts seconds)."""
    if value == 0 or value == "0":
        return 0
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"{value!r} is not a whole number of seconds")
    return int(seconds)


def _str_list(value: list) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _positive_size(value: str | int) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"{value!r} is not a positive size: use e.g. 16MiB")
    return size


def _host_list(value: list) -> list[str]:
    hosts = _str_list(value)
    for host in hosts:
        parse_host(host)  # raises with the reason
    return hosts


def load_config(path: str | os.PathLike, *, upstreams: bool = True, secrets: bool = True) -> ServerConfig:
    """Read and check the config file at ``path`` (not yet merged with CLI flags).

    ``upstreams=False`` skips the mounts' ``[mounts.upstream]`` tables (credentials,
    certificates): admin commands that only sign tokens need ``[auth]`` and the mount
    names, and must not fail for want of the server's upstream secrets.  ``secrets=False``
    reads no secret at all (``ngserve nginx-config`` runs where nginx does).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        bad = exc.object[exc.start]
        raise ConfigError(
            f"--config {path}: not UTF-8 text (invalid byte {bad:#04x} at offset {exc.start}): save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    return config_from_toml(raw, path.resolve().parent, upstreams=upstreams, secrets=secrets)


def config_from_toml(raw: dict, base: Path, *, upstreams: bool = True, secrets: bool = True) -> ServerConfig:
    """Check a parsed config file's tables; relative paths in it are relative to ``base``."""
    top = _Table(raw, "", base)
    config = ServerConfig()

    server = _Table(top.get("server", dict, {}), "server", base)
    server.read_secrets = secrets
    config.host = server.get("host", str, config.host)
    config.port = server.get("port", int, config.port)
    config.workers = server.get("workers", int, config.workers)
    config.public_url = server.get("public_url", str)
    data_dir = server.path("data_dir")
    config.data_dir = Path(data_dir) if data_dir else None
    config.cors_origins = server.get("cors_origins", list, config.cors_origins, _str_list)
    config.frame_ancestors = server.get("frame_ancestors", list, config.frame_ancestors, _str_list)
    config.states_per_minute = server.get("states_per_minute", (int, float), config.states_per_minute)
    config.states_burst = server.get("states_burst", int, config.states_burst)
    config.states_max_bytes = server.get("states_max_bytes", (str, int), config.states_max_bytes, parse_size)
    config.states_url = server.get("states_url", str, None, _postgres_url)
    config.states_password = server.secret("states_password")
    config.accel_redirect = server.get("accel_redirect", str, None, _accel_prefix)
    config.verdict_ttl = server.get("verdict_ttl", (str, int), config.verdict_ttl, _whole_seconds)
    cache_dir = server.path("cache_dir")
    config.cache_dir = Path(cache_dir) if cache_dir else None
    config.cache_bytes = server.get("cache_bytes", (str, int), config.cache_bytes, parse_size)
    config.open_browser = server.get("open", bool, False)
    config.access_log = server.get("access_log", bool, True)
    config.metrics = server.get("metrics", str)
    config.log_format = server.get("log_format", str, config.log_format)
    config.drain_seconds = server.get("drain_seconds", (int, float), config.drain_seconds)
    server.finish()

    auth = _Table(top.get("auth", dict, {}), "auth", base)
    auth.read_secrets = secrets
    secret = auth.secret("secret")
    config.auth = AuthConfig(
        secret=secret.encode() if secret else None,
        session_ttl=auth.get("session_ttl", (str, int, float), 12 * 3600.0, parse_duration),
        trusted_proxies=auth.get("trusted_proxies", list, [], _str_list),
        cookie_secure=auth.get("cookie_secure", bool, True),
    )
    auth.finish()

    for i, item in enumerate(top.get("mounts", list, [])):
        config.mounts.append(_mount(_Table(item, f"mounts[{i}]", base), upstreams))
    for i, item in enumerate(top.get("users", list, [])):
        config.users.append(_user(_Table(item, f"users[{i}]", base)))
    names = [u.name for u in config.users]
    for dup in {n for n in names if names.count(n) > 1}:
        raise ConfigError(f"users: the name {dup!r} appears twice")
    top.finish()
    return config


def _mount(t: _Table, upstreams: bool = True) -> MountConfig:
    name = t.get("name", str)
    if name is None:
        raise ConfigError(f"{t.key('name')}: every mount needs a name (\"\" serves it at /)")
    source = t.get("source", str)
    if not source:
        raise ConfigError(f"{t.key('source')}: every mount needs a source (a folder or a webdav+https:// URL)")
    problem = source_problem(source)
    if problem:
        raise ConfigError(f"{t.key('source')}: {problem}")
    if not is_remote(source):
        folder = t.base / source
        if not _is(folder, Path.is_dir):
            raise ConfigError(f"{t.key('source')}: {folder} is not a folder")
        source = str(folder.resolve())
    access = t.get("access", str, "public")
    if access not in ACCESS_MODES:
        raise ConfigError(f"{t.key('access')}: {access!r} is not one of {', '.join(ACCESS_MODES)}")
    users = t.get("users", list, None, _str_list)
    cache_control = t.get("cache_control", str)
    up_raw = t.get("upstream", dict, {})
    t.finish()
    if up_raw and not is_remote(source):
        raise ConfigError(f"{t.key('upstream')}: only remote sources (webdav+https://, https://) have an upstream")
    upstream = _upstream(_Table(up_raw, t.key("upstream"), t.base)) if upstreams else UpstreamConfig()
    return MountConfig(name=name, source=source, access=access, users=users, upstream=upstream,
                       cache_control=cache_control)


def _upstream(t: _Table) -> UpstreamConfig:
    positive = parse_duration
    up = UpstreamConfig(
        username=t.get("username", str),
        password=t.secret("password"),
        bearer=t.secret("bearer"),
        client_cert=t.path("client_cert"),
        client_key=t.path("client_key"),
        ca_file=t.path("ca_file"),
        connect_timeout=t.get("connect_timeout", (str, int, float), 10.0, positive),
        read_timeout=t.get("read_timeout", (str, int, float), 30.0, positive),
        retries=t.get("retries", int, 2),
        metadata_ttl=t.get("metadata_ttl", (str, int, float), 10.0, positive),
        chunk_cache_bytes=t.get("chunk_cache_bytes", (str, int), 0, parse_size),
        metadata_max_bytes=t.get("metadata_max_bytes", (str, int), 16 << 20, _positive_size),
        listing_max_bytes=t.get("listing_max_bytes", (str, int), 64 << 20, _positive_size),
        redirect_hosts=t.get("redirect_hosts", list, [], _host_list),
    )
    t.finish()
    if up.bearer and t.data.get("bearer_file"):  # re-read when it changes: macaroons are rotated
        up.bearer_file = str((t.base / t.data["bearer_file"]).resolve())
    if (up.username is None) != (up.password is None):
        raise ConfigError(f"{t.key('username')}: basic auth needs both username and password_env/password_file")
    if up.username and up.bearer:
        raise ConfigError(f"{t.key('bearer_env')}: give basic auth (username/password) or a bearer token, not both")
    if up.client_key and not up.client_cert:
        raise ConfigError(f"{t.key('client_key')}: a client key needs client_cert too")
    for key in ("client_cert", "client_key", "ca_file"):
        value = getattr(up, key)
        if value and not _is(Path(value), Path.is_file):
            raise ConfigError(f"{t.key(key)}: {value} is not a file")
    _check_tls(t, up)
    if not 0 <= up.retries <= 10:
        raise ConfigError(f"{t.key('retries')}: expected 0 to 10, got {up.retries}")
    return up


def _check_tls(t: _Table, up: UpstreamConfig) -> None:
    """Load the CA bundle and client certificate now: a bad one would otherwise fail every request."""
    if up.ca_file:
        try:
            ssl.create_default_context(cafile=up.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{t.key('ca_file')}: cannot load it as PEM CA certificates ({_ssl_reason(exc)})") from None
    if not up.client_cert:
        return
    key = "client_key" if up.client_key else "client_cert"
    try:
        up.ssl_context()
    except EncryptedKeyError:
        raise ConfigError(
            f"{t.key(key)}: the private key is encrypted and a server cannot type its pass phrase; "
            "decrypt it (openssl pkey -in KEY -out PLAIN.key) and keep the file readable only by ngserve"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{t.key(key)}: cannot load the client certificate and key ({_ssl_reason(exc)}): "
            "both must be PEM, the key unencrypted and matching the certificate"
        ) from None


def _ssl_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "not PEM"  # its text is "[SSL] PEM lib (_ssl.c:NNNN)": no help to anyone
    return exc.strerror or "unreadable"


def _user(t: _Table) -> UserConfig:
    name = t.get("name", str)
    if not name or ":" in name:
        raise ConfigError(f"{t.key('name')}: every user needs a name without ':'")
    inline = t.get("password_hash", str)
    from_file = t.secret("password_hash")
    if inline and from_file:
        raise ConfigError(f"{t.key('password_hash')}: give password_hash or password_hash_file/_env, not both")
    stored = inline or from_file
    t.finish()
    if not stored:
        raise ConfigError(f"{t.key('password_hash')}: user {name!r} needs a password hash (from `ngserve user add`)")
    problem = check_hash_format(stored)
    if problem:
        raise ConfigError(f"{t.key('password_hash')}: {problem}")
    return UserConfig(name=name, password_hash=stored)

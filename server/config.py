"""The server's settings, whichever way they were given (CLI flags, a config file, or both)."""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says what is expected."""


ACCESS_MODES = ("public", "users", "token")
METRICS_MODES = ("public", "users", "off")
LOG_FORMATS = ("text", "json")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]+$")  # printable ASCII: no line break can end the header
REMOTE_SCHEMES = ("webdav+https://", "webdav+http://", "https://", "http://")


def is_remote(source: str) -> bool:
    """Whether a mount's source is a URL (WebDAV or plain HTTP) rather than a local folder."""
    return source.lower().startswith(REMOTE_SCHEMES)


def source_problem(source: str) -> str | None:
    """What is wrong with a remote source URL wherever it was given, or None.

    ``user:password@`` would put the upstream password in process lists, shell
    history and any log that names the source; credentials come from files or
    the environment instead.
    """
    if is_remote(source) and "@" in source.split("://", 1)[1].split("/", 1)[0]:
        return (
            "credentials do not belong in the URL; put them in the config file's [mounts.upstream]: "
            "username with password_env/password_file, or bearer_env/bearer_file"
        )
    return None


@dataclass
class UpstreamConfig:
    """How to reach a remote source: credentials (already read from env/files), timeouts, caches."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)  # dCache macaroon or OIDC access token
    bearer_file: str | None = None  # where ``bearer`` came from: re-read when it changes (rotation)
    client_cert: str | None = None  # PEM file; with client_key for X.509 doors
    client_key: str | None = None
    ca_file: str | None = None  # extra CA bundle for the upstream's TLS certificate
    connect_timeout: float = 10.0
    # Seconds for the answer's headers (after connecting), and then for each gap between
    # pieces of a body: a slow but steady upstream is no fault, a stalled one is.
    read_timeout: float = 30.0
    retries: int = 2  # extra attempts for idempotent requests on connection errors, 502/503/504
    metadata_ttl: float = 10.0  # seconds a metadata file or listing is served without asking upstream
    chunk_cache_bytes: int = 0  # memory for whole chunk files; 0 turns the chunk cache off
    metadata_max_bytes: int = 16 << 20  # a larger metadata file is refused (502), never buffered
    listing_max_bytes: int = 64 << 20  # a larger PROPFIND answer is refused (502)
    # Hosts ("name" for any port, "name:port" for one) besides the source's own origin that the
    # upstream may redirect us to (dCache doors send reads to pool nodes); nothing else is followed.
    redirect_hosts: list[str] = field(default_factory=list)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for an https upstream: the system CAs or ca_file, and the client certificate if any.

        The config loader builds it once too, so a bad certificate, key or CA
        bundle stops start-up instead of failing every request with a 500.
        """
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            # Without a password callback OpenSSL asks for an encrypted key's pass phrase on
            # the terminal, which would block a server; refuse such a key instead.
            ctx.load_cert_chain(self.client_cert, self.client_key, password=_encrypted_key)
        return ctx


class EncryptedKeyError(ValueError):
    """The client key needs a pass phrase, which a server cannot type."""


def _encrypted_key() -> bytes:
    raise EncryptedKeyError("the key is encrypted")


@dataclass
class MountConfig:
    name: str  # URL prefix without slashes; "" is the root
    source: str  # a local folder, webdav+https://..., webdav+http://..., https://...
    access: str = "public"  # "public" | "users" | "token"
    users: list[str] | None = None  # with access="users": only these names (None: every user)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache_control: str | None = None  # Cache-Control sent with this mount's file answers


@dataclass
class UserConfig:
    name: str
    password_hash: str = field(repr=False)


@dataclass
class AuthConfig:
    secret: bytes | None = field(default=None, repr=False)  # signs share tokens and sessions
    session_ttl: float = 12 * 3600.0
    trusted_proxies: list[str] = field(default_factory=list)  # addresses/networks allowed to send X-Forwarded-User
    cookie_secure: bool = True


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    mounts: list[MountConfig] = field(default_factory=list)
    workers: int = 1
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    public_url: str | None = None  # how clients reach us, when behind a proxy
    data_dir: Path | None = None  # server state (short links); default per user
    open_browser: bool = False
    access_log: bool = True
    auth: AuthConfig = field(default_factory=AuthConfig)
    users: list[UserConfig] = field(default_factory=list)
    # Who may frame our HTML pages (listings, login, viewer): CSP frame-ancestors sources.
    frame_ancestors: list[str] = field(default_factory=lambda: ["'self'"])
    # Short links: per client address, a token bucket; and a budget for the whole store.
    states_per_minute: float = 30.0
    states_burst: int = 10
    states_max_bytes: int = 1 << 30
    states_url: str | None = None  # postgresql://user@host:port/db: short links shared by replicas
    states_password: str | None = None  # from states_password_env/_file, never the file itself
    accel_redirect: str | None = None  # e.g. "/_ngserve_files/": nginx sends local files (X-Accel-Redirect)
    # Seconds nginx may reuse an allow from /-/authz for a whole folder (ngserve nginx-config):
    # how long a removed user or a revoked secret can still read there.  0: every file asks.
    verdict_ttl: int = 5
    # Translated view chunks (/-/precomputed/): kept in memory, and on disk when cache_dir is set.
    cache_dir: Path | None = None
    cache_bytes: int = 1 << 30  # the disk cache's budget
    metrics: str | None = None  # who reads /-/metrics: "public" | "users" | "off"; None: public iff every mount is
    log_format: str = "text"  # "text" | "json": one JSON object per access-log line and per error
    drain_seconds: float = 10.0  # on SIGTERM, how long requests in flight may take to finish

    def metrics_access(self) -> str:
        """Who may read /-/metrics: as configured, else public only when every mount is public
        (a protected deployment's mount names and traffic are for its operators)."""
        if self.metrics:
            return self.metrics
        return "public" if all(m.access == "public" for m in self.mounts) else "users"

    def validate(self) -> None:
        if not self.mounts:
            raise ConfigError("nothing to serve: give a DIR or at least one --mount NAME=DIR")
        seen = set()
        for m in self.mounts:
            if m.name in seen:
                raise ConfigError(f"mount name {m.name!r} is used twice")
            if m.name == "-" or "/" in m.name or m.name.startswith("."):
                raise ConfigError(
                    f"mount name {m.name!r} is not allowed: use letters, digits, '_' or '-', "
                    "not '-' alone, no '/' and no leading '.'"
                )
            seen.add(m.name)
            if m.access not in ACCESS_MODES:
                raise ConfigError(f"mount {m.name!r}: access {m.access!r} is not one of {', '.join(ACCESS_MODES)}")
            if m.access != "public" and self.auth.secret is None:
                raise ConfigError(
                    f"mount {m.name!r} has access={m.access!r} but auth has no secret: "
                    "set [auth] secret_env or secret_file"
                )
            if m.access == "users" and not self.users and not self.auth.trusted_proxies:
                raise ConfigError(
                    f"mount {m.name!r} has access='users' but there are no [[users]] and no "
                    "[auth] trusted_proxies: nobody could sign in"
                )
            if m.cache_control is not None and not _HEADER_VALUE.match(m.cache_control):
                raise ConfigError(
                    f"mount {m.name!r}: cache_control {m.cache_control!r} is not a header value: "
                    "use e.g. \"public, max-age=3600\""
                )
            if m.access != "public" and m.cache_control and "public" in _directives(m.cache_control):
                raise ConfigError(
                    f"mount {m.name!r} has access={m.access!r} but cache_control says public: a shared cache "
                    "could hand its data to anyone; use \"private, max-age=…\""
                )
        if self.metrics not in (None, *METRICS_MODES):
            raise ConfigError(f"metrics {self.metrics!r} is not one of {', '.join(METRICS_MODES)}")
        if self.metrics == "users" and not self.users and not self.auth.trusted_proxies:
            raise ConfigError("metrics = 'users' but there are no [[users]] and no [auth] trusted_proxies: "
                              "nobody could read them (use \"public\" or \"off\")")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log format {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if not 0 <= self.verdict_ttl <= 3600:
            raise ConfigError(f"verdict_ttl must be between 0 and 3600 seconds, not {self.verdict_ttl}")
        if not 0 <= self.drain_seconds <= 3600:
            raise ConfigError(f"drain_seconds must be between 0 and 3600, not {self.drain_seconds}")
        self.frame_ancestors = [frame_ancestor(v) for v in self.frame_ancestors]
        if "'none'" in self.frame_ancestors and len(self.frame_ancestors) > 1:
            raise ConfigError("frame_ancestors: 'none' cannot be combined with other sources")
        if self.states_per_minute <= 0 or self.states_burst < 1:
            raise ConfigError("states_per_minute must be positive and states_burst at least 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0-65535")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")
        if self.auth.secret is not None and len(self.auth.secret) < 16:
            raise ConfigError("auth secret is too short: use at least 16 random bytes (e.g. `openssl rand -hex 32`)")
        for proxy in self.auth.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"auth.trusted_proxies: {proxy!r} is not an IP address or network") from None


def _directives(cache_control: str) -> list[str]:
    return [d.strip().split("=", 1)[0].lower() for d in cache_control.split(",")]


_FRAME_KEYWORDS = {"self": "'self'", "'self'": "'self'", "none": "'none'", "'none'": "'none'", "*": "*"}
_FRAME_SOURCE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?)?[^\s;,'\"]+$")


def frame_ancestor(value: str) -> str:
    """One CSP ``frame-ancestors`` source: ``self``, ``none``, ``*`` or an origin like
    ``https://jupyter.example.org`` (``https://*.example.org`` too), as the header spells it."""
    keyword = _FRAME_KEYWORDS.get(value.strip().lower())
    if keyword:
        return keyword
    if not _FRAME_SOURCE.match(value):
        raise ConfigError(
            f"frame_ancestors: {value!r} is not a frame source: use self, none, * or an origin "
            "such as https://jupyter.example.org"
        )
    return value


def parse_mount(text: str) -> MountConfig:
    """Parse ``NAME=DIR`` (or ``NAME=URL``) from the command line."""
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise ConfigError(f"--mount {text!r} is malformed: expected NAME=DIR, e.g. --mount em=/data/em")
    problem = source_problem(source)
    if problem:
        raise ConfigError(f"--mount {name}: {problem}")  # not the text: it holds a password
    return MountConfig(name=name, source=source)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DURATION = 1000 * 365 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``90``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            value = float(text)
        except OverflowError:  # an int past float's range
            value = math.inf
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 15m, 12h, 7d")
        value = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    # Not NaN, not infinite ("9" * 400 reads as inf): expiry times are int(now + value).
    if not 0 < value < _MAX_DURATION:
        raise ValueError(f"{str(text)[:40]!r} is not a positive duration under 1000 years")
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_host(text: str) -> tuple[str, int | None]:
    """``(host, port)`` from ``"pool1.example.org"`` (port None: any) or ``"pool1.example.org:2880"``."""
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or not parts.hostname or parts.path or parts.query or parts.fragment or "@" in text:
        raise ValueError(f"{text!r} is not a host name: write e.g. pool1.example.org or pool1.example.org:2880")
    return parts.hostname, port


def parse_size(text: str | int) -> int:
    """Bytes from ``1048576``, ``"512MiB"`` or ``"2GB"``."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size: use e.g. 0, 256MiB, 2GiB")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]

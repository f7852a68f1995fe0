"""Inbound authentication and per-mount access control.

Each mount has ``access = "public" | "users" | "token"``:

* ``public``: anyone reads it.
* ``users``: a signed-in user (HTTP basic, the ``/-/login`` session cookie,
  or ``X-Forwarded-User``/``-Email`` from a trusted proxy), optionally only
  the names in the mount's ``users`` list; or a share token for it.
  A session counts only while its user is in ``[[users]]``: only ``/-/login``
  mints one, after a password check, so removing a user ends their sessions.
  Proxy-identified users get no session; the proxy vouches on every request.
* ``token``: only a share token for it.

Share tokens (:mod:`server.tokens`) arrive in the path as
``/-/t/<token>/<data path>``, as ``?token=``, as ``Authorization: Bearer``, or
as the ``ngserve_token`` cookie.  Share links use the path form: every client
keeps a path prefix on every file below a source URL, while Neuroglancer's
zarr and n5 sources drop a query string (they append file names to the URL
text, after the query).  Without credentials the answer is 401, with
credentials that do not reach the path 403, and an expired token gets a 401
that says so.  The principal is stored on the request for the access log.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import html
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from aiohttp import web
from multidict import CIMultiDict

from .config import MountConfig, ServerConfig
from .passwords import dummy_hash, verify_password
from .routing import TARGET
from .throttle import FailureBackoff, Throttled, too_many_requests
from .tokens import SESSION, Claims, TokenError, mint_session, verify

PRINCIPAL = "ngserve.principal"  # request key: who is asking, for the access log
SESSION_COOKIE = "ngserve_session"
TOKEN_COOKIE = "ngserve_token"
_REJECTED_MEMORY = 2.0  # seconds a failed password is remembered: a repeat at once is not a new guess
_BASIC_MEMORY = 300.0  # seconds a verified basic-auth password is remembered (scrypt is slow on purpose)
# scrypt runs on its own few threads: a flood of wrong passwords then queues there
# instead of filling the default executor that file reads and short links use.
PASSWORD_THREADS = 2
# Failed passwords before a user name, or a client address, backs off (see FailureBackoff).
# An address gets more: a NAT or a campus proxy carries many people's typos.
USER_FAILURES = 5
ADDRESS_FAILURES = 10


def mount_of(names, segments: list[str]) -> tuple[str, list[str]] | None:
    """The mount that owns a data path, and the path inside it: the one routing rule."""
    if segments and segments[0] != "" and segments[0] in names:
        return segments[0], segments[1:]
    if "" in names:
        return "", segments
    return None


@dataclass
class Identity:
    """What a request proved about itself."""

    user: str | None = None
    tokens: list[Claims] = field(default_factory=list)
    problem: str | None = None  # why presented credentials failed (bad password, expired token)

    @property
    def presented(self) -> bool:
        return bool(self.user or self.tokens or self.problem)

    def label(self) -> str:
        """For the access log: the user, or the scope of the token (never the token)."""
        if self.user:
            return f"user:{self.user}"
        if self.tokens:
            t = self.tokens[0]
            return f"token:{t.mount}/{t.path}".rstrip("/")
        return "-"


class Authority:
    """Decides who may read what, for one app."""

    def __init__(self, config: ServerConfig) -> None:
        self.secret = config.auth.secret
        self.session_ttl = config.auth.session_ttl
        self.cookie_secure = config.auth.cookie_secure
        self.mounts: dict[str, MountConfig] = {m.name: m for m in config.mounts}
        self.users = {u.name: u.password_hash for u in config.users}
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in config.auth.trusted_proxies]
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._rejected: OrderedDict[bytes, float] = OrderedDict()  # wrong guesses, for _REJECTED_MEMORY
        self._pending: dict[bytes, asyncio.Future] = {}  # verifications under way, by the same key
        self.password_pool = concurrent.futures.ThreadPoolExecutor(PASSWORD_THREADS, "ngserve-password")
        self.user_failures = FailureBackoff(threshold=USER_FAILURES)
        self.address_failures = FailureBackoff(threshold=ADDRESS_FAILURES)
        self.public_url = config.public_url

    @property
    def open(self) -> bool:
        return all(m.access == "public" for m in self.mounts.values())

    # -- who is asking -----------------------------------------------------------------
    async def identify(self, request: web.Request) -> Identity:
        cached = request.get("ngserve.identity")
        if cached is not None:
            return cached
        ident = Identity()
        if self._from_trusted_proxy(request):
            ident.user = request.headers.get("X-Forwarded-User") or request.headers.get("X-Forwarded-Email")
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        raw_tokens = [request.query.get("token"), request.cookies.get(TOKEN_COOKIE), request[TARGET].token]
        if scheme.lower() == "bearer":
            raw_tokens.append(value.strip())
        elif scheme.lower() == "basic" and not ident.user:
            try:
                ident.user = await self._basic(value.strip(), self.client_address(request))
            except Throttled as exc:
                raise too_many_requests(exc, "too many failed sign-ins for this user or address") from None
            if ident.user is None:
                ident.problem = "wrong user name or password"
        session = request.cookies.get(SESSION_COOKIE)
        if session and not ident.user and self.secret:
            try:
                claims = verify(self.secret, session)
                if claims.kind == SESSION and claims.user in self.users:
                    ident.user = claims.user
            except TokenError:
                pass  # a stale session cookie is simply no session
        for raw in raw_tokens:
            if not raw or not self.secret:
                continue
            try:
                claims = verify(self.secret, raw)
            except TokenError as exc:
                ident.problem = ident.problem or str(exc)
                continue
            if claims.kind != SESSION:
                ident.tokens.append(claims)
        request["ngserve.identity"] = ident
        request[PRINCIPAL] = ident.label()
        return ident

    def from_trusted_proxy(self, request: web.Request) -> bool:
        """Whether the request comes from a configured trusted proxy (its forwarded headers count)."""
        return self._from_trusted_proxy(request)

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        if not self.proxies or not request.remote:
            return False
        try:
            addr = ipaddress.ip_address(request.remote)
        except ValueError:
            return False
        return any(addr in net for net in self.proxies)

    def client_address(self, request: web.Request) -> str | None:
        """The address whose failed passwords count together; none for a trusted proxy,
        which speaks for many clients (its users still back off by name)."""
        return None if self._from_trusted_proxy(request) else request.remote

    async def _basic(self, value: str, address: str | None) -> str | None:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if not sep:
            return None
        return user if await self.check_password(user, password, address) else None

    async def check_password(self, user: str, password: str, address: str | None = None) -> bool:
        """Verify on the password pool (scrypt is slow); remember successes briefly so chunk reads stay fast.

        Raises :class:`Throttled`, without running scrypt, while the user name or the
        client ``address`` backs off after repeated failures.  Unknown names count like
        known ones, so a 429 does not reveal which names exist.
        """
        stored = self.users.get(user)
        key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()
        until = self._verified.get(key)
        if until is not None and until > time.monotonic():
            return True  # a remembered success is no guess: an attack on this name does not stop it
        if self._rejected.get(key, 0.0) > time.monotonic():
            # The same wrong guess again at once (nginx's verdict subrequest, then its fallback to
            # ngserve for the 401) is one attempt: still refused while backing off, not counted twice.
            for backoff, k in self._counters(user, address):
                backoff.check(k)
            return False
        # The same credentials at once (a client's parallel chunk requests) share one
        # verification and count as one attempt.
        pending = self._pending.get(key) or self._start_check(key, user, password, stored, address)
        return await asyncio.shield(pending)  # one request going away does not cancel the others' answer

    def _counters(self, user: str, address: str | None) -> list[tuple[FailureBackoff, str]]:
        return [(self.user_failures, user)] + ([(self.address_failures, address)] if address else [])

    def _start_check(
        self, key: bytes, user: str, password: str, stored: str | None, address: str | None
    ) -> asyncio.Future:
        counters = self._counters(user, address)
        for backoff, k in counters:
            backoff.check(k)
        # Counted as failed before scrypt runs, so a burst of parallel guesses cannot all
        # pass the check above while the first ones are still being verified.
        for backoff, k in counters:
            backoff.failed(k)
        future = asyncio.get_running_loop().run_in_executor(self.password_pool, _verify, password, stored)
        self._pending[key] = future

        def done(f: asyncio.Future) -> None:
            del self._pending[key]
            if f.cancelled() or f.exception() is not None:
                return
            if not f.result():
                self._rejected[key] = time.monotonic() + _REJECTED_MEMORY
                while len(self._rejected) > 1024:
                    self._rejected.popitem(last=False)
                return
            for backoff, k in counters:
                backoff.succeeded(k)
            self._verified[key] = time.monotonic() + _BASIC_MEMORY
            while len(self._verified) > 1024:
                self._verified.popitem(last=False)

        future.add_done_callback(done)
        return future

    # -- what they may read ------------------------------------------------------------
    def allows(self, ident: Identity, mount: str, path: str) -> bool:
        m = self.mounts.get(mount)
        if m is None or m.access == "public":
            return True
        if any(t.covers(mount, path) for t in ident.tokens):
            return True
        if m.access == "users" and ident.user:
            return m.users is None or ident.user in m.users
        return False

    async def may_read(self, request: web.Request, mount: str, path: str = "") -> bool:
        if self.mounts.get(mount) is None or self.mounts[mount].access == "public":
            return True
        return self.allows(await self.identify(request), mount, path)

    async def require(self, request: web.Request, mount: str, path: str) -> None:
        """Return if the request may read ``path`` in ``mount``; else raise 401 or 403."""
        ident = await self.identify(request)
        if self.allows(ident, mount, path):
            return
        if ident.problem and not (ident.user or ident.tokens):
            raise self._unauthorized(request, ident.problem)
        if not ident.presented:
            raise self._unauthorized(request, "sign in or use a link with a token to read this")
        raise web.HTTPForbidden(text="403 your sign-in or token does not give access to this path\n")

    async def require_identity(self, request: web.Request, reason: str) -> None:
        """On a protected deployment, raise 401 unless the request proves a user or a valid token."""
        if self.open:
            return
        ident = await self.identify(request)
        if not (ident.user or ident.tokens):
            raise self._unauthorized(request, ident.problem or reason)

    def _unauthorized(self, request: web.Request, reason: str) -> web.HTTPUnauthorized:
        headers = CIMultiDict({"WWW-Authenticate": 'Bearer realm="ngserve"'})
        # Programs (curl, scripts) also get a Basic challenge; browsers (which send
        # Sec-Fetch-Mode) do not, or every chunk the viewer fetches would pop up a dialog.
        if "Sec-Fetch-Mode" not in request.headers and self.users:
            headers.add("WWW-Authenticate", 'Basic realm="ngserve", charset="UTF-8"')
        return web.HTTPUnauthorized(text=f"401 {reason}\n", headers=headers)

    # -- /-/login ----------------------------------------------------------------------
    def session_cookie(self, response: web.StreamResponse, user: str) -> None:
        assert self.secret is not None
        response.set_cookie(
            SESSION_COOKIE,
            mint_session(self.secret, user, self.session_ttl),
            max_age=int(self.session_ttl),
            path="/",
            httponly=True,
            secure=self.cookie_secure,
            samesite="Lax",
        )


AUTHORITY = web.AppKey("authority", Authority)


def _verify(password: str, stored: str | None) -> bool:
    """An unknown user (``stored`` None) costs a verification too, so timing does not reveal names."""
    if stored is None:
        verify_password(password, dummy_hash())
        return False
    return verify_password(password, stored)


@web.middleware
async def middleware(request: web.Request, handler) -> web.StreamResponse:
    """Authorize exactly the data segments the handler will serve (see :mod:`server.routing`)."""
    target = request[TARGET]
    if target.kind != "server":
        found = mount_of(request.app[AUTHORITY].mounts, target.segments)
        if found is not None:
            await request.app[AUTHORITY].require(request, found[0], "/".join(found[1]))
    return await handler(request)


# -- the login page ------------------------------------------------------------------------
_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>ngserve: sign in</title>
<style>body{{font:15px system-ui,sans-serif;margin:3em auto;max-width:22em}}label,input{{display:block;width:100%;margin:.3em 0}}
input{{padding:.4em;box-sizing:border-box}}.err{{color:#b00}}</style></head><body>
<h1>Sign in</h1>{error}<form method="post" action="/-/login">
<input type="hidden" name="next" value="{next}">
<label>User <input name="user" autocomplete="username" autofocus required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="submit" value="Sign in"></form></body></html>"""


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would hand our login page to phishers."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(next_url: str, error: str = "", status: int = 200) -> web.Response:
    err = f'<p class="err">{html.escape(error)}</p>' if error else ""
    body = _FORM.format(error=err, next=html.escape(next_url, quote=True))
    return web.Response(status=status, text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


async def login_page(request: web.Request) -> web.Response:
    return _form(_safe_next(request.query.get("next")))


def _same_origin(request: web.Request, public_url: str | None) -> bool:
    """Whether a POST comes from a page of this server (login CSRF: a foreign page must not
    sign a visitor in as the attacker, whose views and short links they would then use).

    Browsers send Sec-Fetch-Site and Origin on every POST (an older one at least a
    Referer), and a page cannot forge them.  A POST with none of them is not from a
    browser (curl, a script); it carries no visitor's cookies to abuse, so it may sign in.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed or privacy-stripped page) included
    # Our own origin: how browsers reach us (public_url), or the Host they asked for,
    # which is right behind a TLS proxy that keeps Host even when public_url is unset.
    if parts.netloc.lower() == request.host.lower():
        return True
    ours = urlsplit(public_url) if public_url else None
    return ours is not None and (parts.scheme, parts.netloc.lower()) == (ours.scheme, ours.netloc.lower())


async def login_submit(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    if not _same_origin(request, authority.public_url):
        raise web.HTTPForbidden(text="403 sign-in refused: the form was posted from another site; use this server's /-/login\n")
    form = await request.post()
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    next_url = _safe_next(str(form.get("next", "")))
    try:
        ok = authority.secret is not None and await authority.check_password(
            user, password, authority.client_address(request)
        )
    except Throttled as exc:
        request[PRINCIPAL] = "login-throttled"
        page = _form(next_url, f"Too many failed sign-ins: try again in {exc.seconds} s.", status=429)
        page.headers["Retry-After"] = str(exc.seconds)
        return page
    if not ok:
        request[PRINCIPAL] = f"login-failed:{user}" if user in authority.users else "login-failed"
        return _form(next_url, "Wrong user name or password.", status=401)
    request[PRINCIPAL] = f"user:{user}"
    resp = web.HTTPSeeOther(location=quote(next_url, safe="/?=&#%:;,+~!$'()*@"))
    authority.session_cookie(resp, user)
    raise resp


async def logout(request: web.Request) -> web.Response:
    resp = web.HTTPSeeOther(location="/-/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def _stop_password_pool(app: web.Application) -> None:
    app[AUTHORITY].password_pool.shutdown(wait=False, cancel_futures=True)


def insecure_cookie_warning(config: ServerConfig) -> str | None:
    """Why ``/-/login`` cannot keep anyone signed in as configured, or None.

    Browsers drop a ``Secure`` cookie set over plain http, except on localhost.
    """
    if not (config.auth.cookie_secure and config.users):
        return None
    if config.public_url:
        parts = urlsplit(config.public_url)
        scheme, host = parts.scheme, parts.hostname or ""
    else:
        scheme, host = "http", config.host
    if scheme == "https" or _is_loopback(host):
        return None
    return (
        f"/-/login over plain http on {host} cannot keep anyone signed in: browsers drop the Secure "
        "session cookie. Serve behind TLS and set public_url = \"https://...\", or set [auth] cookie_secure = false"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup(app: web.Application, config: ServerConfig) -> None:
    """Install the authority, its middleware and the login endpoints on ``app``."""
    app[AUTHORITY] = authority = Authority(config)
    app.on_cleanup.append(_stop_password_pool)
    if not authority.open:  # only when needed: every middleware layer costs every request
        app.middlewares.append(middleware)
    app.router.add_get("/-/login", login_page)
    app.router.add_post("/-/login", login_submit)
    app.router.add_get("/-/logout", logout)

"""``GET /-/authz``: ngserve's verdict on another request, for nginx's ``auth_request``.

In the verdicts deployment (``ngserve nginx-config``), nginx sends local files itself and asks
here first, in a subrequest that carries the client's headers (cookies, Authorization) and the
asked URI in ``X-Original-URI``.  The URI is decoded by the one routing rule
(:func:`server.paths.parse_target`, :func:`server.auth.mount_of`) and judged by the app's
:class:`server.auth.Authority`, exactly as a data request would be.  The answer is only the
asker's own yes (200) or no (401, 403; anything nginx should not serve itself, such as a path
ngserve would refuse, is a 403 too: nginx then hands the request to ngserve, which gives the
real answer).

nginx caches an allow per folder and credentials (its cache key), so a viewer reading
thousands of chunks of one array costs one verdict per folder per ``verdict_ttl``.  An allow
may only be cached when it holds for every request nginx files under the same key:
``X-Accel-Expires: <ttl>`` then, else ``X-Accel-Expires: 0`` (a token scoped to one file or
to a folder below this one; credentials nginx did not put in the key).  Denials are never
cached.

nginx sends its key along (``X-Verdict-Key``), and that judgement is made on the key alone:
the folder and the credentials as nginx extracted them.  nginx and aiohttp do not parse
requests alike (``?%74oken=`` is ``token`` to aiohttp, nothing to nginx's ``$arg_token``; the
same goes for odd cookie syntax), so judging the request itself could cache an allow won by a
credential the key does not hold, for anyone without it.  A decision that depends on the key
alone holds for every request with that key.
"""

from __future__ import annotations

import math
import time
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from .auth import AUTHORITY, PRINCIPAL, SESSION_COOKIE, TOKEN_COOKIE, mount_of
from .paths import parse_target
from .routing import TARGET
from .tokens import TokenError, verify

PATH = "/-/authz"
ORIGINAL_URI = "X-Original-URI"  # the request being judged: path and query, as the client sent them
# nginx's cache key for the verdict: the file's folder (decoded, with any /-/t/<token>/ prefix),
# Authorization, the session and token cookies and ?token=, joined by "|" (ngserve nginx-config).
KEY = "X-Verdict-Key"
KEY_PARTS = 5
TTL = web.AppKey("verdict_ttl", int)
# A name no file can have (split_path refuses NUL): a request for it is allowed exactly when
# every file of its folder is, so judging it asks "does this verdict hold for the whole folder?"
# with the Authority's own rules instead of a second copy of them.
_ANY_FILE = "\x00"


def _answer(status: int, ttl: int = 0) -> web.Response:
    # Always a number: nginx then never falls back on proxy_cache_valid or Cache-Control.
    return web.Response(status=status, headers={"X-Accel-Expires": str(ttl), "Cache-Control": "no-store"})


async def handle_authz(request: web.Request) -> web.Response:
    """200 when the asker may read the file at ``X-Original-URI``, with how long nginx may keep
    that for the folder; 401 or 403 (never kept) otherwise."""
    authority = request.app[AUTHORITY]
    original = request.headers.get(ORIGINAL_URI, "")
    raw_path = original.partition("?")[0]
    target = parse_target(raw_path) if raw_path.startswith("/") else None
    found = None
    if target is not None and target.kind in ("data", "share") and not target.raw.endswith("/"):
        found = mount_of(authority.mounts, target.segments)
    if found is None or not found[1]:
        return _answer(403)  # no file nginx may send (a refused path, a view, a folder): ngserve answers
    mount, inner = found
    try:
        asked = request.clone(rel_url=URL(original, encoded=True))  # identify() reads its ?token=
    except ValueError:
        return _answer(403)
    asked[TARGET] = target  # ... and its /-/t/<token>/ prefix
    try:
        await authority.require(asked, mount, "/".join(inner))
        allowed = True
    except web.HTTPException as exc:  # 401, 403, or 429 for a throttled password: ngserve says which
        allowed, status = False, 401 if exc.status == 401 else 403
    request[PRINCIPAL] = asked.get(PRINCIPAL, "-")
    if not allowed:
        return _answer(status)
    key = request.headers.get(KEY)
    ttl = await _folder_seconds(request, key) if key is not None and request.app[TTL] > 0 else 0
    return _answer(200, ttl)


async def _folder_seconds(request: web.Request, key: str) -> int:
    """How long the credentials in nginx's cache ``key`` alone read every file of the key's
    folder: ``verdict_ttl``, less if a token or session in the key expires sooner; 0 if they
    do not read the whole folder.

    A function of the key only (however its parts were split), so it holds for every request
    nginx answers from this cache entry."""
    authority = request.app[AUTHORITY]
    parts = key.split("|")
    if len(parts) != KEY_PARTS:
        return 0
    folder, authorization, session, token_cookie, arg_token = parts
    # The folder as nginx matched it, decoded: quoted again, parse_target reads it segment by segment.
    target = parse_target(quote(folder, safe="/"))
    if target is None or target.kind not in ("data", "share") or not folder.endswith("/"):
        return 0
    found = mount_of(authority.mounts, target.segments)
    if found is None:
        return 0
    cookies = "; ".join(f"{name}={value}" for name, value in ((SESSION_COOKIE, session), (TOKEN_COOKIE, token_cookie))
                        if value)
    headers = {name: value for name, value in (("Authorization", authorization), ("Cookie", cookies)) if value}
    try:
        keyed = request.clone(rel_url=URL("/?token=" + arg_token if arg_token else "/", encoded=True), headers=headers)
    except ValueError:
        return 0
    keyed[TARGET] = target  # its /-/t/<token>/ prefix
    try:
        ident = await authority.identify(keyed)
    except web.HTTPException:  # a throttled password: no cacheable allow
        return 0
    if not authority.allows(ident, found[0], "/".join([*found[1], _ANY_FILE])):
        return 0
    # Not past a credential's end: an expired token or session must stop reading when it ends.
    expiries = [t.expires for t in ident.tokens]
    if session and authority.secret:
        try:
            expiries.append(verify(authority.secret, session).expires)
        except TokenError:
            pass
    ttl = request.app[TTL]
    return max(0, min(ttl, math.floor(min(expiries) - time.time()))) if expiries else ttl


def add_routes(app: web.Application, ttl: int) -> None:
    app[TTL] = ttl
    app.router.add_get(PATH, handle_authz)

"""Stateless signed tokens: share tokens scoped to a mount path, and login sessions.

A token is ``ngs1.<payload>.<signature>``: base64url JSON claims and an
HMAC-SHA256 of them under the server secret.  Every replica that knows the
secret accepts it without a shared database, and rotating the secret revokes
every token at once.  The characters are URL-safe, so a token travels as
``?token=`` unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

PREFIX = "ngs1"
SHARE = "share"  # read a mount (optionally only under a path prefix)
SESSION = "session"  # a signed-in user, from /-/login


class TokenError(Exception):
    """The token is not valid; the message is safe to show to the client."""


@dataclass(frozen=True)
class Claims:
    kind: str
    expires: int  # unix seconds
    mount: str = ""  # SHARE: the mount name
    path: str = ""  # SHARE: a path prefix inside the mount, "" for all of it
    user: str = ""  # SESSION: the user name

    def covers(self, mount: str, path: str) -> bool:
        """Whether a share token reaches ``path`` (slash-separated) inside ``mount``."""
        if self.kind != SHARE or mount != self.mount:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, f"{PREFIX}.{body}".encode(), hashlib.sha256).digest())


def _encode(secret: bytes, claims: dict) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}.{body}.{_sign(secret, body)}"


def mint(secret: bytes, mount: str, path: str = "", ttl: float = 7 * 86400, *, now: float | None = None) -> str:
    """A share token granting read access to ``path`` (and below) in ``mount`` for ``ttl`` seconds."""
    if ttl <= 0:
        raise ValueError("a token's lifetime must be positive")
    expires = int((time.time() if now is None else now) + ttl)
    return _encode(secret, {"k": SHARE, "m": mount, "p": path.strip("/"), "e": expires})


def mint_session(secret: bytes, user: str, ttl: float, *, now: float | None = None) -> str:
    """A session token for a user who signed in at ``/-/login``."""
    expires = int((time.time() if now is None else now) + ttl)
    return _encode(secret, {"k": SESSION, "u": user, "e": expires})


def verify(secret: bytes, token: str, *, now: float | None = None) -> Claims:
    """The claims of a token this server signed and that has not expired; else :class:`TokenError`."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("malformed token")
    body, sig = parts[1], parts[2]
    if not hmac.compare_digest(sig.encode(), _sign(secret, body).encode()):
        raise TokenError("invalid token (wrong signature: was the server secret rotated?)")
    try:
        raw = json.loads(_unb64(body))
        expires = raw["e"]
        # mint() writes whole seconds since 1970; anything else (a float, 1e999, a time before
        # 1970 that gmtime cannot format) was not written by us, even under our signature.
        if type(expires) is not int or expires < 0:
            raise ValueError("bad expiry")
        claims = Claims(
            kind=str(raw["k"]),
            expires=expires,
            mount=str(raw.get("m", "")),
            path=str(raw.get("p", "")),
            user=str(raw.get("u", "")),
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        raise TokenError("malformed token") from None
    if claims.expires <= (time.time() if now is None else now):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims.expires))
        raise TokenError(f"token expired at {when}: ask for a new link")
    return claims

"""Password hashes for ``[[users]]``: scrypt from the standard library.

Stored as ``scrypt$n=16384,r=8,p=1$<salt>$<hash>`` (base64), so the cost can
rise later without invalidating existing hashes.  scrypt is deliberately slow
(tens of milliseconds), so callers verify in a thread and remember successes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

_N, _R, _P, _LEN = 1 << 14, 8, 1, 32


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_LEN, maxmem=1 << 26)
    enc = lambda b: base64.b64encode(b).decode("ascii").rstrip("=")  # noqa: E731
    return f"scrypt$n={n},r={r},p={p}${enc(salt)}${enc(digest)}"


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, made once: unknown users are verified against it so
    that a failed sign-in takes as long whether or not the name exists."""
    return hash_password(os.urandom(16).hex())


def check_hash_format(stored: str) -> str | None:
    """None if ``stored`` looks like a hash we can verify, else what is wrong with it."""
    try:
        _parse(stored)
    except ValueError as exc:
        return str(exc)
    return None


def _parse(stored: str) -> tuple[dict[str, int], bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != "scrypt":
        raise ValueError("expected 'scrypt$n=...,r=...,p=...$SALT$HASH' as printed by `ngserve user add`")
    try:
        params = {k: int(v) for k, v in (kv.split("=", 1) for kv in parts[1].split(","))}
        dec = lambda s: base64.b64decode(s + "=" * (-len(s) % 4), validate=True)  # noqa: E731
        salt, digest = dec(parts[2]), dec(parts[3])
    except ValueError:
        raise ValueError("the scrypt hash is damaged: create a new one with `ngserve user add`") from None
    if set(params) != {"n", "r", "p"}:
        raise ValueError("the scrypt hash needs parameters n, r and p")
    return params, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash (False when the hash is unusable)."""
    try:
        params, salt, digest = _parse(stored)
        got = hashlib.scrypt(password.encode(), salt=salt, dklen=len(digest), maxmem=1 << 27, **params)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, digest)

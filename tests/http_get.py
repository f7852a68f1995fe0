"""One plain HTTP GET for tests: every status comes back as a value, never as an exception."""

from __future__ import annotations

import urllib.error
import urllib.request


def get(url: str, headers: dict | None = None, method: str = "GET", timeout: float = 120) -> tuple[int, dict, bytes]:
    """(status, headers, body) of ``url``; redirects are followed, as urllib does."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()

"""Turn a raw request path into safe path segments, or refuse it.

This is the only place that decides what a URL may name.  Anything doubtful
becomes ``None``, which the caller answers with 404: a traversal attempt learns
nothing, not even that it was noticed.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

# Zarr v2 keeps its metadata in dotfiles; every other dotfile stays private.
ALLOWED_DOTFILES = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def is_visible(name: str) -> bool:
    return not name.startswith(".") or name in ALLOWED_DOTFILES


def split_path(raw_path: str) -> list[str] | None:
    """Split a still percent-encoded URL path into decoded, checked segments.

    Decoding happens per segment, so an encoded ``%2F`` cannot join segments.
    Empty segments (``a//b``, a trailing ``/``) are dropped; callers that care
    about a trailing slash look at the raw path themselves.
    """
    segments = []
    for raw in raw_path.split("/"):
        if not raw:
            continue
        try:
            seg = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
        if seg in (".", "..") or "/" in seg or "\\" in seg or "\x00" in seg:
            return None
        if not is_visible(seg):
            return None
        segments.append(seg)
    return segments


TOKEN_PATH = "/-/t/"  # /-/t/<token>/<data path>: a share link's capability prefix
OPEN_PATH = "/-/open/"  # /-/open/<data path>: a viewer for the dataset there


def token_path(token: str, raw_path: str) -> str:
    """The share-link form of a (percent-encoded) data path: ``/-/t/<token>/<path>``."""
    return TOKEN_PATH + token + "/" + raw_path.lstrip("/")


VIEWS = ("precomputed", "zarr", "n5", "segment_properties", "mesh")  # /-/<view>/<data path>: the dataset there, presented in that format


class Target(NamedTuple):
    """What a request path names, decoded once.

    ``kind`` is ``"data"`` (``/<path>``), ``"share"`` (``/-/t/<token>/<path>``),
    ``"open"`` (``/-/open/<path>``), ``"view"`` (``/-/<view>/<path>``, also
    behind ``/-/t/<token>``) or ``"server"`` (any other ``/-/`` page, which
    names no data).  ``segments`` are the checked data segments and ``raw``
    their still-encoded form (``/a/b/``, trailing slash kept); the auth
    middleware judges exactly the segments the handler then serves, so a view
    of a path is authorized exactly like the path itself.
    """

    kind: str
    segments: list[str]
    raw: str
    token: str | None = None
    view: str | None = None

    @property
    def prefix(self) -> str:
        """What precedes the data path in URLs for this request (``/-/t/<token>``, ``/-/zarr``), else ''."""
        return (TOKEN_PATH + self.token if self.token else "") + (f"/-/{self.view}" if self.view else "")


SERVER_PAGE = Target("server", [], "")


def parse_target(raw_path: str) -> Target | None:
    """Parse a raw (percent-encoded) request path; None means 404.

    Server pages are recognised by their literal ``/-/`` prefix only: the router
    also matches decoded forms (``/%2D/open/…``), which name a data path whose
    first segment is ``-``, reserved and refused here.
    """
    token = view = None
    if raw_path.startswith(TOKEN_PATH):
        token, sep, rest = raw_path[len(TOKEN_PATH) :].partition("/")
        if not token or not sep:
            return None
        raw_path = "/" + rest
    if raw_path == "/-" or raw_path.startswith("/-/"):
        name, sep, rest = raw_path[3:].partition("/")
        if name in VIEWS and sep:
            kind, view = "view", name
        elif name == "open" and sep and token is None:
            kind = "open"
        else:
            return SERVER_PAGE if token is None else None
        raw = "/" + rest
    else:
        kind, raw = ("share" if token else "data"), raw_path
    segments = split_path(raw)
    if segments is None or (segments and segments[0] == "-"):
        return None
    return Target(kind, segments, raw, token, view)

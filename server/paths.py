"""Turn a raw request path into safe path segments, or refuse it.

This is the only place that decides what a URL may name.  Anything doubtful
becomes ``None``, which the caller answers with 404: a traversal attempt learns
nothing, not even that it was noticed.
"""

from __future__ import annotations

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

"""Where a dataset lives: a local folder or an http(s) URL, read the same way.

Detection only ever asks for a few small metadata files by name, so both
kinds of location answer the same two questions: the bytes of a small file
(or None when it is absent) and the tensorstore kvstore spec for array data.

An http(s) URL may carry a query string (``http://h/x.zarr/?token=…``).  As in
Neuroglancer, it applies to every file below the root: it is appended to each
file read and handed to tensorstore, whose http kvstore appends it to every
request too.  So a protected source is read exactly as a viewer reads it.  The
query is kept out of ``root``, ``str()`` and ``url_of``, which error messages
use, because it usually holds a credential.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Neuroglancer-style prefixes a user may paste in front of a source.
_PREFIXES = ("zarr://", "zarr2://", "zarr3://", "n5://", "precomputed://", "file://")
HTTP_TIMEOUT = 20.0
SMALL_LIMIT = 16 << 20


class SourceError(ValueError):
    """A source cannot be read or is no dataset we know; the message names what was found."""


def strip_scheme(source: str) -> str:
    """``zarr2://http://h/x`` -> ``http://h/x``; a trailing ``|…`` pipeline part is dropped."""
    source = source.split("|", 1)[0]
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if source.startswith(prefix):
                source = source[len(prefix):]
                changed = True
    return source


class Location:
    """A folder-like root: ``Location("/data/x.zarr")`` or ``Location("http://h/x.zarr")``."""

    def __init__(self, source: str | os.PathLike) -> None:
        text = strip_scheme(os.fspath(source))
        self.is_http = text.startswith(("http://", "https://"))
        self.query = ""  # http only: appended to every file URL, without the "?"
        if text.startswith("memory://"):  # an array this process holds (volumes.memory): nothing to resolve
            self.root = text.rstrip("/")
        elif self.is_http:
            text, _, self.query = text.split("#", 1)[0].partition("?")
            self.root = text.rstrip("/")
        else:
            self.root = str(Path(text).expanduser().resolve())

    def __repr__(self) -> str:
        return f"Location({self.root!r})"

    def __str__(self) -> str:
        return self.root

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def child(self, rel: str) -> "Location":
        rel = rel.strip("/")
        return self if not rel else Location(self.root + "/" + rel + self.query_suffix)

    @property
    def query_suffix(self) -> str:
        """``"?<query>"``, or ``""`` when the location has no query string."""
        return "?" + self.query if self.query else ""

    def url_of(self, rel: str = "") -> str:
        """The URL (or path) of a file below this root."""
        rel = rel.strip("/")
        if self.is_http:
            return self.root + "/" + urllib.parse.quote(rel) if rel else self.root
        return os.path.join(self.root, rel) if rel else self.root

    def read(self, rel: str) -> bytes | None:
        """The bytes of the small file ``rel``, or None when it does not exist."""
        if not self.is_http:
            path = Path(self.root, rel)
            try:
                if not path.is_file():
                    return None
                if path.stat().st_size > SMALL_LIMIT:
                    raise SourceError(f"{path} is too large to be metadata")
                return path.read_bytes()
            except OSError as exc:
                raise SourceError(f"cannot read {path}: {exc.strerror}") from None
        url = self.url_of(rel)  # for messages: without the query
        try:
            with urllib.request.urlopen(url + self.query_suffix, timeout=HTTP_TIMEOUT) as resp:
                return resp.read(SMALL_LIMIT)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            if exc.code in (401, 403):
                raise SourceError(f"{url}: access denied (HTTP {exc.code})") from None
            raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot reach {url}: {reason}") from None

    def read_json(self, rel: str) -> dict | None:
        """The JSON object in ``rel``, None when absent; a broken file is a SourceError."""
        data = self.read(rel)
        if data is None:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested past json's limit, no metadata is
            raise SourceError(f"{self.url_of(rel)} is not valid JSON") from None
        if not isinstance(obj, dict):
            raise SourceError(f"{self.url_of(rel)} holds JSON but not an object")
        return obj

    def exists(self) -> bool:
        """Whether the root is there at all (a local folder; http roots are assumed)."""
        return self.is_http or Path(self.root).exists()

    def local_names(self) -> list[str]:
        """A few names inside a local root, for error messages ("…" last when there are more); empty for URLs."""
        if self.is_http or not Path(self.root).is_dir():
            return []
        names = sorted(os.listdir(self.root))
        return names[:8] + (["…"] if len(names) > 8 else [])

    def kvstore(self, rel: str = "") -> dict:
        """The tensorstore kvstore spec of the folder ``rel`` below this root."""
        rel = rel.strip("/")
        if self.is_http:
            base = self.root + "/" + self.query_suffix  # tensorstore appends the query to each request
            return {"driver": "http", "base_url": base, "path": (rel + "/") if rel else ""}
        return {"driver": "file", "path": self.url_of(rel) + "/"}

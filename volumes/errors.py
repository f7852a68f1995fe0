"""Exceptions as the one line a user reads, and in full for ``--verbose``."""

from __future__ import annotations

import os
import re

from .location import Location, SourceError

# tensorstore appends its whole spec (and C++ source locations) to a message, often 700
# characters of escaped JSON: useful to a developer, noise in the line a user reads.
_TS_PAYLOAD = re.compile(r"\s*\[(?:tensorstore_spec|source locations)='(?:[^'\\]|\\.)*'\]")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message without tensorstore's spec dumps, or its type name when it has none."""
    text = _TS_PAYLOAD.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(" [tensorstore_spec=", 1)[0].split(" [source locations=", 1)[0]


def detail(exc: BaseException) -> str:
    """Everything ``exc`` and the exceptions that caused it say, spec dumps included (for ``--verbose``)."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    return "\n  caused by ".join(parts)


def naming(source: str | os.PathLike, exc: BaseException) -> SourceError:
    """``exc`` as a SourceError whose line starts with ``source`` (once), caused by ``exc``."""
    line = first_line(exc)
    root = str(Location(source))  # never the query string: it may hold a token
    named = line.startswith((root, os.fspath(source).split("?")[0].rstrip("/")))
    error = SourceError(line if named else f"{root}: {line}")
    error.__cause__ = exc
    return error

"""HTTP Range header parsing (RFC 9110 section 14) for a single byte range.

Neuroglancer, tensorstore and cloud-volume only ever ask for one range, so a
multi-range request is answered with the whole file, as the RFC allows.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(Exception):
    """The range is well formed but selects no byte of the file (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive ``(first, last)`` byte positions the header selects.

    ``None`` means "send the whole file": no header, a malformed one, or a
    multi-range request.  Raises :class:`Unsatisfiable` for a range that lies
    wholly past the end of the file, or a zero-length suffix.
    """
    if not header:
        return None
    m = _RANGE.match(header)
    if not m:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix form: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # syntactically invalid: ignore, per the RFC
    if first >= size:
        raise Unsatisfiable
    return first, min(last, size - 1)

"""HTTP Range header parsing (RFC 9110 section 14) for a single byte range.

Neuroglancer, tensorstore and cloud-volume only ever ask for one range, so a
multi-range request is answered with the whole file, as the RFC allows.
"""

from __future__ import annotations

import re

# re.ASCII: RFC 9110's DIGIT is 0-9 only; Python's \d and \s would also take other scripts' digits and spaces.
_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE | re.ASCII)


class Unsatisfiable(Exception):
    """The range is well formed but selects no byte of the file (answer 416)."""


def _value(digits: str, size: int) -> int:
    """The number ``digits`` spells, capped at ``size``: every larger number selects the same bytes.

    The RFC bounds no number's length, but int() refuses more than 4300 digits (and
    is slow well before): beyond ``size``'s own length, the value is known to be larger.
    """
    digits = digits.lstrip("0") or "0"
    return size if len(digits) > len(str(size)) else min(int(digits), size)


def _less(a: str, b: str) -> bool:
    """Whether the digit string ``a`` is a smaller number than ``b``, at any length."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


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
        n = _value(last_s, size)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return size - n, size - 1
    if last_s and _less(last_s, first_s):
        return None  # syntactically invalid: ignore, per the RFC
    first = _value(first_s, size)
    if first >= size:
        raise Unsatisfiable
    last = _value(last_s, size) if last_s else size - 1
    return first, min(last, size - 1)

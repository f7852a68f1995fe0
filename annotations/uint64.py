"""Exact uint64 ids from whatever a table column holds: integers, text, or Python ints of any size.

A float64 holds integers exactly only up to 2**53 and an int64 only below 2**63, so ids never pass
through either on the way in: text is parsed by Arrow straight to uint64, Python ints go to uint64
without a float in between, and a float column is accepted only where it is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import AnnotationInputError, plain, row_of
from .ragged import offsets_from_lengths

FLOAT_EXACT = 2.0**53  # above this a float64 may have lost an id's last digits
UINT64_MAX_TEXT = str(2**64 - 1)


def to_uint64(values, what: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Values (numpy, pandas or Arrow) as uint64, refusing negatives, fractions, NaN and anything ≥ 2**64.

    ``what`` names the column in messages; ``rows`` maps each value to its 0-based table row
    (default: its position).
    """

    def row(mask: np.ndarray) -> int:
        return row_of(mask) if rows is None else int(rows[mask.argmax()]) + 1

    text = as_text(values)
    if text is not None:
        return _from_text(text, what, row)
    values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if values.dtype == object:
        if pd.api.types.infer_dtype(values, skipna=False) == "integer":
            try:  # Python ints of any size, converted in C without a float in between
                return pa.array(values, type=pa.uint64()).to_numpy()
            except (OverflowError, pa.ArrowInvalid):
                pass  # some int is out of range: the text path finds and names it
        # Mixed cells (ints, floats, text, None): their text is exact, and names the culprit.
        missing = pd.isna(values)
        return _from_text(pa.array([None if m else str(v) for v, m in zip(values, missing)], pa.string()), what, row)
    if values.dtype.kind in "ub":
        return values.astype(np.uint64)
    if values.dtype.kind == "i":
        bad = values < 0
        if bad.any():
            raise AnnotationInputError(f"{what}, row {row(bad)}: {plain(values[bad][0])} does not fit uint64")
        return values.astype(np.uint64)
    if values.dtype.kind != "f":
        raise AnnotationInputError(f"{what}: {values.dtype} values are not uint64 integers")
    bad, lost = _float_problems(values)
    if (bad | lost).any():
        i = int((bad | lost).argmax())
        where = f"{what}, row {row(bad | lost)}"
        if np.isnan(values[i]):
            raise AnnotationInputError(f"{where} is empty; fill it or drop the row")
        raise AnnotationInputError(f"{where}: " + (_LOST if lost[i] else f"{plain(values[i])} does not fit uint64"))
    return values.astype(np.uint64)


_LOST = (
    "ids above 2**53 were read as floating point and lost digits; "
    "store them as integers (plain digits in text, or uint64 in Parquet)"
)


def _float_problems(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of floats that are no uint64 at all, and of those too big for a float to hold exactly."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0) | (values >= 2.0**64)
    return bad, ~bad & (values > FLOAT_EXACT)


def as_text(values) -> pa.Array | None:
    """The values as one Arrow string array if they are text, else None."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.ArrowDtype):
        values = pa.array(values)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            return None
        text = values
    elif isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, np.dtype)
        and (dtype.kind in "US" or (dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")))
    ):
        text = pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)
    else:
        return None
    if isinstance(text, pa.ChunkedArray):  # list_parent_indices and friends count per chunk
        text = text.combine_chunks()
    return text.cast(pa.string())


def _from_text(text: pa.Array, what: str, row: Callable[[np.ndarray], int]) -> np.ndarray:
    """Decimal text as uint64, exactly; anything else gets one line naming its row."""
    text = pc.utf8_trim_whitespace(text)
    if text.null_count == 0:
        try:
            return pc.cast(text, pa.uint64()).to_numpy()
        except pa.ArrowInvalid:
            pass  # not all plain integers below 2**64: sort them out below
    n = len(text)
    digits = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]+$"), False).to_numpy(zero_copy_only=False)
    significant = pc.utf8_ltrim(text, characters="0")  # leading zeros add nothing
    length = pc.fill_null(pc.utf8_length(significant), 0).to_numpy(zero_copy_only=False)
    beyond = pc.fill_null(pc.greater(significant, UINT64_MAX_TEXT), False).to_numpy(zero_copy_only=False)
    too_big = digits & ((length > 20) | ((length == 20) & beyond))
    out = np.zeros(n, dtype=np.uint64)
    whole = digits & ~too_big
    out[whole] = pc.cast(text.filter(pa.array(whole)), pa.uint64()).to_numpy()

    # The rest ("5.0", "1e3", "-1", "2.5", "x", empty cells) are read as numbers and must be exact.
    others = np.flatnonzero(~digits)
    numbers = pd.to_numeric(
        pd.Series(text.take(pa.array(others)).to_numpy(zero_copy_only=False), dtype=object), errors="coerce"
    ).to_numpy(dtype=np.float64, na_value=np.nan)
    bad, lost = _float_problems(numbers)
    not_number, lost_digits, no_fit = (np.zeros(n, dtype=bool) for _ in range(3))
    not_number[others[np.isnan(numbers)]] = True
    lost_digits[others[lost]] = True
    no_fit[others[bad & ~np.isnan(numbers)]] = True
    no_fit |= too_big
    problem = not_number | lost_digits | no_fit
    if problem.any():
        i = int(problem.argmax())
        cell = text[i].as_py()
        where = f"{what}, row {row(problem)}"
        if not_number[i]:
            raise AnnotationInputError(f"{where}: {cell!r} is not a uint64 integer" if cell else f"{where} is empty; fill it or drop the row")
        raise AnnotationInputError(f"{where}: " + (_LOST if lost_digits[i] else f"{cell} does not fit uint64"))
    out[others] = numbers.astype(np.uint64)
    return out


def uint64_lists(column: pd.Series, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A column of segment ids as ragged uint64 (values, offsets): one id per row, a list per row
    (Parquet, JSON), or text such as ``"1;2"``, ``"1 2"`` or ``"[1, 2]"`` per row (CSV).  Empty
    cells relate to nothing."""
    n = len(column)
    text = as_text(column)
    if text is None and column.dtype != object:  # numbers, one per row, NaN where there is none
        present = column.notna().to_numpy()
        values = to_uint64(column.to_numpy()[present], what, np.flatnonzero(present))
        return values, offsets_from_lengths(present.astype(np.int64))
    if text is None:  # Python lists, arrays, ids or None, cell by cell
        cells = [[] if _is_missing(c) else list(c) if isinstance(c, (list, tuple, np.ndarray)) else [c] for c in column]
        owners = np.repeat(np.arange(n), [len(c) for c in cells])
        flat = np.empty(len(owners), dtype=object)
        flat[:] = [v for c in cells for v in c]
        return to_uint64(flat, what, owners), offsets_from_lengths(np.bincount(owners, minlength=n))
    text = pc.utf8_trim_whitespace(text)
    single = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:  # the common case, one plain id per cell: no splitting
        ids = pc.cast(single, pa.uint64())
        return ids.drop_null().to_numpy(), offsets_from_lengths(pc.is_valid(ids).to_numpy(zero_copy_only=False).astype(np.int64))
    except pa.ArrowInvalid:
        pass
    lists = pc.split_pattern_regex(pc.utf8_trim(pc.replace_substring_regex(text, r"[\[\]]", " "), " "), r"[,;\s]+")
    parts = pc.list_flatten(lists)
    owners = pc.list_parent_indices(lists).to_numpy()
    keep = pc.not_equal(parts, "").to_numpy(zero_copy_only=False)
    owners = owners[keep]
    values = to_uint64(parts.filter(pa.array(keep)), what, owners)
    return values, offsets_from_lengths(np.bincount(owners, minlength=n))


def _is_missing(cell) -> bool:
    return cell is None or (isinstance(cell, float) and np.isnan(cell))

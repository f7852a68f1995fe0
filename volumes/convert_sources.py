"""Inputs of ``convert``: any dataset ``volumes`` reads, or a numpy/dask array, as ``c, z, y, x`` boxes.

A :class:`Source` reads one box at a time through the dataset's tensorstore, which reads only
the chunks the box touches: a region of zarr/N5/precomputed chunks, HDF5 hyperslabs, MRC/NIfTI
byte runs, TIFF tiles.  A TIFF slice without tiles is one chunk, read whole for each box that
touches it (once per band of tiles when the plane does not fit in one tile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .location import SourceError
from .model import Axis

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (lo, hi) per z, y, x


class ConvertError(ValueError):
    """A problem with the inputs or options of a conversion: one line for the user."""


@dataclass
class Source:
    """One input as a ``(c, z, y, x)`` array read box by box."""

    name: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    read: Callable[[Box], np.ndarray] = field(repr=False)  # ((z0, z1), (y0, y1), (x0, x1)) -> (c, z, y, x)
    voxel_m: list[float | None] = field(default_factory=lambda: [None, None, None])  # z, y, x in metres
    offset: list[float] | None = None  # voxel-0 corner in voxels, z, y, x; None for an array (no placement)
    channel_names: list[str] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    shift: list[int] = field(default_factory=lambda: [0, 0, 0])  # where a --ranges crop starts, z, y, x


def parse_ranges(text: str, shape: Sequence[int]) -> list[tuple[int, int]]:
    """``"x0:x1,y0:y1,z0:z1"`` (scroll_to_ome's order; a blank side or item is the whole axis)
    -> (lo, hi) per z, y, x within ``shape`` (z, y, x)."""
    items = [t.strip() for t in text.split(",")]
    if len(items) != 3:
        raise ConvertError(f"--ranges {text!r}: give x0:x1,y0:y1,z0:z1")
    out = []
    for item, size, axis in zip(reversed(items), shape, "zyx"):
        lo_text, _, hi_text = item.partition(":")
        try:
            lo, hi = int(lo_text or 0), int(hi_text or size) if item else size
        except ValueError:
            raise ConvertError(f"--ranges {text!r}: {axis} range {item!r} is not LO:HI") from None
        if not 0 <= lo < hi <= size:
            raise ConvertError(f"--ranges {text!r}: {axis} range {lo}:{hi} is outside 0:{size}")
        out.append((lo, hi))
    return out


def crop(src: Source, ranges: list[tuple[int, int]]) -> Source:
    """The part of ``src`` within ``ranges`` (z, y, x); it keeps its place (``shift``)."""
    def read(box: Box) -> np.ndarray:
        return src.read(tuple((lo + a, lo + b) for (lo, _), (a, b) in zip(ranges, box)))

    (z0, z1), (y0, y1), (x0, x1) = ranges

    return Source(src.name, (src.shape[0], z1 - z0, y1 - y0, x1 - x0), src.dtype, read, src.voxel_m, src.offset,
                  src.channel_names, src.windows, [s + lo for s, (lo, _) in zip(src.shift, ranges)])


AXIS_LETTERS = "tczyx"


def _axis_roles(axes: str, rank: int, label: str) -> tuple[list[int], list[int], list[int]]:
    """``--axes`` (e.g. ``xyz``, ``czyx``, ``tzyx``: one letter per dimension, in storage order) ->
    indices of the space axes (z, y, x order), the channel axis, and the others (t)."""
    letters = axes.strip().lower()
    if len(letters) != rank or set(letters) - set(AXIS_LETTERS) or len(set(letters)) != rank:
        raise ConvertError(f"{label}: --axes {axes!r} must name each of its {rank} dimensions once, with letters "
                           f"from {AXIS_LETTERS} (e.g. {'zyx'[-rank:] if rank <= 3 else 'czyx'})")
    if "y" not in letters or "x" not in letters:
        raise ConvertError(f"--axes {axes!r}: y and x are needed")
    space = [letters.index(a) for a in "zyx" if a in letters]
    return space, [letters.index("c")] if "c" in letters else [], [letters.index("t")] if "t" in letters else []


def open_source(item: Any, axes: str | None = None) -> Source:
    """A :class:`Source` for a path/URL (``file.h5:/path`` too), a numpy array or a dask array.
    ``axes`` names the input's dimensions in storage order (see :func:`_axis_roles`), when its
    reader cannot tell or tells wrong (e.g. an array stored x, y, z)."""
    if isinstance(item, (str, os.PathLike)):
        from . import open_dataset

        return _from_dataset(open_dataset(item), str(item), axes=axes)
    if hasattr(item, "shape") and hasattr(item, "dtype"):
        return _from_array(item, axes)
    raise ConvertError(f"cannot convert a {type(item).__name__}: give a path, a numpy array or a dask array")


def _from_array(arr: Any, axes: str | None = None) -> Source:
    """numpy or dask: ``(z, y, x)``, ``(y, x)`` or ``(c, z, y, x)``, or any order ``axes`` names."""
    if axes is not None:
        space, channel, other = _axis_roles(axes, arr.ndim, "array")
        if any(arr.shape[i] != 1 for i in other):
            raise ConvertError(f"array: --axes {axes!r}: the t axis has {arr.shape[other[0]]} points; give one")
        arr = arr[tuple(0 if i in other else slice(None) for i in range(arr.ndim))]
        kept = [i for i in range(len(axes)) if i not in other]
        arr = arr.transpose([kept.index(i) for i in channel + space])
        if not channel:
            arr = arr[None]
    if arr.ndim not in (2, 3, 4):
        raise ConvertError(f"an array input needs 2 to 4 dimensions ((c,) z, y, x), not shape {tuple(arr.shape)}")
    view = arr
    while view.ndim < 4:
        view = view[None]

    def read(box: Box) -> np.ndarray:
        part = view[(slice(None), *(slice(lo, hi) for lo, hi in box))]
        return np.asarray(part.compute() if hasattr(part, "compute") else part)

    return Source("array", tuple(int(s) for s in view.shape), np.dtype(arr.dtype), read)


def _from_dataset(ds, label: str, level: int = 0, axes: str | None = None, at: dict[int, int] | None = None) -> Source:
    """The dataset's level ``level`` with its axes put in ``c, z, y, x`` order; a time axis must have
    one point, or be fixed at one by ``at`` (dimension -> index).  ``axes`` overrides the reader's
    axis names (one letter per dimension of the array)."""
    at = at or {}
    store = ds.open_level(level)
    if axes is not None:
        space, channel, other = _axis_roles(axes, len(store.shape), label)
        shape = list(store.shape)
        # The reader's sizes per stored dimension still hold, whatever the dimension is called.
        axes_info = [Axis(letter, ds.axes[i].unit, ds.axes[i].scale) if i < len(ds.axes) else Axis(letter)
                     for i, letter in enumerate(axes)]
    else:
        axes_info, shape = ds.axes, ds.shape
        space = [i for i, a in enumerate(axes_info) if a.type == "space"]
        channel = [i for i, a in enumerate(axes_info) if a.type == "channel"]
        other = [i for i in range(len(axes_info)) if i not in space and i not in channel]
    axes = axes_info
    if len(space) not in (2, 3):
        raise ConvertError(f"{label}: {len(space)} space axes; convert needs 2-D or 3-D data")
    if len(channel) > 1 or any(shape[i] != 1 for i in other if i not in at):
        names = ", ".join(f"{axes[i].name}={shape[i]}" for i in other + channel[1:])
        raise ConvertError(f"{label}: axes {names} cannot be converted; give one time point or channel axis")
    zi = space[0] if len(space) == 3 else None
    if len(store.shape) > len(axes):  # precomputed's trailing channel dimension
        extra = len(store.shape) - len(axes)
        channel = channel or [len(axes)]
        if extra != 1 or len(channel) != 1:
            raise ConvertError(f"{label}: unexpected store rank {len(store.shape)}")
    import tensorstore as ts

    full = list(store.shape)
    dtype = np.dtype(str(store.dtype.numpy_dtype))
    order = channel + space  # transpose to (c?, [z,] y, x); size-1 other axes are indexed away
    z_len = full[zi] if zi is not None else 1
    c_len = full[channel[0]] if channel else 1
    y_len, x_len = full[space[-2]], full[space[-1]]

    def read(box: Box) -> np.ndarray:
        index = [at.get(i, 0) for i in range(len(full))]
        for i in order:
            index[i] = slice(None)
        if zi is not None:
            index[zi] = slice(*box[0])
        index[space[-2]], index[space[-1]] = slice(*box[1]), slice(*box[2])
        region = store[tuple(index)]
        kept = [i for i in range(len(full)) if i in order]  # axes left after integer indexing, in store order
        # Read into an array numpy allocates: numpy asks the kernel for huge pages for large arrays,
        # so filling a tile costs a fault per 2 MiB, not per 4 KiB as tensorstore's own result does.
        data = np.empty((c_len, *(hi - lo for lo, hi in box)), dtype)
        view = data if channel else data[0]
        view = view if zi is not None else view[:, 0] if channel else view[0]
        target = np.transpose(view, [order.index(i) for i in kept])  # the same memory, in store order
        try:
            ts.array(target, copy=False, write=True).write(region).result()
        except ValueError as exc:  # tensorstore wraps a reader's SourceError (unreadable slice) in ValueError
            from .errors import first_line

            raise SourceError(first_line(exc)) from None
        return data

    def metres(i: int | None) -> float | None:
        if i is None:
            return None
        a = axes[i]
        return a.scale if a.unit == "m" else None

    spatial3 = [zi, space[-2], space[-1]]
    return Source(
        name=ds.name,
        shape=(c_len, z_len, y_len, x_len),
        dtype=np.dtype(str(store.dtype.numpy_dtype)),
        read=read,
        voxel_m=[metres(i) for i in spatial3],
        offset=[float(ds.offset[i]) if i is not None and i < len(ds.offset) else 0.0 for i in spatial3],
        channel_names=list(ds.extras.get("channel_names") or []),
        windows=list(ds.windows),
    )


def stack_channels(sources: Sequence[Source], label: str = "inputs") -> Source:
    """Several inputs of one z, y, x shape as the channels of one source (in the given order)."""
    if len(sources) == 1:
        return sources[0]
    first = sources[0]
    for s in sources[1:]:
        if s.shape[1:] != first.shape[1:]:
            raise ConvertError(f"{s.name}: shape (z, y, x) {s.shape[1:]} differs from {first.name}'s {first.shape[1:]}; "
                               f"channels must match")
    dtype = np.result_type(*[s.dtype for s in sources])

    def read(box: Box) -> np.ndarray:
        return np.concatenate([s.read(box).astype(dtype, copy=False) for s in sources], axis=0)

    names = []
    for s in sources:
        names += s.channel_names or ([s.name] if s.shape[0] == 1 else [f"{s.name} {i}" for i in range(s.shape[0])])
    return Source(label, (sum(s.shape[0] for s in sources), *first.shape[1:]), np.dtype(dtype), read,
                  first.voxel_m, first.offset, names, [w for s in sources for w in s.windows])

"""Arrays held by this process (numpy, dask) as a :class:`Dataset`, so views present them as they present files.

``ngstate.show(array)`` registers the array here under a key; the notebook's server mounts the
registered arrays (``server.storage.MemoryStorage``) and its precomputed view opens
``memory://<key>`` through :func:`volumes.open_dataset`, whose level is a ``ts.virtual_chunked``
store reading the array chunk by chunk (as the TIFF/MRC readers do).  Axes follow ``convert``'s
array inputs: ``(y, x)``, ``(z, y, x)`` or ``(c, z, y, x)``, the channel axis layer-local.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from .location import Location, SourceError
from .model import Axis, Dataset
from .units import ome_unit, scale_by
from .virtual import file_dataset, virtual_store

PREFIX = "memory://"
SPACE_CHUNK = {2: 512, 3: 64}  # voxels per chunk side: ~256 KiB-2 MiB chunks for 1-4 byte types


@dataclass
class _Held:
    array: Any
    name: str
    voxel_size: list[float]  # per spatial axis, array order, in ``unit``
    unit: str  # an OME unit name, or "" for unitless


_ARRAYS: dict[str, _Held] = {}
_LOCK = threading.Lock()


def register(
    array: Any, *, name: str = "array", voxel_size: Sequence[float] | None = None, units: str | None = None
) -> str:
    """Hold ``array`` (numpy or dask) for views to read; its key (a URL-safe path segment).

    ``voxel_size`` is per spatial axis in array order (``z, y, x``) in ``units`` (an OME unit name
    such as ``nanometer``; ``micrometer`` when only a voxel size is given); with neither, axes are unitless.
    """
    if not (hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "ndim")):
        raise ValueError(f"cannot show a {type(array).__name__}: give a path, a URL, or a numpy or dask array")
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"an array source needs 2 to 4 dimensions ((c,) z, y, x), not shape {tuple(array.shape)}")
    spatial = min(array.ndim, 3)
    if voxel_size is None:
        sizes, unit = [1.0] * spatial, units or ""
    else:
        sizes = [float(v) for v in voxel_size]
        if len(sizes) != spatial or not all(v > 0 for v in sizes):
            raise ValueError(f"voxel_size needs {spatial} positive numbers (array order), not {list(voxel_size)}")
        unit = units or "micrometer"
    if unit:
        try:
            ome_unit(unit)
        except ValueError:
            raise ValueError(f"unknown units {unit!r}: use an OME unit name such as nanometer or micrometer") from None
    key = secrets.token_urlsafe(9)
    with _LOCK:
        _ARRAYS[key] = _Held(array, name, sizes, unit)
    return key


def unregister(key: str) -> None:
    with _LOCK:
        _ARRAYS.pop(key, None)


def registered() -> list[str]:
    with _LOCK:
        return sorted(_ARRAYS)


def is_memory(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def open_memory(source: str) -> Dataset:
    """The dataset of the array registered as ``memory://<key>``."""
    key = source[len(PREFIX):].strip("/").split("/", 1)[0]
    with _LOCK:
        held = _ARRAYS.get(key)
    if held is None:
        raise SourceError(f"{source}: no array is held under this key (its viewer was closed)")
    import numpy as np

    arr = held.array
    shape = [int(s) for s in arr.shape]
    names = ["y", "x"] if arr.ndim == 2 else ["z", "y", "x"]
    si, factor = ome_unit(held.unit) if held.unit else ("", 1.0)
    axes = [Axis(n, si, scale_by(v, factor) if si else v, "space") for n, v in zip(names, held.voxel_size)]
    side = SPACE_CHUNK[len(names)]
    chunks = [min(s, side) for s in shape[-len(names):]]
    if arr.ndim == 4:
        axes.insert(0, Axis("c'", "", 1.0, "channel"))
        chunks.insert(0, shape[0])
    dtype = np.dtype(arr.dtype)

    def opener():
        def read(index: tuple[slice, ...]):
            part = arr[index]
            return np.asarray(part.compute() if hasattr(part, "compute") else part, dtype=dtype)

        return virtual_store(shape, dtype, chunks, read)

    loc = Location(f"{PREFIX}{key}/{held.name.replace('/', '_') or 'array'}")  # its name names the layer
    ds = file_dataset(loc, "array", "an array in memory", axes, shape, dtype, chunks, opener)
    ds.extras["array_name"] = held.name
    return ds

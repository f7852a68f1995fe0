"""Datasets in formats tensorstore has no driver for: one level, read by the format's library.

Each file reader (:mod:`.tiff`, :mod:`.mrc`, :mod:`.hdf5`, :mod:`.nifti`) says
what the array is (shape, dtype, chunks that follow the file's own layout) and
how to read one chunk; this module turns that into the :class:`Dataset` every
other layer uses, whose level opens as a ``ts.virtual_chunked`` tensorstore.
So contrast statistics, translated views and conversion read these files
exactly as they read zarr, one chunk at a time.

Axes come in the array's index order with x last, as OME-Zarr datasets present
them (``[t,] [c',] z, y, x``); a channel axis is layer-local (``c'``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Any, Callable, Iterator

from .location import Location, SourceError
from .model import Axis, Dataset, Level

CHUNK_BYTES = 4 << 20  # the size aimed at when a format leaves the chunking to us


def not_native_message(ds: Dataset) -> str:
    """The one line ``ngserve link`` and ``inspect`` give for a dataset Neuroglancer cannot read."""
    title = ds.extras.get("title") or f"a {ds.format} file"
    return (f"{ds.location} is {title}: Neuroglancer cannot read it directly; serve it with ngserve "
            f"and open it via /-/open/<its path> (shown through ngserve's translated view)")


def slab_chunks(shape: list[int], itemsize: int, target: int = CHUNK_BYTES) -> list[int]:
    """Chunks for a C-ordered array stored contiguously (MRC, unchunked HDF5, NIfTI): whole
    trailing dimensions while they fit in ``target`` bytes, then as many of the next as fit, 1 outside.
    Each chunk is then one contiguous run of bytes per outer index."""
    chunks = [1] * len(shape)
    inner = itemsize
    for i in reversed(range(len(shape))):
        if inner * shape[i] <= target:
            chunks[i] = max(1, shape[i])
            inner *= max(1, shape[i])
        else:
            chunks[i] = max(1, target // inner)
            break
    return chunks


def virtual_store(shape: list[int], dtype: Any, chunks: list[int], read: Callable[[tuple[slice, ...]], Any]):
    """A read-only tensorstore of ``shape`` whose chunks come from ``read(index)``.

    ``read`` gets the chunk's region as a tuple of slices (in the dataset's axis
    order) and returns an array of that region's shape.  Tensorstore calls it on
    its own threads, several at once, so it must be thread-safe.
    """
    import numpy as np
    import tensorstore as ts

    def read_function(domain, array, _params):
        array[...] = np.asarray(read(domain.index_exp)).reshape(array.shape)

    return ts.virtual_chunked(
        read_function,
        dtype=ts.dtype(np.dtype(dtype).name),
        domain=ts.IndexDomain(shape=list(shape)),
        chunk_layout=ts.ChunkLayout(read_chunk_shape=list(chunks), grid_origin=[0] * len(shape)),
    )


def file_dataset(
    loc: Location,
    fmt: str,
    title: str,
    axes: list[Axis],
    shape: list[int],
    dtype: Any,
    chunks: list[int],
    opener: Callable[[], Any],
    *,
    offset: list[float] | None = None,
    encoding: str | None = None,
    version: str | None = None,
) -> Dataset:
    """The single-level :class:`Dataset` of a file format Neuroglancer cannot read (``scheme`` None).

    ``opener()`` returns the level's tensorstore (see :func:`virtual_store`); ``title`` says what
    the source is in messages (``"a TIFF stack"``).
    """
    import numpy as np

    if len(axes) != len(shape) or len(chunks) != len(shape):
        raise SourceError(f"{loc}: {len(axes)} axes for an array of shape {shape}")  # a reader's bug, said plainly
    offset = list(offset) if offset is not None else [0.0] * len(shape)
    level = Level(path="", shape=[int(s) for s in shape], chunks=[int(c) for c in chunks],
                  dtype=np.dtype(dtype).name, factors=[1.0] * len(shape), encoding=encoding, opener=opener)
    ds = Dataset(
        location=loc,
        format=fmt,
        scheme=None,
        axes=axes,
        offset=offset,
        levels=[level],
        native_axes=[Axis(a.name, a.unit, a.scale, a.type) for a in axes],
        native_offset=list(offset),
        version=version,
    )
    ds.extras["title"] = title
    ds.notes.append(not_native_message(ds))
    return ds


class _QuietFilter(logging.Filter):
    """Drops a library's log records on threads inside :func:`quiet_logs`."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_FILTERS: dict[str, _QuietFilter] = {}
_FILTERS_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_logs(name: str) -> Iterator[None]:
    """Silence logger ``name`` on this thread while a library parses a file.

    tifffile and nibabel log the problems of a broken file before they raise; our
    SourceError says what matters in one line, and the CLI must print only that.
    Other threads (a server reading good files) keep their logs.
    """
    with _FILTERS_LOCK:
        quiet = _FILTERS.get(name)
        if quiet is None:
            quiet = _FILTERS[name] = _QuietFilter()
            logging.getLogger(name).addFilter(quiet)
    quiet.local.depth = getattr(quiet.local, "depth", 0) + 1
    try:
        yield
    finally:
        quiet.local.depth -= 1


def header_float(value) -> float:
    """A header number as the writer meant it: a float32 1.1 is 1.1, not 1.100000023841858."""
    import numpy as np

    value = np.asarray(value)  # header fields come as scalars or 0-d arrays
    return float(str(value[()])) if value.dtype == np.float32 else float(value)  # str: shortest float32 repr


def space_axis(name: str, size_m: float | None) -> Axis:
    """A spatial axis with its voxel size in metres, or unitless when the file does not say."""
    return Axis(name, "m", size_m, "space") if size_m else Axis(name, "", 1.0, "space")

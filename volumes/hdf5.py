"""HDF5 datasets (h5py), named as ``file.h5:/path/in/file``.

A file with a single dataset may be named alone.  Chunks are the dataset's own
HDF5 chunks (or slabs of whole rows when it is contiguous), so a read touches
only those.  Voxel sizes come from the attribute conventions in use, all in the
array's axis order (z, y, x):

* ``element_size_um``: µm (Fiji's HDF5 plugin, ilastik/vigra, PlantSeg, FIB-SEM tools);
* ``resolution`` with ``offset``: nm (CREMI and the connectomics tools that follow it);
* ``axistags``: vigra/ilastik axis keys (t, c, z, y, x), which name the axes.

BigDataViewer keeps voxel sizes in its XML, not in the HDF5 file; its datasets
open unitless.
"""

from __future__ import annotations

import json
import re
import threading

from .errors import first_line
from .location import Location, SourceError
from .model import Axis, Dataset
from .rangefile import open_file
from .units import scale_by
from .virtual import file_dataset, header_float, slab_chunks, space_axis, virtual_store

_H5_PATH = re.compile(r"(.*?\.(?:h5|hdf5|hdf|he5))(?::(/?[^:]*))?$", re.IGNORECASE)
_MAX_LISTED = 8


def split_hdf5(text: str) -> tuple[str, str] | None:
    """``"a/f.h5:/g/d"`` -> ``("a/f.h5", "/g/d")``; ``"f.h5"`` -> ``("f.h5", "")``; None if no HDF5 name."""
    m = _H5_PATH.fullmatch(text)
    return (m.group(1), m.group(2) or "") if m else None


def _open_h5(loc: Location):
    import h5py

    fh = open_file(loc)
    try:
        return h5py.File(fh, "r"), fh
    except Exception as exc:  # h5py raises OSError for "not an HDF5 file"
        fh.close()
        raise SourceError(f"{loc}: not a readable HDF5 file ({first_line(exc)})") from None


def _datasets(f) -> list[str]:
    import h5py

    found: list[str] = []
    f.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return found


def hdf5_datasets(source: str) -> list[str]:
    """The paths of the datasets in the HDF5 file at ``source`` (a local path or http(s) URL)."""
    f, fh = _open_h5(Location(source))
    try:
        return _datasets(f)
    finally:
        f.close()
        fh.close()


def _pick(loc: Location, f, inner: str):
    """The h5py dataset at ``inner`` (or the file's only one), else one SourceError listing what is there."""
    import h5py

    if inner.strip("/"):
        obj = f.get(inner)
        if isinstance(obj, h5py.Dataset):
            return obj, "/" + inner.strip("/")
        what = "a group, not a dataset" if isinstance(obj, h5py.Group) else "no such dataset"
    else:
        what = "holds several datasets: name one as FILE.h5:/path/in/file"
    names = _datasets(f)
    if not inner.strip("/") and len(names) == 1:
        return f[names[0]], names[0]
    listed = ", ".join(names[:_MAX_LISTED]) + (", …" if len(names) > _MAX_LISTED else "") if names else "none"
    where = f"{loc}:{inner}" if inner else str(loc)
    raise SourceError(f"{where}: {what} (datasets in the file: {listed})")


def _attr(obj, name: str, rank: int) -> list[float] | None:
    """A per-axis numeric attribute of ``rank`` values, else None."""
    value = obj.attrs.get(name)
    try:
        values = [header_float(v) for v in (value if value is not None and hasattr(value, "__len__") else [])]
    except (TypeError, ValueError):
        return None
    return values if len(values) == rank else None


def _axistags(obj, rank: int) -> list[str] | None:
    """Axis keys from vigra/ilastik ``axistags`` JSON."""
    raw = obj.attrs.get("axistags")
    if raw is None:
        return None
    try:
        keys = [str(a["key"]) for a in json.loads(raw if isinstance(raw, str) else raw.decode())["axes"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return keys if len(keys) == rank else None


def read_hdf5(loc: Location, inner: str) -> Dataset:
    """The dataset at ``inner`` in the HDF5 file at ``loc``."""
    import numpy as np

    f, fh = _open_h5(loc)
    try:
        obj, inner = _pick(loc, f, inner)
        shape = [int(s) for s in obj.shape]
        dtype = np.dtype(obj.dtype)
        if dtype.kind not in "biuf":
            raise SourceError(f"{loc}:{inner}: data type {dtype} is not a numeric array")
        if not shape:
            raise SourceError(f"{loc}:{inner}: a scalar, not an array")
        rank = len(shape)
        chunks = [int(c) for c in obj.chunks] if obj.chunks else slab_chunks(shape, dtype.itemsize)
        encoding = obj.compression
        keys = _axistags(obj, rank)
        um = _attr(obj, "element_size_um", rank)
        nm = _attr(obj, "resolution", rank)
        nm_offset = _attr(obj, "offset", rank)
    finally:
        f.close()
        fh.close()
    names = keys or (["z", "y", "x"][-rank:] if rank <= 3 else [f"d{i}" for i in range(rank - 3)] + ["z", "y", "x"])
    sizes = [scale_by(u, 1e-6) for u in um] if um else [scale_by(n, 1e-9) for n in nm] if nm else [None] * rank
    axes = []
    for name, size in zip(names, sizes):
        if name == "c":
            axes.append(Axis("c'", "", 1.0, "channel"))
        elif name == "t":
            axes.append(Axis("t", "", 1.0, "time"))
        elif name in ("x", "y", "z"):
            axes.append(space_axis(name, size))
        else:
            axes.append(Axis(name, "", 1.0, "other"))
    offset = [o / r for o, r in zip(nm_offset, nm)] if nm and nm_offset and all(nm) else None

    def opener():
        hf, hfh = _open_h5(loc)  # kept open by read() as long as the store lives
        data = hf[inner]
        lock = threading.Lock()  # h5py serialises calls anyway; this also guards the Python file object

        def read(index: tuple[slice, ...]):
            with lock:
                _ = hfh  # the file object must outlive the h5py file
                return data[index]

        return virtual_store(shape, dtype, chunks, read)

    ds = file_dataset(loc, "hdf5", "an HDF5 dataset", axes, shape, dtype, chunks, opener,
                      offset=offset, encoding=encoding)
    ds.extras["hdf5_dataset"] = inner
    return ds

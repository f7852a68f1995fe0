"""MRC / CCP4 maps (``.mrc``, ``.map``, ``.rec``): cryo-EM densities and tomograms.

mrcfile validates and parses the 1024-byte header (from a file object, so an
http URL works too); the data block after it is read directly, a slab of whole
rows per chunk, because the file is one C-ordered array.

* Voxel size is the header's cell size over its sampling (``cella / mx``), in Å,
  turned into metres.
* The array's axes follow ``mapc``/``mapr``/``maps`` (columns, rows, sections),
  so a map stored z-fastest is still named right; the usual order is z, y, x.
* Placement: ``origin`` (Å) when set, else ``nxstart``/``nystart``/``nzstart``
  (voxels), as the lower corner of voxel 0 (an integer grid, as ChimeraX's
  index origin).
"""

from __future__ import annotations

from .errors import first_line
from .location import Location, SourceError
from .model import Dataset
from .rangefile import RandomAccessFile, open_file
from .units import scale_by
from .virtual import file_dataset, header_float, slab_chunks, space_axis, virtual_store

ANGSTROM = 1e-10
HEADER_BYTES = 1024


def _header(loc: Location, fh: RandomAccessFile):
    """The header record, validated by mrcfile; a bad one is one SourceError naming the file."""
    import warnings

    from mrcfile.mrcinterpreter import MrcInterpreter

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-permissive mode raises on what matters
            interp = MrcInterpreter(iostream=fh, permissive=False, header_only=True)
    except Exception as exc:  # mrcfile raises ValueError; a short file, struct/EOF errors
        raise SourceError(f"{loc}: not a valid MRC file ({first_line(exc)})") from None
    return interp


def read_mrc(loc: Location) -> Dataset:
    """The dataset of the MRC file at ``loc``."""
    import numpy as np
    from mrcfile import utils

    fh = open_file(loc)
    try:
        interp = _header(loc, fh)
        header = interp.header
        if int(header.mode) == 101:
            raise SourceError(f"{loc}: MRC mode 101 (4-bit) is not supported; convert the map to 8-bit")
        try:
            dtype = utils.data_dtype_from_header(header)
            shape = [int(s) for s in utils.data_shape_from_header(header)]
        except ValueError as exc:
            raise SourceError(f"{loc}: not a valid MRC file ({first_line(exc)})") from None
        data_offset = HEADER_BYTES + int(header.nsymbt)
        needed = data_offset + int(np.prod(shape)) * dtype.itemsize
        if fh.size < needed:
            raise SourceError(f"{loc}: truncated MRC file: the header promises {needed} bytes, the file has {fh.size}")
        # Å per voxel along X, Y, Z: the cell size over its sampling (mrcfile's voxel_size, unrounded)
        cella, sampling = header.cella, (int(header.mx), int(header.my), int(header.mz))
        sizes = {a: header_float(cella[k]) / m if m else 0.0
                 for a, k, m in ((1, "x", sampling[0]), (2, "y", sampling[1]), (3, "z", sampling[2]))}
        origin = {a: header_float(header.origin[k]) for a, k in ((1, "x"), (2, "y"), (3, "z"))}
        order = [int(header.maps), int(header.mapr), int(header.mapc)]  # axis of sections, rows, columns
        if sorted(order) != [1, 2, 3]:
            raise SourceError(f"{loc}: not a valid MRC file (mapc/mapr/maps {order[::-1]} are not a permutation of 1, 2, 3)")
        starts = [int(header.nzstart), int(header.nystart), int(header.nxstart)]
    finally:
        fh.close()
    if len(shape) == 2:  # a single image: no sections axis
        order, starts = order[1:], starts[1:]
    axes = [space_axis("xyz"[a - 1], scale_by(sizes[a], ANGSTROM) if sizes[a] > 0 else None) for a in order]
    if any(origin.values()):
        # Rounded: a float32 origin over a float32 size is off by ~1e-7 voxel, which is noise.
        offset = [round(origin[a] / sizes[a] if sizes[a] > 0 else origin[a], 6) for a in order]
    else:
        offset = [float(s) for s in starts]
    native = dtype.newbyteorder("=")
    chunks = slab_chunks(shape, dtype.itemsize)

    def opener():
        data = open_file(loc)  # kept open by read() as long as the store lives

        def read(index: tuple[slice, ...]):
            return _read_region(data, data_offset, shape, dtype, index).astype(native, copy=False)

        return virtual_store(shape, native, chunks, read)

    ds = file_dataset(loc, "mrc", "an MRC map", axes, shape, native, chunks, opener,
                      offset=offset, version=str(int(header.nversion)) if int(header.nversion) else None)
    ds.extras["mrc_mode"] = int(header.mode)
    return ds


def _read_region(fh: RandomAccessFile, start: int, shape: list[int], dtype, index: tuple[slice, ...]):
    """The region ``index`` of a C-ordered array stored at byte ``start``: one read per contiguous run."""
    import numpy as np

    item = dtype.itemsize
    lo = [s.start for s in index]
    hi = [s.stop for s in index]
    out = np.empty([b - a for a, b in zip(lo, hi)], dtype)
    # The innermost dimensions a region covers whole are contiguous together with the next one's run.
    rank = len(shape)
    split = rank - 1
    while split > 0 and lo[split] == 0 and hi[split] == shape[split]:
        split -= 1
    strides = [int(np.prod(shape[i + 1:])) for i in range(rank)]
    run = (hi[split] - lo[split]) * strides[split]
    for outer in np.ndindex(*out.shape[:split]):
        first = sum((lo[i] + outer[i]) * strides[i] for i in range(split)) + lo[split] * strides[split]
        raw = fh.read_at(start + first * item, run * item)
        out[outer] = np.frombuffer(raw, dtype).reshape(out.shape[split:])
    return out

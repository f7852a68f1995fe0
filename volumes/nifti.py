"""NIfTI-1 and NIfTI-2 images (``.nii``, ``.nii.gz``), read with nibabel.

NIfTI stores x fastest (Fortran order in i, j, k, t), which is C order in
t, z, y, x: the dataset presents that order, as OME-Zarr would.  Voxel sizes are
``pixdim`` in the header's ``xyzt_units`` (metres, mm, µm; seconds for t).  The
scaling ``scl_slope``/``scl_inter`` is applied, as every NIfTI reader does, so a
scaled integer image reads as floats.  The sform/qform affine (orientation) is
not applied; it is reported in the metadata.

A ``.nii`` reads a slab of whole planes per chunk; a ``.nii.gz`` is one chunk,
because gzip cannot be read from the middle.
"""

from __future__ import annotations

import gzip
import threading

from .errors import first_line
from .location import Location, SourceError
from .model import Axis, Dataset
from .rangefile import open_file
from .units import scale_by
from .virtual import file_dataset, header_float, quiet_logs, slab_chunks, virtual_store

_SPACE_UNITS = {"meter": 1.0, "mm": 1e-3, "micron": 1e-6}
_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _open_image(loc: Location):
    """(nibabel image, the file objects to keep open); a bad file is one SourceError naming it."""
    import nibabel as nib

    fh = open_file(loc)
    stream = gzip.GzipFile(fileobj=fh, mode="rb") if loc.name.lower().endswith(".gz") else fh
    try:
        head = stream.read(4)
        stream.seek(0)
        sizeof_hdr = max(int.from_bytes(head, "little"), int.from_bytes(head, "big")) if len(head) == 4 else 0
        klass = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
        with quiet_logs("nibabel.global"):
            return klass.from_stream(stream), (stream, fh)
    except Exception as exc:  # nibabel raises HeaderDataError, ImageFileError; gzip raises BadGzipFile/EOFError
        stream.close()
        fh.close()
        raise SourceError(f"{loc}: not a readable NIfTI image ({first_line(exc)})") from None


def read_nifti(loc: Location) -> Dataset:
    """The dataset of the NIfTI image at ``loc``."""
    import nibabel as nib
    import numpy as np

    img, files = _open_image(loc)
    try:
        header = img.header
        nib_shape = [int(s) for s in img.shape]
        if len(nib_shape) > 4:
            raise SourceError(f"{loc}: a {len(nib_shape)}-D NIfTI image; only 2-D to 4-D images are read")
        zooms = [header_float(z) for z in header.get_zooms()][: len(nib_shape)]
        space_unit, time_unit = header.get_xyzt_units()
        dtype = np.asarray(img.dataobj[(slice(0, 1),) * len(nib_shape)]).dtype  # after scl_slope/scl_inter
        affine = np.asarray(img.affine).round(9).tolist()
        version = "2" if isinstance(header, nib.Nifti2Header) else "1"
    finally:
        for f in files:
            f.close()
    names = ["x", "y", "z", "t"][: len(nib_shape)]
    axes = []
    for name, zoom in zip(names, zooms):
        if name == "t":
            factor = _TIME_UNITS.get(time_unit)
            axes.append(Axis("t", "s", scale_by(zoom, factor), "time") if factor and zoom else Axis("t", "", zoom or 1.0, "time"))
        else:
            factor = _SPACE_UNITS.get(space_unit)
            axes.append(Axis(name, "m", scale_by(zoom, factor), "space") if factor and zoom else Axis(name, "", zoom or 1.0, "space"))
    axes.reverse()  # presented t, z, y, x
    shape = nib_shape[::-1]
    gzipped = loc.name.lower().endswith(".gz")
    chunks = list(shape) if gzipped else slab_chunks(shape, dtype.itemsize)

    def opener():
        image, keep = _open_image(loc)  # kept open by read() as long as the store lives
        lock = threading.Lock()  # one file position under nibabel's proxy

        def read(index: tuple[slice, ...]):
            with lock:
                _ = keep
                data = np.asarray(image.dataobj[index[::-1]])
            return data.transpose().astype(dtype, copy=False)

        return virtual_store(shape, dtype, chunks, read)

    ds = file_dataset(loc, "nifti", "a NIfTI image", axes, shape, dtype, chunks, opener,
                      version=version)
    ds.extras["affine"] = affine
    return ds


"""Sources that are files (or a stack of them) rather than folders of chunks: which reader opens them.

Judged by name, as a listing would: ``.tif``/``.tiff``, ``.mrc``/``.map``/``.rec``,
``.h5``/``.hdf5`` (``file.h5:/path/in/file``), ``.nii``/``.nii.gz``, and a glob of
TIFF slices (``scan/*.tif``).  A folder of TIFF slices is found by
:func:`volumes.detect.open_dataset` once it holds no other format.
"""

from __future__ import annotations

from pathlib import Path

from .formats import volume_file_kind
from .location import Location
from .model import Dataset


def open_file_dataset(loc: Location) -> Dataset | None:
    """The dataset of the file source ``loc``, or None when its name is no file format we read."""
    from .hdf5 import split_hdf5
    from .tiff import is_glob

    if not loc.is_http and Path(loc.root).is_dir():
        return None  # a folder, whatever its name
    h5 = split_hdf5(loc.root)
    if h5 is not None:
        from .hdf5 import read_hdf5

        return read_hdf5(Location(h5[0] + loc.query_suffix), h5[1])
    if is_glob(loc.root):
        from .tiff import read_tiff_stack

        return read_tiff_stack(loc)
    kind = volume_file_kind(loc.name)
    if kind == "tiff":
        from .tiff import read_tiff_file

        return read_tiff_file(loc)
    if kind == "mrc":
        from .mrc import read_mrc

        return read_mrc(loc)
    if kind == "nifti":
        from .nifti import read_nifti

        return read_nifti(loc)
    return None


def open_slice_folder(loc: Location) -> Dataset | None:
    """The TIFF stack in the folder ``loc``, or None when it holds no TIFF files (or, over http,
    offers no listing of them)."""
    from .location import SourceError
    from .tiff import read_tiff_stack, slice_locations

    try:
        slices = slice_locations(loc)
    except SourceError:
        return None
    return read_tiff_stack(loc, slices)

"""Format knowledge shared by the server, ngstate and the annotation writer."""

from .atomic import building
from .errors import first_line
from .formats import NG_SCHEME, format_from_names
from .location import Location, SourceError
from .model import Axis, Dataset, Level


def open_dataset(source) -> Dataset:
    """Read the metadata of the dataset at a local path or http(s) URL (see :mod:`volumes.detect`)."""
    from .detect import open_dataset as _open  # keeps numpy out of the server's import path

    return _open(source)


__all__ = ["Axis", "building", "Dataset", "Level", "Location", "NG_SCHEME", "SourceError", "first_line", "format_from_names", "open_dataset"]

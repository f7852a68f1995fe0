"""Write tables of points, lines, boxes, ellipsoids and polylines as Neuroglancer precomputed
annotations: multi-level spatial index, id and relationship indices, sharded or not."""

from .errors import AnnotationInputError
from .geometry import ANNOTATION_TYPES
from .properties import PROPERTY_TYPES, PropertySpec
from .files import TABLE_FORMATS
from .writer import DEFAULT_LIMIT, write_annotations

__all__ = [
    "ANNOTATION_TYPES",
    "AnnotationInputError",
    "DEFAULT_LIMIT",
    "PROPERTY_TYPES",
    "PropertySpec",
    "TABLE_FORMATS",
    "write_annotations",
]

"""Annotation properties: type inference, value conversion, enums, colours and record layout."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import AnnotationInputError, plain, row_of

# type -> (numpy dtype, components, alignment in the record)
PROPERTY_TYPES: dict[str, tuple[str, int, int]] = {
    "uint32": ("<u4", 1, 4),
    "int32": ("<i4", 1, 4),
    "float32": ("<f4", 1, 4),
    "uint16": ("<u2", 1, 2),
    "int16": ("<i2", 1, 2),
    "uint8": ("u1", 1, 1),
    "int8": ("i1", 1, 1),
    "rgb": ("u1", 3, 1),
    "rgba": ("u1", 4, 1),
}
INTEGER_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")
_ID_PATTERN = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
_HEX_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


@dataclass
class PropertySpec:
    """One property: its column in the table and its entry in ``info["properties"]``."""

    column: str
    type: str | None = None  # None: infer from the column
    id: str | None = None  # None: derived from the column name
    description: str | None = None
    enum_values: list | None = None
    enum_labels: list[str] | None = None
    values: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        out: dict = {"id": self.id, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.enum_labels is not None:
            out["enum_values"] = [plain(v) for v in self.enum_values]
            out["enum_labels"] = list(self.enum_labels)
        return out


def parse_property(text: str) -> PropertySpec:
    """``COLUMN[:TYPE[:LABEL,LABEL,...]]`` from the command line.

    Labels make an enum with values 0, 1, ...; ``VALUE=LABEL`` gives the value explicitly.
    """
    column, _, rest = text.partition(":")
    type_, _, labels = rest.partition(":")
    spec = PropertySpec(column=column, type=type_ or None)
    if labels:
        pairs = [item.partition("=") for item in labels.split(",")]
        if all(sep for _, sep, _ in pairs):
            try:
                spec.enum_values = [float(v) if type_ == "float32" else int(v) for v, _, _ in pairs]
            except ValueError:
                raise AnnotationInputError(f"--property {text}: enum values before '=' must be numbers") from None
            spec.enum_labels = [label for _, _, label in pairs]
        else:
            spec.enum_labels = labels.split(",")
            spec.enum_values = list(range(len(spec.enum_labels)))
    return spec


def as_property_spec(item: str | dict | PropertySpec) -> PropertySpec:
    """Accept ``"col"``, ``"col:type"``, a dict of PropertySpec fields, or a PropertySpec."""
    if isinstance(item, PropertySpec):
        return item
    if isinstance(item, str):
        return parse_property(item)
    try:
        return PropertySpec(**item)
    except TypeError as exc:
        raise AnnotationInputError(f"bad property specification {item!r}: {exc}") from None


def property_id(column: str) -> str:
    """A valid Neuroglancer property id (``^[a-z][a-zA-Z0-9_]*$``) made from a column name."""
    text = re.sub(r"[^a-zA-Z0-9_]", "_", column.strip())
    if not text or not text[0].isalpha():
        text = "p_" + text
    return text[0].lower() + text[1:]


def _smallest_integer_type(low: int, high: int) -> str | None:
    for name in INTEGER_TYPES:
        info = np.iinfo(PROPERTY_TYPES[name][0])
        if info.min <= low and high <= info.max:
            return name
    return None


def _parse_colours(column: str, strings: np.ndarray, type_: str) -> np.ndarray:
    """Hex colours ``#rrggbb`` / ``#rrggbbaa`` → uint8 components, vectorised over fixed-width bytes."""
    components = PROPERTY_TYPES[type_][1]
    text = pd.Series(strings, dtype="string").str.lstrip("#")
    bad = (text.str.len() != 2 * components) | ~text.str.fullmatch(r"[0-9a-fA-F]*").fillna(False)
    bad = bad.fillna(True).to_numpy(dtype=bool)
    if bad.any():
        raise AnnotationInputError(
            f"property {column!r} ({type_}): row {row_of(bad)} holds {plain(strings[bad][0])!r}, "
            f"not a colour like #{'ff8800' if components == 3 else 'ff8800ff'}"
        )
    raw = np.frombuffer(text.to_numpy(dtype=f"S{2 * components}").tobytes(), dtype=np.uint8)
    nibble = np.zeros(256, dtype=np.uint8)
    nibble[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
    nibble[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
    nibble[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
    digits = nibble[raw].reshape(len(strings), components, 2)
    return digits[:, :, 0] * 16 + digits[:, :, 1]


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def resolve_property(spec: PropertySpec, series: pd.Series) -> PropertySpec:
    """Fill in the spec's id, type and enum from the column, and convert its values."""
    column = spec.column
    spec.id = spec.id or property_id(column)
    if not _ID_PATTERN.match(spec.id):
        raise AnnotationInputError(f"property id {spec.id!r} must match ^[a-z][a-zA-Z0-9_]*$; choose another id")
    if spec.type is not None and spec.type not in PROPERTY_TYPES:
        raise AnnotationInputError(
            f"property {column!r}: unknown type {spec.type!r}; use one of {', '.join(PROPERTY_TYPES)}"
        )
    if (spec.enum_values is None) != (spec.enum_labels is None):
        raise AnnotationInputError(f"property {column!r}: give both enum_values and enum_labels, or neither")
    if spec.enum_labels is not None and len(spec.enum_values) != len(spec.enum_labels):
        raise AnnotationInputError(f"property {column!r}: enum_values and enum_labels differ in length")
    if spec.type in ("rgb", "rgba") and spec.enum_labels is not None:
        raise AnnotationInputError(f"property {column!r}: {spec.type} properties cannot have enum labels")

    if _is_text(series):
        spec.values = _text_values(spec, series)
    else:
        spec.values = _numeric_values(spec, series)
    return spec


def _text_values(spec: PropertySpec, series: pd.Series) -> np.ndarray:
    column = spec.column
    strings = series.astype("string")
    missing = strings.isna().to_numpy()
    if missing.any():
        raise AnnotationInputError(f"property {column!r}: row {row_of(missing)} is empty; fill it or drop the row")
    if spec.type is None and spec.enum_labels is None and strings.str.fullmatch(_HEX_COLOUR.pattern).all():
        digits = strings.str.lstrip("#").str.len().unique()
        if len(digits) == 1:  # all #rrggbb or all #rrggbbaa: a colour column
            spec.type = "rgb" if digits[0] == 6 else "rgba"
    if spec.type in ("rgb", "rgba"):
        return _parse_colours(column, strings.to_numpy(dtype=object), spec.type)
    if spec.type == "float32":
        raise AnnotationInputError(f"property {column!r} holds text; float32 needs numbers")
    # Text becomes an enum: each label is stored as its value.
    if spec.enum_labels is None:
        spec.enum_labels = sorted(strings.unique().tolist())
        spec.enum_values = list(range(len(spec.enum_labels)))
    codes = pd.Index(spec.enum_labels).get_indexer(strings)
    outside = codes < 0
    if outside.any():
        raise AnnotationInputError(
            f"property {column!r}: row {row_of(outside)} holds {strings.iloc[int(np.argmax(outside))]!r}, "
            f"which is not one of its enum labels {spec.enum_labels}"
        )
    values = np.asarray(spec.enum_values)[codes]
    if spec.type is None:
        spec.type = _smallest_integer_type(int(min(spec.enum_values)), int(max(spec.enum_values)))
        if spec.type is None:
            raise AnnotationInputError(f"property {column!r}: enum values do not fit 32 bits")
    return _cast(spec, values)


def _numeric_values(spec: PropertySpec, series: pd.Series) -> np.ndarray:
    column = spec.column
    values = series.to_numpy()
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if spec.type in ("rgb", "rgba"):
        # A packed integer 0xRRGGBB(AA), as some tools export colours.
        packed = values.astype(np.uint64)
        n = PROPERTY_TYPES[spec.type][1]
        shifts = np.arange(n - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
        return ((packed[:, None] >> shifts) & np.uint64(255)).astype(np.uint8)
    if spec.type is None:
        if np.issubdtype(values.dtype, np.integer) and len(values):
            spec.type = _smallest_integer_type(int(values.min()), int(values.max()))
            if spec.type is None:
                raise AnnotationInputError(
                    f"property {column!r}: integers beyond 32 bits; pass type float32 or store them as a relationship"
                )
        elif np.issubdtype(values.dtype, np.integer):
            spec.type = "uint8"
        else:
            spec.type = "float32"
    if spec.enum_values is not None:
        outside = ~np.isin(values, np.asarray(spec.enum_values))
        if outside.any():
            raise AnnotationInputError(
                f"property {column!r}: row {row_of(outside)} holds {plain(values[outside][0])!r}, "
                f"which is not one of its enum values {spec.enum_values}"
            )
    return _cast(spec, values)


def _cast(spec: PropertySpec, values: np.ndarray) -> np.ndarray:
    """Values as the property's dtype, refusing anything that would not survive the cast."""
    dtype = np.dtype(PROPERTY_TYPES[spec.type][0])
    if spec.type == "float32":
        return values.astype(dtype)
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise AnnotationInputError(
                f"property {spec.column!r} ({spec.type}): row {row_of(bad)} holds {plain(values[bad][0])!r}, "
                "not an integer; fill missing values or pass type float32"
            )
    info = np.iinfo(dtype)
    bad = (values < info.min) | (values > info.max)
    if bad.any():
        raise AnnotationInputError(
            f"property {spec.column!r}: row {row_of(bad)} holds {plain(values[bad][0])!r}, outside the range of {spec.type}"
        )
    return values.astype(dtype)


def layout_order(specs: list[PropertySpec]) -> list[PropertySpec]:
    """Properties in record order: 4-byte types, then 2-byte, then 1-byte (the spec's rule).

    Within the 4-byte group uint32 comes first: neuroglancer's Python reader wrongly aligns uint32
    to 3 bytes, and offset 0 is the one place where that cannot matter.  The order is still the
    spec's, since the info file lists properties in exactly this order.
    """
    return sorted(specs, key=lambda p: (-PROPERTY_TYPES[p.type][2], p.type != "uint32"))


def record_dtype(geometry: list[tuple], specs: list[PropertySpec]) -> np.dtype:
    """Structured dtype of one record: geometry fields, properties in layout order, padding to 4 bytes."""
    names, formats, offsets = [], [], []
    offset = 0
    for name, fmt in geometry:
        names.append(name)
        formats.append(fmt)
        offsets.append(offset)
        offset += np.dtype(fmt).itemsize
    for i, spec in enumerate(specs):
        base, components, _ = PROPERTY_TYPES[spec.type]
        fmt = (base, (components,)) if components > 1 else base
        names.append(f"property{i}")
        formats.append(fmt)
        offsets.append(offset)
        offset += np.dtype(fmt).itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": -(-offset // 4) * 4})

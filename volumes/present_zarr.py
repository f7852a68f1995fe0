"""Zarr metadata as the bundled Neuroglancer client (2.41.2) reads it: the presenter of the
``/-/zarr/`` view.  Pure functions from raw metadata JSON to repaired JSON; no I/O.

The client reads OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3) only.  So:

* 0.1 and 0.2 (always ``t, c, z, y, x``, no units, no transforms) and 0.3 (axis names
  only) become 0.4: axes get their spec's types, and since there are no voxel sizes the
  finest level has scale 1 (no unit) and each coarser level the factor its shape shows,
  with the translation that keeps its voxels' corners on the finest level's;
* 0.6 (``coordinateSystems``, ``sequence``/``affine``/``rotation``/``mapAxis``
  transforms) becomes 0.5 (0.4 on zarr v2): the intrinsic coordinate system's axes, each
  level's scale and translation, and the multiscale's extra transform when it is a scale
  and translation.  A rotation, shear or axis permutation cannot be said in 0.4/0.5: it is
  left out and returned as :attr:`OmePresented.affine` for the layer's source transform;
* arrays the client cannot open are described so it can: uint64 zarr v2 with a null
  ``fill_value`` (it throws "Cannot mix BigInt and other types") gets 0, and bool is
  described as uint8 (one byte 0/1 either way, so the chunks are unchanged);
* ``omero`` goes where the client reads it (the top of the attributes), every channel with a
  colour (the client fails the layer on a channel without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .formats import ome_attrs
from .location import SourceError
from .present_n5 import _ratio_factor

_OLD = ("0.1", "0.2", "0.3")
_NESTED = ("0.2", "0.3")  # these versions store chunks in nested folders, t/c/z/y/x
_TCZYX = ["t", "c", "z", "y", "x"]
_TYPES = {"t": "time", "c": "channel"}


@dataclass
class OmePresented:
    """Repaired group attributes (``.zattrs``, or ``zarr.json``'s ``attributes``), and what
    0.4/0.5 cannot say."""

    attributes: dict
    # A transform 0.4/0.5 cannot express, from the multiscale's intrinsic coordinate system
    # (the repaired metadata's) to ``output_axes``: ``matrix`` is rank rows of rank+1 numbers
    # acting on OME physical coordinates (voxel centres at the origin, as in OME), in the units
    # of the repaired axes, the last column a translation.  None when everything mapped.
    affine: dict | None = None
    notes: list[str] = field(default_factory=list)


def ome_version(attrs: dict) -> str | None:
    """The OME version of group attributes ("" for OME without a version), or None if not OME."""
    ome, version = ome_attrs(attrs)
    if not isinstance(ome.get("multiscales"), list) or not ome["multiscales"]:
        return None
    return str(version) if version is not None else ""


def needs_repair(version: str | None) -> bool:
    return version is not None and (version in ("", *_OLD) or version.startswith("0.6"))


def needs_shapes(version: str | None) -> bool:
    """Whether :func:`present_ome` needs the levels' shapes (pre-0.4 has no voxel sizes)."""
    return version in ("", *_OLD)


def dataset_paths(attrs: dict) -> list[str]:
    """Every level path of every multiscale in OME group attributes."""
    ome, _ = ome_attrs(attrs)
    paths = []
    for ms in ome.get("multiscales") or []:
        for d in (ms.get("datasets") or []) if isinstance(ms, dict) else []:
            if isinstance(d, dict) and isinstance(d.get("path"), str):
                paths.append(d["path"])
    return paths


# -- arrays -------------------------------------------------------------------------------
def repair_zarray(meta: dict, ome_version: str | None = None) -> dict:
    """A zarr v2 ``.zarray`` the client can open; ``ome_version`` is that of the OME group
    whose level this array is (0.2 and 0.3 levels store nested chunks but predate the
    ``dimension_separator`` key)."""
    out = dict(meta)
    dtype = out.get("dtype")
    if isinstance(dtype, str) and dtype[1:] == "u8" and out.get("fill_value") is None:
        out["fill_value"] = 0
    if dtype == "|b1":
        out["dtype"] = "|u1"
        if isinstance(out.get("fill_value"), bool):
            out["fill_value"] = int(out["fill_value"])
    if ome_version in _NESTED and "dimension_separator" not in out:
        out["dimension_separator"] = "/"
    return out


def repair_zarr3_array(meta: dict) -> dict:
    """A zarr v3 array's ``zarr.json`` the client can open: bool described as uint8."""
    out = dict(meta)
    if out.get("data_type") == "bool":
        out["data_type"] = "uint8"
        if isinstance(out.get("fill_value"), bool):
            out["fill_value"] = int(out["fill_value"])
    return out


# -- OME groups ---------------------------------------------------------------------------
def present_ome(attrs: dict, zarr_version: int, shapes: dict[str, list[int]] | None = None) -> OmePresented:
    """Group attributes as OME 0.4 (zarr v2) or 0.5 (zarr v3); others pass unchanged.

    ``shapes`` maps level paths to array shapes; needed for 0.1–0.3 (:func:`needs_shapes`).
    """
    version = ome_version(attrs)
    if not needs_repair(version):
        return OmePresented(_omero_for_client(attrs, zarr_version))
    ome, _ = ome_attrs(attrs)
    target = "0.5" if zarr_version == 3 else "0.4"
    notes: list[str] = []
    affine = None
    multiscales = []
    for ms in ome["multiscales"]:
        if not isinstance(ms, dict):
            raise SourceError("OME multiscales holds an entry that is not an object")
        if needs_shapes(version):
            multiscales.append(_from_old(ms, version, shapes or {}))
        else:
            new, extra, more = _from_06(ms)
            multiscales.append(new)
            affine = affine or extra
            notes += more
    if needs_shapes(version):
        notes.append(
            f"OME-Zarr {version or 'without a version'} states no voxel size or unit: "
            "the finest level is 1 unit per voxel, coarser levels scaled by their shapes"
        )
    if zarr_version == 3:
        new_ome = {k: v for k, v in ome.items() if k not in ("version", "multiscales")}
        new_ome.update(version=target, multiscales=multiscales)
        out = {**attrs, "ome": new_ome}
    else:
        out = {**attrs, "multiscales": multiscales}
        out.pop("ome", None)
    return OmePresented(_omero_for_client(out, zarr_version), affine, notes)


def _omero_for_client(attrs: dict, zarr_version: int) -> dict:
    """``omero`` where the bundled client reads it, in a form it accepts.

    0.5 moved ``omero`` into ``ome``, but the client still reads it at the top only; and it
    throws on a channel without a ``color`` (which ``window`` alone is, e.g.), failing the
    whole layer.  Such a channel gets white, Neuroglancer's own default.
    """
    ome = attrs.get("ome")
    omero = attrs.get("omero")
    if omero is None and zarr_version == 3 and isinstance(ome, dict):
        omero = ome.get("omero")
    if not isinstance(omero, dict) or not isinstance(omero.get("channels"), list):
        return attrs
    channels = [
        {**ch, "color": "FFFFFF"} if isinstance(ch, dict) and not isinstance(ch.get("color"), str) else ch
        for ch in omero["channels"]
    ]
    return {**attrs, "omero": {**omero, "channels": channels}}


def _from_old(ms: dict, version: str, shapes: dict[str, list[int]]) -> dict:
    datasets = [d for d in ms.get("datasets") or [] if isinstance(d, dict)]
    if not datasets:
        raise SourceError("OME multiscales lists no datasets")
    try:
        level_shapes = [list(shapes[d["path"]]) for d in datasets]
    except KeyError as exc:
        raise SourceError(f"OME level {exc.args[0]!r} has no array metadata") from None
    rank = len(level_shapes[0])
    if version == "0.3" and isinstance(ms.get("axes"), list):
        names = [str(a) for a in ms["axes"]]
        if len(names) != rank or len(set(names)) != rank or not set(names) <= set(_TCZYX):
            raise SourceError(f"OME 0.3 axes {names} must be {rank} distinct names out of t, c, z, y, x")
    else:  # 0.1 and 0.2 arrays are 5-D t, c, z, y, x
        if not 2 <= rank <= 5:
            raise SourceError(f"OME {version or '0.1'} arrays are t, c, z, y, x; this one has {rank} dimensions")
        names = _TCZYX[-rank:]
    axes = [{"name": n, "type": _TYPES.get(n, "space")} for n in names]
    base = level_shapes[0]
    new_datasets = []
    for d, shape in zip(datasets, level_shapes):
        if len(shape) != rank:
            raise SourceError(f"OME level {d['path']!r} has {len(shape)} dimensions, not {rank}")
        factors = [
            _ratio_factor(b, s) if a["type"] == "space" and s > 0 else 1.0 for a, b, s in zip(axes, base, shape)
        ]
        new_datasets.append({**d, "coordinateTransformations": _scale_translation(factors, _corner_aligned(factors))})
    out = {k: v for k, v in ms.items() if k not in ("version", "axes", "datasets", "coordinateTransformations")}
    return {"version": "0.4", **out, "axes": axes, "datasets": new_datasets}


def _corner_aligned(factors: list[float]) -> list[float]:
    """The translation (in finest voxels) that puts a level's voxel corner on the finest level's
    corner: OME translations locate voxel centres."""
    return [(f - 1) / 2 for f in factors]


def _scale_translation(scale: list[float], translation: list[float]) -> list[dict]:
    out = [{"type": "scale", "scale": scale}]
    if any(translation):
        out.append({"type": "translation", "translation": translation})
    return out


# 0.6 ------------------------------------------------------------------------------------
Matrix = list[list[float]]  # (rank+1) x (rank+1), homogeneous, row-major, y = M x


def _identity(n: int) -> Matrix:
    return [[1.0 if i == j else 0.0 for j in range(n + 1)] for i in range(n + 1)]


def _mul(a: Matrix, b: Matrix) -> Matrix:
    n = len(a)
    return [[sum(a[i][k] * b[k][j] for k in range(n)) for j in range(n)] for i in range(n)]


def _numbers(values, length: int, what: str) -> list[float]:
    if not isinstance(values, list) or len(values) != length or not all(isinstance(v, (int, float)) for v in values):
        raise SourceError(f"OME {what} must be a list of {length} numbers")
    return [float(v) for v in values]


def _matrix(t: dict, rank: int) -> Matrix:
    """One OME 0.6 transform as a homogeneous matrix (identity, scale, translation, affine,
    rotation, mapAxis and sequences of them); SourceError for what is not a matrix."""
    kind = t.get("type") if isinstance(t, dict) else None
    m = _identity(rank)
    if "path" in (t if isinstance(t, dict) else {}) and kind in ("scale", "translation", "affine", "rotation"):
        raise SourceError(f"OME {kind} transform stored in a zarr array ({t['path']!r}) is not supported")
    if kind == "identity":
        return m
    if kind == "scale":
        for i, s in enumerate(_numbers(t.get("scale"), rank, "scale")):
            m[i][i] = s
        return m
    if kind == "translation":
        for i, v in enumerate(_numbers(t.get("translation"), rank, "translation")):
            m[i][rank] = v
        return m
    if kind == "affine":
        rows = t.get("affine")
        if not isinstance(rows, list) or len(rows) != rank:
            raise SourceError(f"OME affine must have {rank} rows of {rank + 1} numbers")
        return [_numbers(r, rank + 1, "affine row") for r in rows] + [m[rank]]
    if kind == "rotation":
        rows = t.get("rotation")
        if not isinstance(rows, list) or len(rows) != rank:
            raise SourceError(f"OME rotation must have {rank} rows of {rank} numbers")
        return [_numbers(r, rank, "rotation row") + [0.0] for r in rows] + [m[rank]]
    if kind == "mapAxis":
        order = t.get("mapAxis")
        if not isinstance(order, list) or sorted(order) != list(range(rank)):
            raise SourceError(f"OME mapAxis must be a permutation of 0…{rank - 1}")
        return [[1.0 if j == order[i] else 0.0 for j in range(rank)] + [0.0] for i in range(rank)] + [m[rank]]
    if kind == "sequence":
        parts = t.get("transformations")
        if not isinstance(parts, list):
            raise SourceError("OME sequence transform lists no transformations")
        return _compose(parts, rank)
    raise SourceError(f"OME coordinate transform {kind!r} cannot be shown as scale, translation or affine")


def _compose(transforms: list, rank: int) -> Matrix:
    m = _identity(rank)
    for t in transforms:
        m = _mul(_matrix(t, rank), m)  # later transforms apply after earlier ones
    return m


def _diagonal(m: Matrix) -> bool:
    n = len(m) - 1
    return all(m[i][j] == 0 for i in range(n) for j in range(n) if i != j)


def _name(ref) -> str | None:
    if isinstance(ref, dict):
        return ref.get("name")
    return ref if isinstance(ref, str) else None  # early 0.6 drafts named systems by string


def _axes(system: dict) -> list[dict]:
    axes = system.get("axes")
    if not isinstance(axes, list) or not axes or not all(isinstance(a, dict) and a.get("name") for a in axes):
        raise SourceError(f"OME coordinate system {system.get('name')!r} has no axes with names")
    return [{k: a[k] for k in ("name", "type", "unit") if k in a} for a in axes]


def _from_06(ms: dict) -> tuple[dict, dict | None, list[str]]:
    systems = [s for s in ms.get("coordinateSystems") or [] if isinstance(s, dict)]
    datasets = [d for d in ms.get("datasets") or [] if isinstance(d, dict)]
    if not systems or not datasets:
        raise SourceError("OME 0.6 multiscales needs coordinateSystems and datasets")
    by_name = {s.get("name"): s for s in systems}
    first = (datasets[0].get("coordinateTransformations") or [{}])[0]
    intrinsic = by_name.get(_name(first.get("output") if isinstance(first, dict) else None), systems[-1])
    axes = _axes(intrinsic)
    rank = len(axes)
    new_datasets = []
    for d in datasets:
        m = _compose(d.get("coordinateTransformations") or [], rank)
        if not _diagonal(m):
            raise SourceError(f"OME level {d.get('path')!r}: a level's transform must be a scale and a translation")
        scale = [m[i][i] for i in range(rank)]
        if any(s <= 0 for s in scale):
            raise SourceError(f"OME level {d.get('path')!r}: scales must be positive")
        new_datasets.append({"path": d.get("path"), "coordinateTransformations": _scale_translation(scale, [m[i][rank] for i in range(rank)])})
    out = {k: v for k, v in ms.items() if k not in ("coordinateSystems", "coordinateTransformations", "datasets", "axes")}
    out.update(axes=axes, datasets=new_datasets)
    notes: list[str] = []
    affine = None
    outer = [
        t for t in ms.get("coordinateTransformations") or []
        if isinstance(t, dict) and _name(t.get("input")) == intrinsic.get("name")
        and not (isinstance(t.get("output"), dict) and t["output"].get("path"))  # a labels group's system
    ]
    if outer:
        t = outer[0]
        target = by_name.get(_name(t.get("output")))
        try:
            m = _compose([t], rank)
        except SourceError as exc:
            notes.append(f"left out the multiscale transform to {_name(t.get('output'))!r}: {exc}")
            return out, None, notes
        target_axes = _axes(target) if target is not None and len(target.get("axes") or []) == rank else axes
        if _diagonal(m) and all(m[i][i] > 0 for i in range(rank)):
            out["axes"] = target_axes
            out["coordinateTransformations"] = _scale_translation([m[i][i] for i in range(rank)], [m[i][rank] for i in range(rank)])
        else:
            affine = {
                "matrix": [row[:] for row in m[:rank]],
                "input_axes": axes,
                "output_axes": target_axes,
                "output_system": _name(t.get("output")),
            }
            notes.append(
                f"the transform to {_name(t.get('output'))!r} rotates, shears or permutes axes, which OME 0.4/0.5 "
                "cannot say: it is left out of the metadata (the layer's source transform carries it)"
            )
    return out, affine, notes

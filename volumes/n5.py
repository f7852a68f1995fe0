"""N5 arrays and multiscale groups in the three metadata conventions in use.

* Neuroglancer's: ``resolution``, ``units``, ``axes``, ``scales`` / ``downsamplingFactors``;
* n5-viewer's: ``pixelResolution: {dimensions, unit}`` (and ``scales``);
* COSEM's: ``transform: {axes, scale, translate, units, ordering}`` per array, and a
  ``multiscales`` list of datasets on the group.

Neuroglancer reads only the first two.  Opening a node, it merges the ``attributes.json``
of every folder from the store's root down to the node, the deeper one winning key by key
(``getAttributes`` in src/datasource/n5/frontend.ts), so an ``s0`` opened directly takes its
group's resolution and units; :func:`read_n5` does the same.
Dimension order is the N5 one (x first), as tensorstore and Neuroglancer use it.
"""

from __future__ import annotations

import numpy as np

from .location import Location, SourceError
from .model import Axis, Dataset, Level
from .present_n5 import cosem_transform, group_dataset, level_factors, level_paths, merge_attributes
from .units import scale_by, si_unit

_DEFAULT_NAMES = ["x", "y", "z", "t", "c"]
# Attributes from which Neuroglancer tells a group's rank (else "Unable to determine rank of dataset").
_RANK_KEYS = ("resolution", "axes", "units", "downsamplingFactors", "scales")


def _ng_space(attrs: dict, rank: int) -> list[Axis]:
    """The axes Neuroglancer derives from these attributes (default nm, x/y/z/t/c, d<i>)."""
    names = list(attrs.get("axes") or [])
    if len(names) != rank:
        names = _DEFAULT_NAMES[:rank] + [f"d{i + 1}" for i in range(len(_DEFAULT_NAMES), rank)]
    default_unit = "nm"
    scales = attrs.get("resolution")
    pr = attrs.get("pixelResolution")
    if isinstance(pr, dict):
        default_unit = pr.get("unit", default_unit)
        scales = pr.get("dimensions", scales)
    units = attrs.get("units") or [default_unit] * rank
    scales = scales or [1.0] * rank
    axes = []
    for name, unit_name, s in zip(names, units, scales):
        try:
            unit, factor = si_unit(unit_name)
        except ValueError:
            raise SourceError(f"N5 unit {unit_name!r} is not one Neuroglancer knows") from None
        axes.append(Axis(name, unit, scale_by(float(s), factor), "space"))
    return axes


def _level(loc: Location, path: str, attrs: dict, factors: list[float]) -> Level:
    comp = attrs.get("compression")
    return Level(
        path=path,
        shape=[int(d) for d in attrs["dimensions"]],
        chunks=[int(b) for b in attrs["blockSize"]],
        dtype=np.dtype(attrs["dataType"]).name,
        factors=factors,
        encoding=comp.get("type") if isinstance(comp, dict) else None,
        spec={"driver": "n5", "kvstore": loc.kvstore(path)},
    )


def inherited_attributes(loc: Location, own: dict) -> dict:
    """``own`` over the ``attributes.json`` of every ancestor folder, as Neuroglancer merges them:
    a shallow merge from the outermost folder (the URL's host root, or ``/``) inwards."""
    chain = []
    parts = loc.root.split("/")
    first = 3 if loc.is_http else 1  # "http:", "", "host" / the empty name before the leading "/"
    for depth in range(first, len(parts)):
        folder = Location("/".join(parts[:depth]) or "/")
        folder.query = loc.query
        try:
            chain.append(folder.read_json("attributes.json"))
        except SourceError:
            pass  # unreadable (e.g. outside a token's scope): absent, as for the client
    return merge_attributes([*chain, own])


def read_n5(loc: Location, root: dict) -> Dataset:
    """The dataset of an N5 array or multiscale group whose ``attributes.json`` is ``root``,
    with its ancestors' attributes inherited (see :func:`inherited_attributes`)."""
    root = inherited_attributes(loc, root)
    if "dimensions" in root and "dataType" in root:
        level_attrs = [("", root)]
    else:
        paths = _level_paths(loc, root)
        if not paths:
            raise SourceError(f"{loc}: an N5 group with no arrays s0, s1, … and no multiscales list")
        level_attrs = []
        for p in paths:
            a = loc.read_json(f"{p}/attributes.json")
            if a is None or "dimensions" not in a:
                raise SourceError(f"{loc}: scale level {p} has no N5 array attributes")
            level_attrs.append((p, a))
    first = level_attrs[0][1]
    rank = len(first["dimensions"])
    native = _ng_space(root, rank)
    # Our axes: Neuroglancer's names, but the most specific metadata for sizes.
    cosem = cosem_transform(first, rank) or cosem_transform(group_dataset(root, 0), rank)
    merged = {**first, **{k: v for k, v in root.items() if k in ("resolution", "units", "pixelResolution", "axes")}}
    axes = _ng_space(merged, rank)
    offset = [0.0] * rank
    convention = "neuroglancer" if ("resolution" in merged) else "n5-viewer" if "pixelResolution" in merged else None
    if cosem:
        convention = "cosem"
        scale, trans, units = cosem["scale"], cosem["translate"], cosem["units"]
        for i, a in enumerate(axes):
            unit, factor = si_unit(units[i])
            a.unit, a.scale = unit, scale_by(float(scale[i]), factor)
        # COSEM translations are voxel centres (as in OME); Neuroglancer wants corners.
        offset = [t / s - 0.5 for t, s in zip(trans, scale)]
    for a in axes:
        if a.name in ("c", "channel"):
            a.name, a.type, a.unit, a.scale = a.name + "'", "channel", "", 1.0
    factors_all = _factors(root, level_attrs, rank)
    levels = [_level(loc, p, a, f) for (p, a), f in zip(level_attrs, factors_all)]
    # Neuroglancer opens a group only when it can tell every level's downsampling.
    ng_path = ""
    if len(level_attrs) > 1 or level_attrs[0][0]:
        # ...and only when the group's own (inherited) attributes give its rank.
        rank_known = any(k in root for k in _RANK_KEYS) or "dimensions" in (root.get("pixelResolution") or {})
        knows = rank_known and ("scales" in root or isinstance(root.get("downsamplingFactors"), list) or all(
            "downsamplingFactors" in a for _, a in level_attrs[1:]
        ))
        if not knows:
            ng_path = level_attrs[0][0]
            native = _ng_space({**root, **first}, rank)  # the level inherits the group's attributes
            levels = levels[:1]
    ds = Dataset(
        location=loc,
        format="n5",
        scheme="n5",
        axes=axes,
        offset=offset,
        levels=levels,
        native_axes=native,
        native_offset=[0.0] * rank,
        ng_path=ng_path,
        version=root.get("n5"),
    )
    if convention:
        ds.extras["convention"] = convention
    if ng_path:
        ds.notes.append(f"Neuroglancer cannot open this group (no rank or downsampling factors it reads); "
                        f"the layer shows {ng_path} only")
    return ds


def _level_paths(loc: Location, root: dict) -> list[str]:
    """Level folders as the group names them (see :func:`volumes.present_n5.level_paths`), else s0, s1, … as found."""
    paths = level_paths(root)
    if not paths:  # nothing names them: probe s0, s1, … (http offers no listing to read them from)
        while loc.read_json(f"s{len(paths)}/attributes.json") is not None:
            paths.append(f"s{len(paths)}")
    return paths


def _factors(root: dict, level_attrs: list[tuple[str, dict]], rank: int) -> list[list[float]]:
    """Per-level downsampling factors: the group's list when it states one, else per level."""
    listed = root.get("scales") or root.get("downsamplingFactors")
    if isinstance(listed, list) and len(listed) == len(level_attrs) and isinstance(listed[0], list):
        return [[float(f) for f in fs] for fs in listed]
    return level_factors(root, level_attrs, rank)

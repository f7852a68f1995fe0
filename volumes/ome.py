"""OME-Zarr multiscale images: 0.4 on zarr v2, 0.5 on zarr v3, with ``labels/`` and ``omero``."""

from __future__ import annotations

from .formats import ome_attrs, ome_labels
from .location import Location, SourceError
from .model import Axis, Dataset
from .segment_properties import image_label_of
from .units import ome_unit
from .zarr_meta import array_level


def _compose(transforms: list | None, rank: int) -> tuple[list[float], list[float]]:
    """Scale and translation of a list of OME ``scale``/``translation`` transforms."""
    scale, trans = [1.0] * rank, [0.0] * rank
    for t in transforms or []:
        if t.get("type") == "scale":
            s = t["scale"]
            scale = [a * b for a, b in zip(scale, s)]
            trans = [a * b for a, b in zip(trans, s)]
        elif t.get("type") == "translation":
            trans = [a + b for a, b in zip(trans, t["translation"])]
        elif t.get("type") != "identity":
            raise SourceError(f"OME coordinate transform {t.get('type')!r} is not supported (only scale/translation)")
    return scale, trans


def _axes(raw: list, rank: int) -> list[tuple[str, str, str | None]]:
    """(name, type, unit) per axis; 0.3-style plain names are accepted."""
    if not raw:
        raw = ["t", "c", "z", "y", "x"][-rank:]
    out = []
    for a in raw:
        if isinstance(a, str):
            kind = "channel" if a == "c" else "time" if a == "t" else "space"
            out.append((a, kind, None))
        else:
            out.append((a["name"], a.get("type") or "space", a.get("unit")))
    return out


def read_ome(loc: Location, attrs: dict, zarr_version: int) -> Dataset:
    """The dataset of an OME-Zarr multiscale group whose attributes are ``attrs``."""
    ome, version = ome_attrs(attrs)
    ms = ome["multiscales"][0]
    presented = None
    if str(version).startswith("0.6") and isinstance(ms, dict) and "coordinateSystems" in ms:
        # 0.6 (coordinate systems, sequence transforms): read as the /-/zarr/ view presents it,
        # one mapping for both; what 0.4/0.5 cannot say (an affine) is kept in extras.
        from .present_zarr import present_ome

        presented = present_ome(attrs, zarr_version)
        attrs = presented.attributes
        ome, _ = ome_attrs(attrs)
        ms = ome["multiscales"][0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise SourceError(f"{loc}: OME multiscales lists no datasets")
    first, _, _ = array_level(loc, datasets[0]["path"], zarr_version)
    rank = len(first.shape)
    named = _axes(ms.get("axes") or [], rank)
    outer_scale, outer_trans = _compose(ms.get("coordinateTransformations"), rank)
    scales, translations = [], []
    for d in datasets:
        s, t = _compose(d.get("coordinateTransformations"), rank)
        scales.append([a * b for a, b in zip(outer_scale, s)])
        translations.append([a * b + c for a, b, c in zip(outer_scale, t, outer_trans)])
    base = scales[0]
    levels = []
    for i, d in enumerate(datasets):
        factors = [a / b for a, b in zip(scales[i], base)]
        level = first if i == 0 else array_level(loc, d["path"], zarr_version)[0]
        level.factors = factors
        levels.append(level)
    axes = []
    for (name, kind, unit_name), s in zip(named, base):
        try:
            unit, factor = ome_unit(unit_name)
        except ValueError:
            raise SourceError(f"{loc}: axis {name!r} has unit {unit_name!r}, which is not an OME unit name") from None
        # Neuroglancer marks OME channel axes layer-local by a trailing "'".
        axes.append(Axis(name + "'" if kind == "channel" else name, unit, factor * s, kind))
    # OME places voxel centres at the translation; Neuroglancer's voxel origin is its corner.
    offset = [t / s - 0.5 for t, s in zip(translations[0], base)]
    ds = Dataset(
        location=loc,
        format="ome-zarr",
        scheme="zarr3" if zarr_version == 3 else "zarr2",
        axes=axes,
        offset=offset,
        levels=levels,
        native_axes=[Axis(a.name, a.unit, a.scale, a.type) for a in axes],
        native_offset=list(offset),
        version=version,
    )
    if "image-label" in ome or "image-label" in attrs:
        ds.kind_hint, ds.kind_reason = "segmentation", "OME image-label metadata"
        image_label = image_label_of(attrs)
        if image_label and (image_label.get("properties") or image_label.get("colors")):
            ds.extras["_image_label"] = image_label  # names and colors for the layer (ngstate)
            ds.extras["segment_properties"] = {
                k: len(image_label[k]) for k in ("properties", "colors") if isinstance(image_label.get(k), list)
            }
    elif loc.root.rstrip("/").rsplit("/", 2)[-2:-1] == ["labels"]:
        ds.kind_hint, ds.kind_reason = "segmentation", "inside an OME labels/ group"
    omero = attrs.get("omero") or ome.get("omero")
    if isinstance(omero, dict):
        for ch in omero.get("channels") or []:
            w = ch.get("window") or {}
            if "start" in w and "end" in w:
                ds.windows.append((float(w["start"]), float(w["end"])))
    if presented is not None:
        ds.notes += presented.notes
        if presented.affine:
            ds.extras["affine"] = presented.affine
    labels = _label_names(loc, zarr_version)
    if labels:
        ds.extras["labels"] = labels
    return ds


def _label_names(loc: Location, zarr_version: int) -> list[str]:
    """Names listed by the image's ``labels/`` group, if it has one."""
    if zarr_version == 3:
        attrs = (loc.read_json("labels/zarr.json") or {}).get("attributes") or {}
    else:
        attrs = loc.read_json("labels/.zattrs") or {}
    return ome_labels(attrs)

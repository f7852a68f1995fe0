"""Neuroglancer precomputed volumes (sharded or not) and annotation directories."""

from __future__ import annotations

from .location import Location, SourceError
from .model import Axis, Dataset, Level
from .units import scale_by, si_unit


def read_precomputed(loc: Location, info: dict) -> Dataset:
    """The dataset described by a precomputed ``info`` file."""
    if info.get("@type") == "neuroglancer_annotations_v1" or "annotation_type" in info:
        return _annotations(loc, info)
    if "scales" not in info or not info["scales"]:
        raise SourceError(f"{loc.url_of('info')}: a precomputed info without scales (type {info.get('type')!r})")
    scales = info["scales"]
    channels = int(info.get("num_channels", 1))
    res0 = [float(r) for r in scales[0]["resolution"]]
    # Neuroglancer names precomputed volumes x, y, z in nanometres, plus c^ for channels.
    axes = [Axis(n, "m", r / 1e9, "space") for n, r in zip("xyz", res0)]
    if channels > 1:
        axes.append(Axis("c^", "", 1.0, "channel"))
    offset = [float(v) for v in scales[0].get("voxel_offset", [0, 0, 0])] + ([0.0] if channels > 1 else [])
    levels = []
    for index, s in enumerate(scales):
        chunk = s["chunk_sizes"][0]
        factors = [float(r) / r0 for r, r0 in zip(s["resolution"], res0)]
        levels.append(
            Level(
                path=s["key"],
                shape=[int(v) for v in s["size"]] + ([channels] if channels > 1 else []),
                chunks=[int(c) for c in chunk] + ([channels] if channels > 1 else []),
                dtype=str(info["data_type"]),
                factors=factors + ([1.0] if channels > 1 else []),
                encoding=s.get("encoding", "raw") + (" sharded" if s.get("sharding") else ""),
                spec={"driver": "neuroglancer_precomputed", "kvstore": loc.kvstore(), "scale_index": index},
            )
        )
    ds = Dataset(
        location=loc,
        format="precomputed",
        scheme="precomputed",
        axes=axes,
        offset=offset,
        levels=levels,
        native_axes=[Axis(a.name, a.unit, a.scale, a.type) for a in axes],
        native_offset=list(offset),
    )
    if info.get("type") == "segmentation":
        ds.kind_hint, ds.kind_reason = "segmentation", "precomputed type: segmentation"
    elif any(s.get("encoding") == "compressed_segmentation" for s in scales):
        ds.kind_hint, ds.kind_reason = "segmentation", "compressed_segmentation encoding"
    elif info.get("type") == "image":
        ds.kind_hint, ds.kind_reason = "image", "precomputed type: image"
    for key in ("mesh", "skeletons", "segment_properties"):
        if info.get(key):
            ds.extras[key] = info[key]
    return ds


def _annotations(loc: Location, info: dict) -> Dataset:
    dims = info.get("dimensions") or {}
    if not dims:
        raise SourceError(f"{loc.url_of('info')}: an annotation info without dimensions")
    axes = []
    for name, (scale, unit_name) in dims.items():
        unit, factor = si_unit(unit_name)
        axes.append(Axis(name, unit, scale_by(float(scale), factor), "space"))
    lower = [float(v) for v in info.get("lower_bound", [0] * len(axes))]
    upper = [float(v) for v in info.get("upper_bound", lower)]
    ds = Dataset(
        location=loc,
        format="precomputed-annotations",
        scheme="precomputed",
        axes=axes,
        offset=lower,
        levels=[],
        native_axes=[Axis(a.name, a.unit, a.scale, a.type) for a in axes],
        native_offset=list(lower),
        kind_hint="annotation",
        kind_reason="neuroglancer_annotations_v1 info",
    )
    ds.extras.update(
        {
            "annotation_type": info.get("annotation_type"),
            "bounds": [lower, upper],
            "properties": [p.get("id") for p in info.get("properties", [])],
            "relationships": [r.get("id") for r in info.get("relationships", [])],
            "sharded": bool((info.get("by_id") or {}).get("sharding")),
        }
    )
    return ds

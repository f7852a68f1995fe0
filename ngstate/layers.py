"""One dataset -> one Neuroglancer layer, with dimensions Neuroglancer will agree with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from volumes import Dataset

from .kinds import KINDS, infer_kind
from .placement import with_voxel_size
from .viewable import require_viewable


@dataclass
class LayerPlan:
    """A layer's JSON plus what the state needs to place the view around it."""

    layer: dict
    dataset: Dataset
    dims: dict[str, list] = field(default_factory=dict)  # global output dims: name -> [scale, unit]
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> physical [lo, hi)
    first: dict[str, float] = field(default_factory=dict)  # time axes: name -> physical centre of sample 0
    # Annotation layers: the segmentation layer every relationship follows (a name), or per
    # relationship (a mapping); None lets the State match them (see State._link_annotations).
    link: str | Mapping[str, str] | None = None
    view: str = "native"  # which of ngserve's views the source URL is: native, zarr, n5 or precomputed
    url: str = ""  # the data URL the source points at (before the scheme and the transform)
    placed: bool = False  # the user gave its voxel size or units: keep them
    prepared: set[str] = field(default_factory=set)  # "mesh"/"skeletons" folders beside the labels it shows

    @property
    def name(self) -> str:
        return self.layer["name"]

    @property
    def kind(self) -> str:
        return self.layer["type"]


def needs_transform(ds: Dataset) -> bool:
    """Whether Neuroglancer's own reading of the source differs from where the data is."""
    for a, n in zip(ds.axes, ds.native_axes):
        if a.name != n.name or a.unit != n.unit or not math.isclose(a.scale, n.scale, rel_tol=1e-9):
            return True
    return any(abs(a - b) > 1e-9 for a, b in zip(ds.offset, ds.native_offset))


def source_spec(ds: Dataset, url: str) -> str | dict:
    """The layer ``source``: the URL alone, or with a transform naming the output dimensions.

    A query string on ``url`` goes at the very end, after the path, where
    Neuroglancer's http store expects it.  (Its zarr and n5 sources still append
    file names after the query, which is why ngserve's share links put the token
    in the path instead.)
    """
    url, _, query = url.partition("?")
    ng_url = f"{ds.scheme}://{url.rstrip('/')}/" + (ds.ng_path.strip("/") + "/" if ds.ng_path else "")
    if ds.format == "precomputed" or ds.format == "precomputed-annotations":
        ng_url = ng_url.rstrip("/")
    if query:
        ng_url += "?" + query
    if not needs_transform(ds):
        return ng_url
    rank = len(ds.axes)
    # An explicit matrix replaces the source's default transform, so its translation
    # is the whole offset; only precomputed's voxel_offset lives in the model space itself.
    intrinsic = ds.native_offset if ds.format == "precomputed" else [0.0] * rank
    matrix = [[1.0 if j == i else 0.0 for j in range(rank)] + [ds.offset[i] - intrinsic[i]] for i in range(rank)]
    return {
        "url": ng_url,
        "transform": {"outputDimensions": {a.name: a.to_json() for a in ds.axes}, "matrix": matrix},
    }


def source_url(source: str | dict | list) -> str:
    """The data URL of a layer ``source``: a URL, a source object, or a list whose first is the data."""
    first = source[0] if isinstance(source, list) else source
    return first["url"] if isinstance(first, dict) else first


def add_source(layer: dict, url: str) -> None:
    """Give ``layer`` one more source (segment properties, meshes): the state's list form."""
    source = layer["source"]
    layer["source"] = [*(source if isinstance(source, list) else [source]), url]


def apply_affine(plan: LayerPlan, affine: dict) -> None:
    """Carry an OME transform that the repaired metadata cannot say (a rotation, shear or
    permutation; ``OmePresented.affine``) in the layer's source transform, and place the view
    around the data where the transform puts it.

    The client's coordinates of an OME source, which the matrix acts on, are its OME physical
    coordinates (the affine's input) divided by the level-0 voxel size: voxel centres at whole
    numbers plus translation / scale, so its bounds start at ``offset`` (checked in Chromium).
    """
    from itertools import product

    from volumes.units import ome_unit

    ds = plan.dataset
    rank = len(ds.axes)
    a = affine["matrix"]
    f_in = [ome_unit(ax.get("unit"))[1] for ax in affine["input_axes"]]
    out = [ome_unit(ax.get("unit")) for ax in affine["output_axes"]]
    s = [ax.scale for ax in ds.axes]  # SI; each output dimension keeps its row's input voxel size
    s_ome = [si / f for si, f in zip(s, f_in)]
    matrix = []
    for i in range(rank):
        row = [out[i][1] * a[i][j] * s_ome[j] / s[i] for j in range(rank)]
        matrix.append(row + [out[i][1] * a[i][rank] / s[i]])
    names = [ax["name"] + ("'" if ax.get("type") == "channel" else "") for ax in affine["output_axes"]]
    url = source_url(plan.layer["source"])
    plan.layer["source"] = {"url": url, "transform": {
        "outputDimensions": {n: [s[i], out[i][0]] for i, n in enumerate(names)}, "matrix": matrix}}
    corners = [[sum(m[j] * v[j] for j in range(rank)) + m[rank] for m in matrix]
               for v in product(*[(o, o + n) for o, n in zip(ds.offset, ds.shape)])]
    plan.dims, plan.bounds, plan.first = {}, {}, {}
    for i, n in enumerate(names):
        if n.endswith("'"):
            continue
        plan.dims[n] = [s[i], out[i][0]]
        plan.bounds[n] = (min(c[i] for c in corners) * s[i], max(c[i] for c in corners) * s[i])


def build_layer(
    ds: Dataset,
    url: str,
    *,
    kind: str | None = None,
    name: str | None = None,
    contrast: list[float] | bool | None = None,
    visible: bool | None = None,
    opacity: float | None = None,
    segments: list[int] | None = None,
    voxel_size: list[float] | float | None = None,
    units: str | None = None,
) -> LayerPlan:
    """The layer for ``ds`` as the viewer reaches it at ``url``.

    ``kind`` overrides the inferred layer type; ``contrast`` is a [lo, hi]
    range, False for none, or None to take the omero window or percentiles;
    ``voxel_size`` and ``units`` place the data (see :func:`ngstate.placement.with_voxel_size`).
    """
    require_viewable(ds)
    if kind is None:
        kind, _ = infer_kind(ds)
    elif kind not in KINDS:
        raise ValueError(f"layer kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "annotation" and ds.format != "precomputed-annotations":
        raise ValueError(f"{ds.location} is a {ds.format} volume, not an annotation directory")
    if kind != "annotation" and ds.format == "precomputed-annotations":
        raise ValueError(f"{ds.location} is an annotation directory; it opens only as an annotation layer")
    if kind != "annotation":  # annotations are placed by the layers they annotate
        ds = with_voxel_size(ds, voxel_size, units)
    layer: dict = {"type": kind, "source": source_spec(ds, url), "name": name or ds.name}
    plan = LayerPlan(layer, ds, url=url, placed=voxel_size is not None or units is not None)
    local = [(a, o) for a, o in zip(ds.axes, ds.offset) if a.name.endswith("'")]
    if local:
        layer["localDimensions"] = {a.name: a.to_json() for a, _ in local}
        layer["localPosition"] = [o + 0.5 for _, o in local]  # the first channel
    if kind == "image" and contrast is not False:
        if contrast is None:
            from volumes import contrast_range  # lazily: it loads numpy and tensorstore

            contrast = list(ds.windows[0]) if ds.windows else contrast_range(ds)
        layer["shaderControls"] = {"normalized": {"range": [_plain(v) for v in contrast]}}
    if kind == "segmentation" and segments:
        layer["segments"] = [str(int(s)) for s in segments]
    if opacity is not None:
        layer["opacity"] = float(opacity)
    if visible is False:
        layer["visible"] = False
    _place(plan)
    return plan


def relabel(plan: LayerPlan, ds: Dataset) -> LayerPlan:
    """``plan`` showing its data with ``ds``'s axes (names, voxel sizes, units) instead: the
    same layer with a new source transform, and the state's extents to match."""
    source = source_spec(ds, plan.url)
    layer = dict(plan.layer)
    layer["source"] = [source, *layer["source"][1:]] if isinstance(layer["source"], list) else source
    new = LayerPlan(layer, ds, link=plan.link, view=plan.view, url=plan.url, placed=plan.placed,
                   prepared=plan.prepared)
    _place(new)
    return new


def _place(plan: LayerPlan) -> None:
    """The state's global dimensions and extents that ``plan``'s data covers."""
    ds = plan.dataset
    if ds.format == "precomputed-annotations":
        lower, upper = ds.extras["bounds"]
        extent = list(zip(lower, upper))
    else:
        extent = [(o, o + s) for o, s in zip(ds.offset, ds.shape)]
    for a, (lo, hi) in zip(ds.axes, extent):
        if a.is_local:
            continue
        plan.dims[a.name] = a.to_json()
        plan.bounds[a.name] = (lo * a.scale, hi * a.scale)
        if a.type == "time":
            plan.first[a.name] = (lo + 0.5) * a.scale


def _plain(v: float) -> float | int:
    """Integral values as ints, so JSON and URLs stay short."""
    return int(v) if float(v).is_integer() else float(v)

"""Several datasets -> one Neuroglancer state, and its URL."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterable, Mapping

from urllib.parse import quote

from volumes import Dataset, Location, SourceError, open_dataset, strip_scheme

from . import registry
from .kinds import infer_kind
from .layers import LayerPlan, add_source, apply_affine, build_layer, relabel, source_url
from .placement import adopt_placement, describe_voxel, is_physical, is_unitless
from .viewable import choose_view, refusal, require_viewable
from .urls import default_viewer, is_ngserve, origin_of, state_url, view_url

LAYOUTS = ("xy", "xz", "yz", "3d", "4panel", "xy-3d", "xz-3d", "yz-3d")
PANEL_PIXELS = 350  # a 4panel view in a ~1000x700 window; the zoom fits the data in one panel
_DISPLAY_FIRST = ("x", "y", "z")


class State:
    """A Neuroglancer state assembled layer by layer.

    ``served_at`` maps local folders to the URL that serves them (for local
    sources); http(s) sources are used as they are.  ``ngserve`` is the base URL of the
    ngserve those URLs are on, when it is not at the root of its origin (``/-/open`` knows it).
    """

    def __init__(
        self,
        *,
        layout: str = "4panel",
        position: Iterable[float] | None = None,
        viewer: str | None = None,
        served_at: Mapping[str, str] | None = None,
        ngserve: str | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.position = list(position) if position is not None else None
        self.viewer = viewer
        self.served_at = {str(Path(k).expanduser().resolve()): v.rstrip("/") for k, v in (served_at or {}).items()}
        self.ngserve = ngserve.rstrip("/") if ngserve else None
        self.plans: list[LayerPlan] = []
        self.notes: list[str] = []  # what the last to_json() could not decide, for the user to read
        self._tables: dict[str, str] = {}  # segment table -> URL of its written properties
        self._servers: list[dict] | None = None  # running ngserve servers, for local paths (see registry)

    # -- building -------------------------------------------------------------------
    def add(
        self,
        source: str | os.PathLike | Dataset,
        *,
        url: str | None = None,
        link: str | Mapping[str, str] | None = None,
        **options,
    ) -> LayerPlan:
        """Add one layer for ``source`` (path, URL or opened Dataset); ``options`` as :func:`build_layer`.

        ``link`` (annotation layers) names the segmentation layer the relationships follow, or maps
        relationship ids to layer names; by default they are matched (see :meth:`_link_annotations`).
        ``segment_table`` (segmentation layers) is a table of segment names and properties, written
        beside itself and attached as a source (see :mod:`ngstate.segment_table`).
        """
        segment_table = options.pop("segment_table", None)
        ds = source if isinstance(source, Dataset) else open_dataset(source)
        view, _ = choose_view(ds)
        served = self._on_ngserve(ds, url) if view != "native" else None
        if served is None:  # its own URL, or the refusal (in build_layer) when that cannot show it
            require_viewable(ds)  # before public_url: where it is served does not matter then
            plan = build_layer(ds, url or self.public_url(ds.location), **options)
        else:
            plan = self._through_view(ds, view, *served, options)
        plan.link = link
        if plan.kind == "segmentation" and segment_table is not None:
            add_source(plan.layer, "precomputed://" + self._segment_table_url(segment_table))
        if plan.kind == "segmentation" and ds.extras.get("_image_label"):
            self._attach_image_label(plan, ds, url, names=segment_table is None)
        if plan.kind == "segmentation":
            self._attach_prepared(plan, ds, url)
            self._attach_meshes(plan, ds, url)
        taken = {p.name for p in self.plans}
        base, n = plan.name, 2
        while plan.name in taken:
            plan.layer["name"] = f"{base} {n}"
            n += 1
        self.plans.append(plan)
        return plan

    def _segment_table_url(self, table: str | os.PathLike) -> str:
        """Where the viewer reads the segment properties of ``table``, written beside it once per state."""
        from .segment_table import SUFFIX, write_segment_properties

        key = str(Path(table).expanduser().resolve())
        if key not in self._tables:
            try:  # before writing: nothing is left beside a table no viewer could read
                url = self.public_url(Location(key)) + SUFFIX
            except ValueError:
                raise ValueError(
                    f"{table}: the segment table must sit in a folder an ngserve serves (or give --served-at)"
                ) from None
            write_segment_properties(key)
            self._tables[key] = url
        return self._tables[key]

    def _attach_image_label(self, plan: LayerPlan, ds: Dataset, url: str | None, names: bool = True) -> None:
        """OME label ``colors`` as ``segmentColors``, and ``properties`` (names, tags) as a
        ``neuroglancer_segment_properties`` source from the serving ngserve's
        ``/-/segment_properties/`` view: the client ignores both in OME metadata.  Metadata that
        cannot be presented is left out rather than keep the labels from showing.  ``names=False``:
        a segment table gives the names instead."""
        from volumes.segment_properties import colors_of, from_image_label

        image_label = ds.extras["_image_label"]
        try:
            colors = colors_of(image_label, str(ds.location))
        except SourceError:
            colors = {}
        if colors:
            plan.layer["segmentColors"] = colors
        try:
            has_names = names and from_image_label(image_label, str(ds.location)) is not None
        except SourceError:
            has_names = False
        served = self._on_ngserve(ds, url) if has_names else None
        if served is not None:
            shown, _, query = served[1].partition("?")
            base = self.ngserve if self.ngserve and shown.startswith(self.ngserve + "/") else None
            props = view_url(shown.rstrip("/"), "segment_properties", base) + ("?" + query if query else "")
            add_source(plan.layer, "precomputed://" + props)

    def _attach_prepared(self, plan: LayerPlan, ds: Dataset, url: str | None) -> None:
        """The finished ``ngserve mesh`` / ``ngserve skeleton`` folders beside local labels
        (``<labels>.mesh``, ``<labels>.skeletons``) as more sources of the layer, at the labels' URL
        plus the suffix (behind the same token, with the same query)."""
        if ds.location.is_http or ds.format == "precomputed":  # precomputed labels name theirs in their info
            return
        from meshes.prepare import SUFFIXES, prepared_folder

        found = [kind for kind in SUFFIXES if prepared_folder(ds.location.root, kind) is not None]
        if not found:
            return
        try:
            shown, _, query = (url or self.public_url(ds.location)).partition("?")
        except ValueError:
            return  # not served anywhere
        for kind in found:
            add_source(plan.layer, "precomputed://" + shown.rstrip("/") + SUFFIXES[kind] + ("?" + query if query else ""))
            plan.prepared.add(kind)

    def _attach_meshes(self, plan: LayerPlan, ds: Dataset, url: str | None) -> None:
        """The serving ngserve's ``/-/mesh/`` view as one more source, so the 3-D panel shows the
        selected segments with no preparation.  Its coordinates are x, y, z in nanometres, which the
        client matches to the layer's dimensions by name: attached only when the layer has x, y and z
        (an OME label image) and its labels are integers."""
        names = {a.name for a in plan.dataset.axes if a.type == "space"}
        if not {"x", "y", "z"} <= names or not (ds.dtype or "").startswith(("uint", "int")):
            return
        if ds.extras.get("mesh") or plan.dataset.extras.get("mesh"):
            return  # meshes of its own, or a translated label volume's info names /-/mesh/ already
        if "mesh" in plan.prepared:
            return  # ngserve mesh wrote them ahead of time: all segments, no waiting
        served = self._on_ngserve(ds, url)
        if served is None:
            return
        shown, _, query = served[1].partition("?")
        base = self.ngserve if self.ngserve and shown.startswith(self.ngserve + "/") else None
        add_source(plan.layer, "precomputed://" + view_url(shown.rstrip("/"), "mesh", base) + ("?" + query if query else ""))

    def _on_ngserve(self, ds: Dataset, url: str | None) -> tuple[str, str] | None:
        """(URL to read ``ds`` at, URL the viewer reads it at) when an ngserve serves it, else None."""
        try:
            shown = url or self.public_url(ds.location)
        except ValueError:
            return None  # not served anywhere
        read = ds.location.root + ds.location.query_suffix if ds.location.is_http else shown
        origin = origin_of(read)
        return (read, shown) if origin is not None and is_ngserve(origin) else None

    def _through_view(self, ds: Dataset, view: str | None, read: str, shown: str, options: dict) -> LayerPlan:
        """The layer showing ``ds``, which an ngserve serves, through its ``/-/<view>/`` view
        (the one line saying why when no view can show it).

        The layer is built from the view's own metadata, read through the view's URL: it is
        what the client will read, so dimensions, voxel size and offsets are the client's.
        Kind, name and contrast come from the source (its statistics, any dtype).  A repaired view
        that cannot be read, or whose metadata the client still cannot show, gives way to the
        translated one.
        """
        if view is None:
            raise SourceError(refusal(ds))
        shown_base = self.ngserve if self.ngserve and shown.startswith(self.ngserve + "/") else None
        if view != "precomputed":
            try:
                vds = open_dataset(view_url(read, view))
                if choose_view(vds)[0] != "native":
                    raise SourceError("the repaired metadata is still not viewable")
            except SourceError:  # the repair does not suffice (or cannot be made): translate instead
                view = "precomputed"
        if view == "precomputed" and ds.extras.get("hdf5_dataset"):  # the view names it by path
            read, shown = (_inside_hdf5(u, ds.extras["hdf5_dataset"]) for u in (read, shown))
        if view == "precomputed":
            vds = open_dataset("precomputed://" + view_url(read, view))
            _carry_remainder(ds, vds)
        options = dict(options)
        if options.get("kind") is None:
            options["kind"] = infer_kind(ds)[0]
        options["name"] = options.get("name") or ds.name
        if options["kind"] == "image" and options.get("contrast") is None:
            from volumes import contrast_range  # lazily: it loads numpy and tensorstore

            # The source's statistics: through a repaired view, which reads its very chunks the way the
            # metadata should have said (0.2/0.3's nested keys); a translated view's only differ.
            stats = ds if view == "precomputed" else vds
            options["contrast"] = list(ds.windows[0]) if ds.windows else contrast_range(stats)
        plan = build_layer(vds, view_url(shown, view, shown_base), **options)
        if view == "zarr" and ds.extras.get("affine"):
            apply_affine(plan, ds.extras["affine"])
        plan.view = view
        return plan

    def public_url(self, loc: Location) -> str:
        """How a viewer reaches ``loc``: itself (query string included) when http(s), else through
        ``served_at``, else through a running ngserve that serves its folder (see :mod:`ngstate.registry`)."""
        if loc.is_http:
            return loc.root + loc.query_suffix
        for folder, base in sorted(self.served_at.items(), key=lambda kv: -len(kv[0])):
            if loc.root == folder or loc.root.startswith(folder.rstrip("/") + "/"):
                rel = loc.root[len(folder):].strip("/")
                return base + ("/" + "/".join(quote(p) for p in rel.split("/")) if rel else "")
        if self._servers is None:  # asked once per state: each check waits on the servers' /-/health
            self._servers = registry.running()
        found = registry.serving_url(loc.root, self._servers)
        if found is not None:
            return found
        raise ValueError(
            f"{loc.root}: no running ngserve serves this local path; start one with "
            f"`ngserve serve {Path(loc.root).parent}`, then link again"
        )

    # -- output -----------------------------------------------------------------------
    def to_json(self) -> dict:
        """The state as Neuroglancer's JSON."""
        if not self.plans:
            raise ValueError("a state needs at least one layer")
        self.notes = []
        plans = self._placed()
        dims: dict[str, list] = {}
        bounds: dict[str, list[float]] = {}
        first: dict[str, float] = {}
        for plan in plans:
            for name, scale_unit in plan.dims.items():
                dims.setdefault(name, scale_unit)
                lo, hi = plan.bounds[name]
                if name in bounds:
                    bounds[name] = [min(bounds[name][0], lo), max(bounds[name][1], hi)]
                else:
                    bounds[name] = [lo, hi]
                if name in plan.first:
                    first.setdefault(name, plan.first[name])
        order = [n for n in _DISPLAY_FIRST if n in dims] + [n for n in dims if n not in _DISPLAY_FIRST]
        dims = {n: dims[n] for n in order}
        state: dict = {"dimensions": dims}
        if self.position is not None:
            if len(self.position) != len(dims):
                raise ValueError(f"position has {len(self.position)} values for dimensions {', '.join(dims)}")
            state["position"] = [float(v) for v in self.position]
        else:
            # The centre of everything, except time: its first sample.
            state["position"] = [_tidy((first[n] if n in first else sum(bounds[n]) / 2) / dims[n][0]) for n in dims]
        spatial = [n for n in dims if dims[n][1] == "m"][:3] or list(dims)[:3]
        canonical = min(dims[n][0] for n in spatial)
        extent = max(bounds[n][1] - bounds[n][0] for n in spatial) / canonical
        state["crossSectionScale"] = _tidy(max(extent / PANEL_PIXELS, 1e-3))
        state["projectionScale"] = _tidy(max(extent * 1.5, 1.0))
        state["layers"] = [dict(p.layer) for p in plans]
        self._link_annotations(state["layers"])
        state["layout"] = self.layout
        return state

    def _placed(self) -> list[LayerPlan]:
        """The plans, with each layer that has no units (and none given) among physical layers
        placed like a physical layer of the same spatial shape: its axis names and voxel size.
        Otherwise its voxels would be metres beside nanometres; ``notes`` says what was done."""
        physical = [p for p in self.plans if p.kind != "annotation" and is_physical(p.dataset)]
        if not physical:
            return list(self.plans)
        placed = []
        for plan in self.plans:
            if plan.kind == "annotation" or plan.placed or plan.view == "zarr" and plan.dataset.extras.get("affine") \
                    or not is_unitless(plan.dataset):
                placed.append(plan)
                continue
            for like in physical:
                ds = adopt_placement(plan.dataset, like.dataset)
                if ds is not None:
                    placed.append(relabel(plan, ds))
                    self.notes.append(f"layer {plan.name!r} has no units: placed like layer {like.name!r} "
                                      f"(same shape), {describe_voxel(ds)} voxels; give --voxel-size to change")
                    break
            else:
                placed.append(plan)
                self.notes.append(f"layer {plan.name!r} has no units and no physical layer has its shape: "
                                  "give it --voxel-size and --units to place it")
        return placed

    def _link_annotations(self, layers: list[dict]) -> None:
        """Link each relationship of each annotation layer to one segmentation layer.

        Per relationship, the first that applies: the layer given with ``link``; the segmentation
        layer whose name (or dataset name) is the relationship id; the only segmentation layer.
        Otherwise the relationship stays unlinked, and ``notes`` says so when there were segmentation
        layers to choose from.
        """
        segs = [p for p in self.plans if p.kind == "segmentation"]
        for plan, layer in zip(self.plans, layers):
            if plan.kind != "annotation":
                continue
            rels = plan.dataset.extras.get("relationships") or []
            explicit = {r: plan.link for r in rels} if isinstance(plan.link, str) else dict(plan.link or {})
            if explicit.keys() - set(rels):
                unknown = ", ".join(sorted(explicit.keys() - set(rels)))
                raise ValueError(f"layer {plan.name!r} has no relationship {unknown} (it has: {', '.join(rels) or 'none'})")
            linked = {}
            for rel in rels:
                target = explicit.get(rel) or _matching_segmentation(rel, segs)
                if target is None:
                    if segs:  # several to choose from and no rule picked one: say so, rather than guess
                        self.notes.append(f"layer {plan.name!r}: relationship {rel!r} is linked to no layer: "
                                          f"{len(segs)} segmentation layers, none named {rel!r}")
                elif target not in {p.name for p in segs}:
                    raise ValueError(f"layer {plan.name!r}: no segmentation layer named {target!r} to link {rel!r} to")
                else:
                    linked[rel] = target
            if linked:
                layer["linkedSegmentationLayer"] = linked

    def default_viewer(self) -> str:
        return self.viewer or default_viewer([_url_of(p.layer["source"]) for p in self.plans])

    def to_url(self, viewer: str | None = None) -> str:
        """The viewer URL with the state in its ``#!`` fragment."""
        return state_url(self.to_json(), viewer or self.default_viewer())

    def __repr__(self) -> str:
        try:
            return f"<ngstate.State {describe(self.to_json())}>"
        except ValueError as exc:  # no layer yet, or layers that cannot be put together: say so
            return f"<ngstate.State with {len(self.plans)} layers (not a valid state: {exc})>"

    def _repr_html_(self) -> str:
        url = self.to_url()
        names = ", ".join(p.name for p in self.plans)
        return f'<a href="{html.escape(url)}" target="_blank">Neuroglancer: {html.escape(names)}</a>'


def describe(state: dict) -> str:
    """What a state holds, in one line: each layer's name, type and source, the position, the layout."""
    layers = []
    for layer in state.get("layers") or []:
        try:
            url = source_url(layer["source"])
        except (KeyError, TypeError, IndexError):  # a hand-written state: a layer without a readable source
            url = "no source"
        layers.append(f"{layer.get('name', '?')!r} ({layer.get('type', '?')}: {url})")
    dims = list(state.get("dimensions") or {})
    position = state.get("position")
    try:
        where = ", ".join(f"{d}={_tidy(v)}" for d, v in zip(dims, position)) if position else "default"
    except (TypeError, ValueError):
        where = str(position)
    shown = "; ".join(layers) or "none"
    return f"{len(layers)} layer{'s' * (len(layers) != 1)}: {shown}; position {where}; layout {state.get('layout', 'default')}"


def _matching_segmentation(rel: str, segs: list[LayerPlan]) -> str | None:
    """The segmentation layer named (or whose dataset is named) ``rel``, else the only one, else None."""
    named = [p.name for p in segs if rel in (p.name, p.dataset.name)]
    return named[0] if named else segs[0].name if len(segs) == 1 else None


def _tidy(v: float) -> float:
    """Drop float noise (95.49999999999999 -> 95.5) so states and URLs stay readable."""
    return float(f"{v:.9g}")


def _url_of(source: str | dict | list) -> str:
    return strip_scheme(source_url(source))


def _carry_remainder(ds: Dataset, vds: Dataset) -> None:
    """Give the translated view's dataset the sub-voxel part of the source's offset, which its
    ``voxel_offset`` rounds away: the layer's source transform then places the data exactly."""
    from volumes.present_precomputed import offset_remainder

    names = [a.name for a in vds.axes]
    for axis, part in zip("xyz", offset_remainder(ds)):
        if part and axis in names:
            vds.offset[names.index(axis)] += part


def _inside_hdf5(url: str, inner: str) -> str:
    """``http://h/f.h5`` (or ``…/f.h5:/g/d``) and ``/g/d`` -> ``http://h/f.h5/g/d``: how ngserve's
    views name a dataset inside an HDF5 file (the query string, e.g. a token, stays last)."""
    from volumes.hdf5 import split_hdf5

    path, _, query = url.partition("?")
    found = split_hdf5(path)
    path = (found[0] if found else path).rstrip("/")
    path += "".join("/" + quote(part) for part in inner.strip("/").split("/"))
    return path + ("?" + query if query else "")

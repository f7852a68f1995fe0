"""Correct Neuroglancer states and links for datasets, from Python and the CLI.

>>> import ngstate
>>> ngstate.link("http://host:9000/data/image.ome.zarr", "http://host:9000/data/labels.zarr")
"""

from __future__ import annotations

import os
from typing import Any, Sequence
from urllib.parse import quote

from volumes import Dataset, Location, naming, open_dataset, open_datasets

from .kinds import infer_kind
from .layers import LayerPlan, build_layer
from .notebook import Viewer, show
from .state import LAYOUTS, State, describe
from .urls import DEMO_VIEWER, NGSERVE_VIEWER_PATH, encode_fragment, is_ngserve, origin_of, parse_url, shorten, view_url
from .viewable import choose_view, viewer_problem

_PER_LAYER = {
    "names": "name", "kinds": "kind", "visible": "visible", "opacity": "opacity", "contrast": "contrast",
    "urls": "url",  # the URL a viewer reads each source at (e.g. with a share token), instead of the derived one
    "links": "link",  # annotation layers: the segmentation layer (or relationship -> layer) to link
    "voxel_size": "voxel_size", "units": "units",  # placement the user gives (see ngstate.placement)
}


def build_state(sources: Sequence[Any], **options) -> State:
    """A :class:`State` with one layer per source; an OME-Zarr ``labels/`` group gives one
    segmentation layer per label image it lists, each with that source's options.

    An OME-Zarr image opened alone (none of its labels among ``sources``) also brings each label
    image its ``labels/`` group lists, as a segmentation layer; ``labels=False`` turns that off.

    Options: ``layout``, ``position``, ``viewer``, ``served_at`` (local folder ->
    URL), ``ngserve`` (the base URL of the ngserve serving the sources, when not its origin),
    ``segments`` (ids selected in every segmentation layer), ``segment_table`` (a CSV/Parquet/JSON
    table of segment ``id``s and names, tags and numbers for every segmentation layer, written beside
    itself as ``<table>.segment_properties/``; see :mod:`ngstate.segment_table`), ``labels``, and per-layer
    ``names``, ``kinds``, ``visible``, ``opacity``, ``contrast``, ``urls``, ``links``: a list
    aligned with ``sources``, or one value for all (``contrast`` is [lo, hi] or False; ``links``
    is a segmentation layer name or a relationship -> layer name mapping, see :meth:`State.add`),
    ``voxel_size`` (one number, or Z,Y,X; a list of those per source) and ``units`` (e.g. ``"nm"``;
    per source as a list): see :func:`ngstate.placement.with_voxel_size`.  A layer without units
    next to physical ones takes the voxel size of one of the same shape (see :meth:`State.to_json`).
    """
    segments = options.pop("segments", None)
    segment_table = options.pop("segment_table", None)
    labels = options.pop("labels", True)
    per_layer = {key: options.pop(key) for key in list(options) if key in _PER_LAYER}
    state = State(**options)
    for i, source in enumerate(sources):
        layer_opts: dict = {"segments": segments, "segment_table": segment_table}
        for key, value in per_layer.items():
            if isinstance(value, (list, tuple)) and not _one_for_all(key, value):
                if len(value) != len(sources):
                    raise ValueError(f"{key} has {len(value)} entries for {len(sources)} sources")
                value = value[i]
            if value is not None:
                layer_opts[_PER_LAYER[key]] = value
        url = layer_opts.pop("url", None)
        try:
            datasets = {"": source} if isinstance(source, Dataset) else open_datasets(source)
            for rel, ds in datasets.items():
                state.add(ds, url=_below(url, rel) if url else None, **layer_opts)
            if labels and set(datasets) == {""}:
                # The image's own options (name, contrast, …) are not the labels'; selected segments are.
                for rel, ds in _labels_of(datasets[""], sources, state).items():
                    state.add(ds, url=_below(url, rel) if url else None, segments=segments, segment_table=segment_table)
        except ValueError as exc:  # with several sources, the line must say which one failed
            raise naming(str(source.location) if isinstance(source, Dataset) else source, exc) from exc
    return state


def _labels_of(image: Dataset, sources: Sequence[Any], state: State) -> dict[str, Dataset]:
    """The label images an OME-Zarr image's ``labels/`` group lists, by path below the image,
    unless the image is not opened alone: some source is already inside its ``labels/`` (as a
    path or as a URL; a local path and the URL that serves it are the same place)."""
    names = (image.extras.get("labels") or []) if image.format == "ome-zarr" else []
    if not names:
        return {}
    group = image.location.child("labels")
    places = {group.root, _url_or_none(state, group)} - {None}
    for source in sources:
        loc = source.location if isinstance(source, Dataset) else source if isinstance(source, Location) else Location(source)
        if any(p and (p == place or p.startswith(place + "/")) for p in (loc.root, _url_or_none(state, loc))
               for place in places):
            return {}
    return {f"labels/{name}": open_dataset(group.child(name)) for name in names}


def _url_or_none(state: State, loc: Location) -> str | None:
    try:
        return state.public_url(loc).split("?", 1)[0].rstrip("/")
    except ValueError:  # a local path nothing serves: its own error comes when it is added
        return None


def _below(url: str, rel: str) -> str:
    """The URL of ``rel`` below ``url``, keeping a query string (a token) at the end."""
    if not rel:
        return url
    base, sep, query = url.partition("?")
    return base.rstrip("/") + "/" + quote(rel) + sep + query


def _one_for_all(key: str, value: Sequence) -> bool:
    """Whether a list value of a per-layer option is one value for every layer: a contrast range, a voxel size."""
    numbers = all(isinstance(v, (int, float)) for v in value)
    return (key == "contrast" and len(value) == 2 and numbers) or (key == "voxel_size" and numbers)


def link(*sources: str | os.PathLike, viewer: str | None = None, **options) -> str:
    """The viewer URL showing ``sources`` (paths or URLs), one layer each; see :func:`build_state`."""
    return build_state(sources, viewer=viewer, **options).to_url()


__all__ = [
    "DEMO_VIEWER", "LAYOUTS", "LayerPlan", "NGSERVE_VIEWER_PATH", "State", "build_layer", "build_state",
    "Viewer", "choose_view", "describe", "encode_fragment", "infer_kind", "is_ngserve", "link", "origin_of",
    "parse_url", "shorten", "show", "view_url", "viewer_problem",
]

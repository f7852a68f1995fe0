"""Correct Neuroglancer states and links for datasets, from Python and the CLI.

>>> import ngstate
>>> ngstate.link("http://host:9000/data/image.ome.zarr", "http://host:9000/data/labels.zarr")
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from .kinds import infer_kind
from .layers import LayerPlan, build_layer
from .state import LAYOUTS, State
from .urls import DEMO_VIEWER, NGSERVE_VIEWER_PATH, encode_fragment, is_ngserve, origin_of, parse_url, shorten

_PER_LAYER = {
    "names": "name", "kinds": "kind", "visible": "visible", "opacity": "opacity", "contrast": "contrast",
    "urls": "url",  # the URL a viewer reads each source at (e.g. with a share token), instead of the derived one
    "links": "link",  # annotation layers: the segmentation layer (or relationship -> layer) to link
}


def build_state(sources: Sequence[Any], **options) -> State:
    """A :class:`State` with one layer per source.

    Options: ``layout``, ``position``, ``viewer``, ``served_at`` (local folder ->
    URL), ``segments`` (ids selected in every segmentation layer), and per-layer
    ``names``, ``kinds``, ``visible``, ``opacity``, ``contrast``, ``urls``, ``links``: a list
    aligned with ``sources``, or one value for all (``contrast`` is [lo, hi] or False; ``links``
    is a segmentation layer name or a relationship -> layer name mapping, see :meth:`State.add`).
    """
    segments = options.pop("segments", None)
    per_layer = {key: options.pop(key) for key in list(options) if key in _PER_LAYER}
    state = State(**options)
    for i, source in enumerate(sources):
        layer_opts: dict = {"segments": segments}
        for key, value in per_layer.items():
            if isinstance(value, (list, tuple)) and not (key == "contrast" and _is_range(value)):
                if len(value) != len(sources):
                    raise ValueError(f"{key} has {len(value)} entries for {len(sources)} sources")
                value = value[i]
            if value is not None:
                layer_opts[_PER_LAYER[key]] = value
        state.add(source, **layer_opts)
    return state


def _is_range(value) -> bool:
    return len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def link(*sources: str | os.PathLike, viewer: str | None = None, **options) -> str:
    """The viewer URL showing ``sources`` (paths or URLs), one layer each; see :func:`build_state`."""
    return build_state(sources, viewer=viewer, **options).to_url()


__all__ = [
    "DEMO_VIEWER", "LAYOUTS", "LayerPlan", "NGSERVE_VIEWER_PATH", "State", "build_layer", "build_state",
    "encode_fragment", "infer_kind", "is_ngserve", "link", "origin_of", "parse_url", "shorten",
]

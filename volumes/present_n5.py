"""N5 attributes as Neuroglancer's N5 reader needs them: the presenter of the ``/-/n5/`` view.

Pure functions from raw ``attributes.json`` objects to repaired ones; no I/O, so
the server reads the files (through its storage) and these decide.

What Neuroglancer's reader (``src/datasource/n5/frontend.ts``) does, and so what
this serves:

* it merges the ``attributes.json`` of every ancestor into a node's, the deeper
  object winning key by key (``Object.assign``); we serve the same merge, so
  tensorstore and ngserve's own reader see what the viewer sees;
* a group opens as a multiscale only with a ``downsamplingFactors`` list (or
  n5-viewer's ``scales``) naming ``s0``, ``s1``, …, or when every level ``s<i>``
  it finds by listing carries its own ``downsamplingFactors``;
* voxel size comes from ``resolution`` + ``units`` (or n5-viewer's
  ``pixelResolution``, which overrides ``resolution``), default 1 nm;
* it reads nothing of COSEM's ``multiscales`` or per-level ``transform``.

So a COSEM group gets ``downsamplingFactors`` (per level and as the group's
list), ``resolution``, ``units`` and ``axes`` from its transforms.  N5 has no
offset attribute: a COSEM ``translate`` comes back in :attr:`N5Presented.offset`
for the caller to put in the layer's source transform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from .location import SourceError
from .units import n5_unit

_LEVEL = re.compile(r"^s(0|[1-9][0-9]*)$")


@dataclass
class N5Presented:
    """A node's repaired attributes, and what N5 attributes cannot say."""

    attributes: dict
    # Position of the base level's voxel (0, 0, …) corner in base voxels, N5 (x-first) order:
    # from a COSEM ``translate``, which N5 attributes cannot carry.  None when there is none.
    offset: list[float] | None = None
    notes: list[str] = field(default_factory=list)


def merge_attributes(chain: Iterable[dict | None]) -> dict:
    """Root-first ``attributes.json`` objects merged as Neuroglancer does: deeper keys win."""
    merged: dict = {}
    for attrs in chain:
        if isinstance(attrs, dict):
            merged.update(attrs)
    return merged


def is_array(attrs: dict | None) -> bool:
    return isinstance(attrs, dict) and "dimensions" in attrs and "dataType" in attrs


def level_paths(group: dict, child_folders: Iterable[str] = ()) -> list[str]:
    """The levels of a multiscale group, finest first: COSEM ``multiscales`` datasets, else
    ``s0``, ``s1``, … as a factors list counts them, else as found among ``child_folders``."""
    ms = group.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], dict) and isinstance(ms[0].get("datasets"), list):
        paths = [d.get("path") for d in ms[0]["datasets"] if isinstance(d, dict)]
        if paths and all(isinstance(p, str) and p for p in paths):
            return paths
    for key in ("scales", "downsamplingFactors"):
        listed = group.get(key)
        if isinstance(listed, list) and listed and isinstance(listed[0], list):
            return [f"s{i}" for i in range(len(listed))]
    found = sorted((int(m.group(1)) for m in map(_LEVEL.match, child_folders) if m))
    out = []
    for i in found:  # Neuroglancer's listing keeps s0…sN; a gap ends the pyramid it can use
        if i != len(out):
            break
        out.append(f"s{i}")
    return out


def cosem_transform(attrs: dict | None, rank: int) -> dict | None:
    """A COSEM ``transform`` in N5 (x-first) order: scale, translate, units, axes; None without one."""
    t = attrs.get("transform") if isinstance(attrs, dict) else None
    if not isinstance(t, dict) or not isinstance(t.get("scale"), list) or len(t["scale"]) != rank:
        return None
    out = {
        "scale": [float(s) for s in t["scale"]],
        "translate": [float(x) for x in (t.get("translate") or [0.0] * rank)],
        "units": list(t.get("units") or ["nm"] * rank),
        "axes": list(t["axes"]) if isinstance(t.get("axes"), list) else None,
    }
    if t.get("ordering", "C") == "C":  # COSEM lists C order; N5 dimensions are x first
        out = {k: v[::-1] if isinstance(v, list) else v for k, v in out.items()}
    if any(s <= 0 for s in out["scale"]) or len(out["translate"]) != rank or len(out["units"]) != rank:
        raise SourceError("COSEM transform: scale must be positive, and translate and units one per axis")
    return out


def group_dataset(group: dict, index: int) -> dict:
    """The ``index``-th dataset of a COSEM ``multiscales`` list (its ``transform``), else {}."""
    try:
        return group["multiscales"][0]["datasets"][index]
    except (TypeError, IndexError, KeyError):
        return {}


def _ratio_factor(base: int, size: int) -> float:
    """The downsampling factor that turns ``base`` voxels into ``size``: an integer when one
    explains the shape (floor or ceil of the division): one that divides exactly, else a power
    of two (10 -> 3 is 4 with ceil as well as 3 with floor; pyramids halve), else the plain ratio."""
    ratio = base / size
    fits = [n for n in {max(1, int(ratio)), int(ratio) + 1} if base // n == size or -(-base // n) == size]
    if fits:
        return float(max(fits, key=lambda n: (base == n * size, n & (n - 1) == 0, -abs(n - ratio))))
    return ratio


def level_factors(group: dict, levels: list[tuple[str, dict]], rank: int) -> list[list[float]]:
    """Each level's downsampling factors (x first): its own ``downsamplingFactors``, else the ratio
    of its COSEM scale to the finest level's, else what the shapes imply."""
    base = cosem_transform(levels[0][1], rank) or cosem_transform(group_dataset(group, 0), rank)
    out = []
    for i, (_, attrs) in enumerate(levels):
        own = attrs.get("downsamplingFactors")
        if isinstance(own, list) and len(own) == rank and not isinstance(own[0], list):
            out.append([float(f) for f in own])
            continue
        cosem = cosem_transform(attrs, rank) or cosem_transform(group_dataset(group, i), rank)
        if cosem and base:
            out.append([a / b for a, b in zip(cosem["scale"], base["scale"])])
        else:
            out.append([_ratio_factor(b, s) for b, s in zip(levels[0][1]["dimensions"], attrs["dimensions"])])
    return out


def _space(own: dict, group: dict, level0: dict, rank: int) -> tuple[dict, list[float] | None]:
    """Neuroglancer's ``resolution``/``units``/``axes`` for the group, derived from its finest
    level; and the COSEM offset.  Empty when the group itself (``own``, not an ancestor) states
    its voxel size: the levels' transforms are more specific than what the group inherits."""
    if "resolution" in own or "pixelResolution" in own:
        return {}, None
    cosem = cosem_transform(level0, rank) or cosem_transform(group_dataset(group, 0), rank)
    derived: dict = {}
    offset = None
    if cosem:
        res, units = [], []
        for s, u in zip(cosem["scale"], cosem["units"]):
            symbol, factor = _unit(u)
            res.append(s * factor)
            units.append(symbol)
        derived = {"resolution": res, "units": units}
        if cosem["axes"] and len(cosem["axes"]) == rank and "axes" not in own:
            derived["axes"] = cosem["axes"]
        # COSEM translations are voxel centres (as in OME); Neuroglancer's voxel origin is its corner.
        offset = [t / s - 0.5 for t, s in zip(cosem["translate"], cosem["scale"])]
    elif isinstance(level0.get("pixelResolution"), dict):  # n5-viewer, stated on s0 only
        pr = level0["pixelResolution"]
        dims = pr.get("dimensions")
        if isinstance(dims, list) and len(dims) == rank:
            symbol, factor = _unit(pr.get("unit", "nm"))
            derived = {"resolution": [float(d) * factor for d in dims], "units": [symbol] * rank}
    elif isinstance(level0.get("resolution"), list):
        derived = {"resolution": level0["resolution"]}
        if isinstance(level0.get("units"), list):
            derived["units"] = level0["units"]
    return derived, offset


def _unit(name: str) -> tuple[str, float]:
    try:
        return n5_unit(name)
    except ValueError:
        raise SourceError(f"N5 unit {name!r} is not one Neuroglancer knows") from None


def present_n5(chain: list[dict | None], levels: list[tuple[str, dict]] | None = None, level: str | None = None) -> N5Presented:
    """The repaired ``attributes.json`` of a node.

    ``chain`` holds the raw attributes of the mount root, each folder down, and the node
    itself last (None where a folder has none).  ``levels`` are the (path, attributes) of
    the multiscale group's levels, finest first: the node's own when it is the group
    (``level`` None), its parent's when it is the level ``level`` of that group.  Without
    ``levels`` the node gets the plain merge.
    """
    merged = merge_attributes(chain)
    if not levels:
        node = chain[-1] if chain else None
        if is_array(node) and cosem_transform(node, len(node["dimensions"])):  # a lone COSEM array
            space, offset = _space(node, merged, node, len(node["dimensions"]))
            out = {**merged, **space}
            if "resolution" in space:
                out.pop("pixelResolution", None)
            return N5Presented(out, offset)
        return N5Presented(merged)
    arrays = [(p, a) for p, a in levels if is_array(a)]
    if len(arrays) != len(levels):
        missing = [p for p, a in levels if not is_array(a)]
        raise SourceError(f"N5 multiscale level {missing[0]} has no array attributes (dimensions, dataType)")
    rank = len(arrays[0][1]["dimensions"])
    if any(len(a["dimensions"]) != rank for _, a in arrays):
        raise SourceError("N5 multiscale levels differ in rank")
    group_chain = chain[:-1] if level is not None else chain
    group = merge_attributes(group_chain)
    own_group = (group_chain[-1] if group_chain else None) or {}
    factors = level_factors(group, levels, rank)
    space, offset = _space(own_group, group, levels[0][1], rank)
    notes = []
    named = [p for p, _ in levels] == [f"s{i}" for i in range(len(levels))]
    if not named:
        notes.append("levels are not named s0, s1, …: Neuroglancer's N5 reader finds only levels so named")
    derived = dict(space)
    if level is None:
        if named and not isinstance(group.get("scales"), list):
            derived["downsamplingFactors"] = factors
        out = {**merged, **derived}
    else:
        # A level carries the group's base voxel size and its own factors, as Neuroglancer's
        # convention has it: opened alone, it then shows at its true, coarser voxel size.
        derived["downsamplingFactors"] = factors[[p for p, _ in levels].index(level)]
        out = {**merged, **derived}
    if "resolution" in derived:
        out.pop("pixelResolution", None)  # Neuroglancer lets it override resolution
    if "downsamplingFactors" in derived and level is None:
        out.pop("scales", None)
    return N5Presented(out, offset, notes)

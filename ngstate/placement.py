"""Where a layer's voxels sit: voxel sizes and units the user gives, and unitless layers
placed beside physical ones.

Both work on the :class:`Dataset` a layer is built from, so the layer's source transform
(see :func:`ngstate.layers.source_spec`) tells the client the new placement: the data's own
metadata is never rewritten.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

from volumes import Axis, Dataset
from volumes.units import scale_by, si_unit

_ZYX = "zyx"


def space_axes(ds: Dataset) -> list[int]:
    """Indices of the global axes that may be spatial: not channels, not time (unnamed axes,
    ``d0``…, are of type "other")."""
    return [i for i, a in enumerate(ds.axes) if a.type in ("space", "other") and not a.is_local]


def _user_order(ds: Dataset, idx: list[int]) -> list[int]:
    """``idx`` in the order users give values: Z,Y,X by name when the axes are named so,
    else the dataset's own axis order (which is Z,Y,X for C-ordered arrays)."""
    names = [ds.axes[i].name for i in idx]
    wanted = list(_ZYX[-len(idx):]) if len(idx) <= 3 else []
    if wanted and sorted(names) == sorted(wanted):
        return [idx[names.index(n)] for n in wanted]
    return idx


def with_voxel_size(ds: Dataset, voxel_size: Sequence[float] | float | None = None,
                    units: str | None = None) -> Dataset:
    """``ds`` with the level-0 voxel size of its spatial axes set by the user.

    ``voxel_size`` is one value for every spatial axis or one per axis in Z,Y,X order, in
    ``units`` (an OME or SI unit name, default nanometres).  ``units`` alone names the unit of
    unitless axes (their numbers stay) and leaves physical sizes as they are.
    """
    if voxel_size is None and units is None:
        return ds
    idx = _user_order(ds, space_axes(ds))
    if not idx:
        raise ValueError(f"{ds.location} has no spatial axes to give a voxel size")
    try:
        unit, factor = si_unit(units if units is not None else "nm")
    except ValueError:
        raise ValueError(f"unknown unit {units}: give one such as nm, um, nanometer or micrometer") from None
    if unit != "m":
        raise ValueError(f"unit {units} is not a length")
    axes = list(ds.axes)
    if voxel_size is None:
        for i in idx:
            a = axes[i]
            axes[i] = replace(a, unit="m", scale=scale_by(a.scale, factor) if not a.unit else a.scale, type="space")
        return replace(ds, axes=axes)
    values = [float(voxel_size)] if isinstance(voxel_size, (int, float)) else [float(v) for v in voxel_size]
    if len(values) == 1:
        values *= len(idx)
    if len(values) != len(idx):
        names = ",".join(ds.axes[i].name for i in idx)
        raise ValueError(f"voxel size has {len(values)} values for the {len(idx)} spatial axes ({names}); "
                         "give one value or one per axis, Z,Y,X")
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"voxel size {v:g} is not a positive number")
    for i, v in zip(idx, values):
        axes[i] = replace(axes[i], unit="m", scale=scale_by(v, factor), type="space")
    return replace(ds, axes=axes)


def is_unitless(ds: Dataset) -> bool:
    idx = space_axes(ds)
    return bool(idx) and all(not ds.axes[i].unit for i in idx)


def is_physical(ds: Dataset) -> bool:
    idx = space_axes(ds)
    return bool(idx) and all(ds.axes[i].unit == "m" for i in idx)


def adopt_placement(ds: Dataset, like: Dataset) -> Dataset | None:
    """``ds`` (unitless) on the grid of ``like`` (physical) when both have the same spatial shape:
    its axis names, voxel size and offset (OME places voxel centres at whole numbers, plain
    arrays their corners), so the two overlay voxel for voxel; None when the shapes differ."""
    mine, theirs = space_axes(ds), space_axes(like)
    if len(mine) != len(theirs) or [ds.shape[i] for i in mine] != [like.shape[j] for j in theirs]:
        return None
    taken = {a.name for k, a in enumerate(ds.axes) if k not in mine}
    if taken & {like.axes[j].name for j in theirs}:
        return None  # the names are in use by the layer's other axes
    axes, offset = list(ds.axes), list(ds.offset)
    for i, j in zip(mine, theirs):
        other = like.axes[j]
        axes[i] = Axis(other.name, other.unit, other.scale, other.type)
        offset[i] = like.offset[j]
    return replace(ds, axes=axes, offset=offset)


def describe_voxel(ds: Dataset) -> str:
    """``4 × 4 × 40 nm`` (Z,Y,X), for notes."""
    idx = _user_order(ds, space_axes(ds))
    return " × ".join(f"{ds.axes[i].scale * 1e9:g}" for i in idx) + " nm"

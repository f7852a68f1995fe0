"""A label volume as meshing reads it: x, y, z levels, finest first, each read box by box.

Geometry.  Every position here is in level-0 voxel units with the corner
convention (voxel ``i`` spans ``[i, i + 1)``), absolute: the dataset's offset
is included, as the precomputed view places it.  A voxel ``j`` of a coarser
level with ``factors`` ``f`` spans ``[j * f, (j + 1) * f)``.  The levels are
the scales of :mod:`volumes.present_precomputed` (the dataset's own pyramid,
then the virtual scales it adds below a single-level volume), so a mesh's
levels of detail and the translated view show the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volumes import Dataset, SourceError

SCAN_VOXELS = 1 << 27  # a level is searched for a segment only while it has at most this many voxels
SLAB_VOXELS = 1 << 22  # voxels read at once while searching (32 MiB of uint64)
KEEP_VOXELS = 1 << 21  # a level this small is read once and kept in ``scans`` for later searches


class MeshError(SourceError):
    """The data cannot be meshed (not labels, channels, …); the message is one line saying why."""


@dataclass(frozen=True)
class LabelLevel:
    """One level: a lazy ``[x, y, z]`` uint store, its voxel box and its voxel size in level-0 voxels."""

    store: Any  # tensorstore (or anything indexable to arrays) with dimensions x, y, z
    lo: tuple[int, int, int]  # first voxel, in this level's voxels
    hi: tuple[int, int, int]  # one past the last voxel
    factors: tuple[float, float, float]  # level-0 voxels per voxel of this level, per axis


@dataclass(frozen=True)
class LabelPyramid:
    """The levels of a label volume (finest first) and the physical size of a level-0 voxel."""

    levels: list[LabelLevel]
    resolution: tuple[float, float, float]  # nm per level-0 voxel, x, y, z
    # Small levels as read by :meth:`find`, by level: the first search of a single-level volume
    # reads all of it (a virtual level is the downsampling of everything below it), later ones
    # none.  A caller may share one dict between pyramids of the same data (a server reopening it).
    scans: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "LabelPyramid":
        """The pyramid of a label dataset in any format :mod:`volumes` reads; MeshError for other data."""
        from volumes.present_precomputed import present

        presentation = present(ds)
        return cls.from_presentation(presentation)

    @classmethod
    def from_presentation(cls, presentation, scans: dict | None = None) -> "LabelPyramid":
        """The pyramid of a :class:`volumes.present_precomputed.Presentation` (shares its opened stores)."""
        where = presentation.dataset.location
        # Integer data of any kind can be labels (a uint16 TIFF shown as a segmentation layer).
        if not (presentation.dataset.dtype or "").startswith(("uint", "int")):
            raise MeshError(f"{where}: {presentation.dataset.dtype} image data has no segments to mesh; "
                            "meshes are made of label volumes (integer segment ids)")
        if presentation.num_channels != 1:
            raise MeshError(f"{where}: label volume with {presentation.num_channels} channels; mesh one channel")
        base = presentation.scales[0].resolution
        levels = []
        for scale in presentation.scales:
            view = presentation.view(scale.key)[..., 0]
            factors = tuple(_factor(r / b) for r, b in zip(scale.resolution, base))
            lo = tuple(scale.voxel_offset)
            levels.append(LabelLevel(view, lo, tuple(o + n for o, n in zip(lo, scale.size)), factors))
        return cls(levels, tuple(float(r) for r in base), {} if scans is None else scans)

    # -- reading ------------------------------------------------------------------------------
    def read(self, level: int, lo, hi) -> np.ndarray:
        """Voxels ``[lo, hi)`` of ``level`` (its own voxels), zeros outside the volume (blocking)."""
        lv = self.levels[level]
        out_shape = [max(0, h - l) for l, h in zip(lo, hi)]
        a = [max(l, d) for l, d in zip(lo, lv.lo)]
        b = [min(h, d) for h, d in zip(hi, lv.hi)]
        if any(y <= x for x, y in zip(a, b)):
            return np.zeros(out_shape, dtype=self.dtype)
        data = np.asarray(lv.store[tuple(slice(x, y) for x, y in zip(a, b))].read().result())
        if [y - x for x, y in zip(a, b)] == out_shape:
            return data
        out = np.zeros(out_shape, dtype=data.dtype)
        out[tuple(slice(x - l, y - l) for x, y, l in zip(a, b, lo))] = data
        return out

    @property
    def dtype(self):
        return np.dtype(self.levels[0].store.dtype.numpy_dtype)

    def to_level(self, level: int, lo, hi) -> tuple[list[int], list[int]]:
        """The voxels of ``level`` that cover the level-0 box ``[lo, hi)``."""
        f = self.levels[level].factors
        return ([math.floor(x / s) for x, s in zip(lo, f)], [math.ceil(x / s) for x, s in zip(hi, f)])

    def to_level0(self, level: int, lo, hi) -> tuple[list[float], list[float]]:
        """The level-0 box of voxels ``[lo, hi)`` of ``level``."""
        f = self.levels[level].factors
        return [x * s for x, s in zip(lo, f)], [x * s for x, s in zip(hi, f)]

    # -- finding a segment -----------------------------------------------------------------------
    def find(self, segment: int) -> tuple[int, list[int], list[int]] | None:
        """Where ``segment`` is: ``(level, lo, hi)``, its bounding box in the coarsest level that shows it.

        Levels are searched coarsest first (a few reads for most segments), each
        only while it is small enough to scan (:data:`SCAN_VOXELS`); None when no
        searched level holds the segment.  Mode-downsampled levels can lose a
        small segment, which then is found in the next finer level searched.
        """
        if not self.holds(segment):
            return None
        for level in range(len(self.levels) - 1, -1, -1):
            lv = self.levels[level]
            voxels = math.prod(h - l for l, h in zip(lv.lo, lv.hi))
            if voxels > SCAN_VOXELS:
                break
            if voxels <= KEEP_VOXELS:
                whole = self.scans.get(level)
                if whole is None:
                    whole = self.scans.setdefault(level, self.read(level, lv.lo, lv.hi))
                mask = whole == _value(whole.dtype, segment)
                box = None
                if mask.any():
                    a, b = _extent(mask)
                    box = ([x + o for x, o in zip(a, lv.lo)], [x + o for x, o in zip(b, lv.lo)])
            else:
                box = self.bounds(level, segment, lv.lo, lv.hi)
            if box is not None:
                return (level, *box)
        return None

    def holds(self, segment: int) -> bool:
        """Whether ``segment`` is a value the label type can hold (0 is background, never a segment)."""
        info = np.iinfo(self.dtype)
        if segment == 0:
            return False
        if info.min < 0:  # signed labels are read bit for bit as unsigned by the precomputed view
            return 0 < segment <= 2 * info.max + 1
        return 0 < segment <= info.max

    def bounds(self, level: int, segment: int, lo, hi) -> tuple[list[int], list[int]] | None:
        """The bounding box of ``segment`` within voxels ``[lo, hi)`` of ``level``, read in slabs."""
        lo, hi = list(lo), list(hi)
        plane = max(1, (hi[0] - lo[0]) * (hi[1] - lo[1]))
        step = max(1, SLAB_VOXELS // plane)
        value = _value(self.dtype, segment)
        found_lo, found_hi = None, None
        for z in range(lo[2], hi[2], step):
            slab = self.read(level, [lo[0], lo[1], z], [hi[0], hi[1], min(z + step, hi[2])])
            mask = slab == value
            if not mask.any():
                continue
            a, b = _extent(mask)
            a = [a[0] + lo[0], a[1] + lo[1], a[2] + z]
            b = [b[0] + lo[0], b[1] + lo[1], b[2] + z]
            found_lo = a if found_lo is None else [min(x, y) for x, y in zip(found_lo, a)]
            found_hi = b if found_hi is None else [max(x, y) for x, y in zip(found_hi, b)]
        return None if found_lo is None else (found_lo, found_hi)


def _value(dtype: np.dtype, segment: int):
    """``segment`` as a value of the label type (bit for bit for signed types, as the view reads them)."""
    return dtype.type(np.array(segment, dtype=np.uint64).astype(dtype))


def _extent(mask: np.ndarray) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return lo, hi


def _factor(value: float) -> float:
    """Whole factors as ints (2, not 1.9999999): level boxes then stay exact."""
    rounded = round(value)
    return rounded if abs(value - rounded) < 1e-6 * max(1.0, value) else value

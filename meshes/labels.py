"""A label volume as the mesh and skeleton builders see it: three spatial axes in x, y, z order,
voxel sizes in nanometres per pyramid level, and blocks read as ``(x, y, z)`` arrays.

Any dataset :func:`volumes.open_dataset` reads is accepted (zarr, OME-Zarr, N5, precomputed,
TIFF, ...), as long as it has three spatial axes, every other axis of size 1, and integer voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from volumes import Dataset, SourceError, first_line, open_dataset

_NM = {"m": 1e9, "": 1.0}  # unitless axes are taken as 1 nm per voxel, as the precomputed view shows them


class PrepareError(ValueError):
    """A problem the user can fix, as one line (bad input, bad option, existing output)."""


@dataclass
class LabelVolume:
    dataset: Dataset
    spatial: list[int]  # dataset axis index of x, y, z

    @property
    def location(self) -> str:
        return str(self.dataset.location)

    @property
    def levels(self) -> int:
        return len(self.dataset.levels)

    def shape(self, level: int = 0) -> tuple[int, int, int]:
        lv = self.dataset.levels[level]
        return tuple(int(lv.shape[i]) for i in self.spatial)

    def chunks(self, level: int = 0) -> tuple[int, int, int]:
        lv = self.dataset.levels[level]
        return tuple(int(lv.chunks[i]) for i in self.spatial)

    def factors(self, level: int) -> np.ndarray:
        lv = self.dataset.levels[level]
        return np.array([float(lv.factors[i]) for i in self.spatial])

    @cached_property
    def voxel_nm(self) -> np.ndarray:
        """Level-0 voxel size in nanometres, x, y, z."""
        axes = [self.dataset.axes[i] for i in self.spatial]
        return np.array([a.scale * _NM.get(a.unit, 1.0) for a in axes])

    @cached_property
    def origin_nm(self) -> np.ndarray:
        """Where the lower corner of voxel 0 is, in nanometres: the model space Neuroglancer uses."""
        return np.array([self.dataset.offset[i] for i in self.spatial]) * self.voxel_nm

    def level_voxel_nm(self, level: int) -> np.ndarray:
        return self.voxel_nm * self.factors(level)

    def read(self, level: int, lo, hi) -> np.ndarray:
        """Voxels ``[lo, hi)`` (x, y, z, in that level's voxels) as an ``(x, y, z)`` array."""
        store = self._store(level)
        index: list = [0] * store.rank  # precomputed stores keep a channel axis the dataset leaves out
        for axis, a, b in zip(self.spatial, lo, hi):
            index[axis] = slice(int(a), int(b))
        block = np.asarray(store[tuple(index)].read().result())
        order = np.argsort(np.argsort(self.spatial))  # the block's axes are in dataset order
        return np.transpose(block, order)

    def _store(self, level: int):
        stores = self.__dict__.setdefault("_stores", {})
        if level not in stores:
            import tensorstore as ts

            store = self.dataset.open_level(level)
            stores[level] = store[ts.d[:].translate_to[0]]  # precomputed domains start at voxel_offset
        return stores[level]

    def __getstate__(self) -> dict:  # tensorstore handles do not cross process boundaries
        return {"dataset": self.dataset, "spatial": self.spatial}


def open_labels(source: str | os.PathLike) -> LabelVolume:
    """The label volume at ``source``; a :class:`PrepareError` naming it when it cannot be one."""
    try:
        ds = open_dataset(source)
    except SourceError as exc:
        raise PrepareError(first_line(exc)) from None
    where = str(ds.location)
    if ds.format == "precomputed-annotations" or not ds.levels:
        raise PrepareError(f"{where}: not a label volume (no voxels); give a segmentation")
    dtype = np.dtype(ds.dtype)
    if dtype.kind not in "iu" or dtype == np.dtype(bool):
        raise PrepareError(f"{where}: voxels are {dtype}, not integer labels; give a segmentation (uint8..uint64 labels)")
    space = [i for i, a in enumerate(ds.axes) if a.type == "space" and not a.is_local]
    if len(space) != 3:
        raise PrepareError(f"{where}: {len(space)} spatial axes; meshes and skeletons need a 3-D label volume")
    for i, a in enumerate(ds.axes):
        if i not in space and ds.shape[i] != 1:
            raise PrepareError(f"{where}: axis {a.name!r} has {ds.shape[i]} entries; give a single 3-D label volume")
    names = {ds.axes[i].name: i for i in space}
    # x, y, z by name when the axes have those names; else the reverse of the stored (C) order.
    spatial = [names[n] for n in "xyz"] if set(names) == {"x", "y", "z"} else space[::-1]
    return LabelVolume(ds, spatial)


def parse_segments(text: str | None) -> np.ndarray | None:
    """``--segments 1,2,5`` as sorted unique uint64 ids (None: every segment)."""
    if text is None:
        return None
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise PrepareError(f"--segments: {part!r} is not a segment id; give ids such as 1,2,5") from None
        if not 0 < value < 2**64:
            raise PrepareError(f"--segments: {part} is not a segment id (1 to 2^64-1; 0 is background)")
        ids.append(value)
    if not ids:
        raise PrepareError("--segments: no ids given; give ids such as 1,2,5")
    return np.unique(np.array(ids, dtype=np.uint64))


def blocks(shape, block) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The ``(lo, hi)`` boxes tiling ``shape`` in ``block``-sized pieces (x fastest)."""
    grid = [range(0, int(s), int(b)) for s, b in zip(shape, block)]
    return [((x, y, z), (min(x + block[0], shape[0]), min(y + block[1], shape[1]), min(z + block[2], shape[2])))
            for z in grid[2] for y in grid[1] for x in grid[0]]

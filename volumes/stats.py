"""Contrast statistics that read one small level, never the whole volume."""

from __future__ import annotations

import math

import numpy as np

from .model import Dataset

TARGET_VOXELS = 64**3


def stats_level(ds: Dataset, target: int = TARGET_VOXELS) -> int:
    """Index of the coarsest level that still has about ``target`` spatial voxels."""
    spatial = [i for i, a in enumerate(ds.axes) if a.type != "channel"]
    best = 0
    for index, level in enumerate(ds.levels):
        if math.prod(level.shape[i] for i in spatial) >= target:
            best = index
    return best


def contrast_range(ds: Dataset, low: float = 0.5, high: float = 99.5, target: int = TARGET_VOXELS) -> list[float]:
    """The ``low``–``high`` percentile of the stats level; [lo, hi] with lo < hi.

    A level much larger than ``target`` (single-level data) is thinned with
    tensorstore's stride downsampling, so only the sampled chunks are read.
    """
    import tensorstore as ts

    index = stats_level(ds, target)
    store = ds.open_level(index)
    shape = list(store.shape)
    spatial = [i for i, a in enumerate(ds.axes) if a.type != "channel"] if len(ds.axes) == len(shape) else []
    voxels = math.prod(shape[i] for i in spatial) if spatial else math.prod(shape)
    if voxels > 4 * target and spatial:
        step = max(1, math.floor((voxels / target) ** (1 / len(spatial))))
        factors = [min(step, shape[i]) if i in spatial else 1 for i in range(len(shape))]
        store = ts.downsample(store, factors, method="stride")
    data = np.asarray(store.read().result())
    dtype = data.dtype
    if dtype.kind == "f":
        data = data[np.isfinite(data)]
    if data.size == 0:
        return [0.0, 1.0]
    lo, hi = np.percentile(data, [low, high])
    if dtype.kind in "iub":
        lo, hi = math.floor(lo), math.ceil(hi)
        if hi <= lo:
            hi = lo + 1
        return [int(lo), int(hi)]
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-3
    return [lo, hi]

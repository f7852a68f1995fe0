"""Contrast statistics that read one small level, or a few chunks of it, never the whole volume."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

from .model import Dataset

TARGET_VOXELS = 64**3
# A level over 4 x target voxels is sampled: whole chunks, spread over the volume.  Reading less
# than a chunk saves nothing (the store fetches whole chunks), so the sample is counted in chunks:
# enough for about 4 x target voxels (as much as an unsampled level may have), within these bounds.
MIN_SAMPLE_CHUNKS = 8
MAX_SAMPLE_CHUNKS = 64


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

    A level much larger than ``target`` (single-level data) is sampled: at most
    ``MAX_SAMPLE_CHUNKS`` whole chunks on a regular grid over the volume are read,
    whatever the volume's size.
    """
    store = ds.open_level(stats_level(ds, target))
    shape = list(store.shape)
    # The dataset's axes are the store's leading dimensions; any extra ones (precomputed's channel
    # dimension) are channels, read whole.
    spatial = [i for i, a in enumerate(ds.axes) if a.type != "channel" and i < len(shape)]
    if math.prod(shape[i] for i in spatial) > 4 * target:
        data = _sample_chunks(store, spatial, target)
    else:
        data = np.asarray(store.read().result())
    return _percentiles(data, low, high)


def _sample_chunks(store, spatial: list[int], target: int) -> np.ndarray:
    """The values of a few whole chunks on a regular sub-grid of the chunk grid, read concurrently."""
    chunk = list(store.chunk_layout.read_chunk.shape)
    origin = list(store.chunk_layout.grid_origin)
    lo, hi = list(store.domain.inclusive_min), list(store.domain.exclusive_max)
    # Chunk grid cells that overlap the domain, per axis (the first may start before the domain).
    first = [(lo[i] - origin[i]) // chunk[i] for i in range(len(chunk))]
    count = [-(-(hi[i] - origin[i]) // chunk[i]) - first[i] for i in range(len(chunk))]
    chunk_voxels = math.prod(chunk[i] for i in spatial)
    budget = min(MAX_SAMPLE_CHUNKS, max(MIN_SAMPLE_CHUNKS, -(-4 * target // chunk_voxels)))
    picks = _grid_picks([count[i] for i in spatial], budget)
    per_axis = [[None]] * len(chunk)  # non-spatial axes (channels) are read whole
    for i, p in zip(spatial, picks):
        per_axis[i] = p
    reads = []
    for cell in itertools.product(*per_axis):
        index = tuple(
            slice(None) if c is None else slice(max(lo[i], origin[i] + (first[i] + c) * chunk[i]),
                                                min(hi[i], origin[i] + (first[i] + c + 1) * chunk[i]))
            for i, c in enumerate(cell)
        )
        reads.append(store[index].read())
    return np.concatenate([np.asarray(r.result()).ravel() for r in reads])


def _grid_picks(counts: list[int], budget: int) -> list[list[int]]:
    """Evenly spaced chunk positions per axis (first and last included), at most ``budget`` cells in all.

    Axes with the most chunks per pick get another pick first.
    """
    take = [1] * len(counts)
    while True:
        room = [i for i in range(len(counts)) if take[i] < counts[i]]
        if not room:
            break
        axis = max(room, key=lambda i: counts[i] / take[i])
        if math.prod(take) // take[axis] * (take[axis] + 1) > budget:
            break
        take[axis] += 1
    return [[n // 2] if t == 1 else [round(j * (n - 1) / (t - 1)) for j in range(t)] for n, t in zip(counts, take)]


def _percentiles(data: np.ndarray, low: float, high: float) -> list[float]:
    dtype = data.dtype
    if dtype.kind == "b":
        return [0, 1]  # a mask: two values, so its whole range is the only sensible window
    if dtype.kind == "c":
        data = np.abs(data)  # np.percentile takes only reals; a complex image is shown by its magnitude
    elif dtype.kind not in "iuf":
        try:  # ml_dtypes' bfloat16, float8_* and int4 are kind "V" and convert; strings and records do not
            with warnings.catch_warnings():
                warnings.simplefilter("error", np.exceptions.ComplexWarning)  # a record with a complex field
                data = data.astype(np.float64) if dtype.kind == "V" else None
        except (TypeError, ValueError, np.exceptions.ComplexWarning):
            data = None
        if data is None:
            return [0.0, 1.0]  # no numeric values: the viewer's own default window
    if data.dtype.kind == "f":
        data = data[np.isfinite(data)].astype(np.float64, copy=False)  # float16 arithmetic overflows at 65504
    if data.size == 0:
        return [0.0, 1.0]
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = np.percentile(data, [low, high])
    if not (np.isfinite(lo) and np.isfinite(hi)):  # interpolating across most of float64's range overflows
        lo, hi = np.percentile(data, [low, high], method="nearest")
    if dtype.kind in "iu":
        # Within the dtype: percentiles are float64, so near 2**64 they round past uint64's top.
        info = np.iinfo(dtype)
        lo, hi = max(math.floor(lo), int(info.min)), min(math.ceil(hi), int(info.max))
        if hi <= lo:
            lo, hi = (lo, lo + 1) if lo < info.max else (hi - 1, hi)
        return [int(lo), int(hi)]
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        width = (abs(lo) or 1.0) * 1e-3
        lo, hi = (lo, lo + width) if math.isfinite(lo + width) else (lo - width, hi)  # at float64's top
    return [lo, hi]

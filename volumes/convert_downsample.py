"""Downsampling and statistics of ``convert``'s tiles, on all cores.

``mean`` of integers, ``min``, ``max`` and ``stride`` are computed here with numpy, one output
z-plane group per thread, by adding (or comparing) neighbour pairs axis by axis: that is several
times faster than tensorstore's general downsampling and needs only plane-sized temporaries.
The results equal ``ts.downsample``'s (integer means round half to even).  Other methods
(``mode``, ``median``), float means, and tiles whose downsampled axes have odd lengths (the partial
block at the volume's end) go through ``ts.downsample``, in y bands on the same threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

_POOLS: dict[int, ThreadPoolExecutor] = {}
GAUSSIAN_SIGMA = 2 / 3
GAUSSIAN_TRUNCATE = 4.0
GAUSSIAN_MARGIN = int(GAUSSIAN_TRUNCATE * GAUSSIAN_SIGMA + 0.5)  # scipy's kernel radius


def gaussian(data: np.ndarray, step: Sequence[int], margin: Sequence[tuple[int, int]]) -> np.ndarray:
    """``data`` (c, z, y, x) with ``margin`` (before, after) voxels of its neighbours on each of
    z, y, x, smoothed along the halved axes and strided; the margins are dropped."""
    from scipy.ndimage import gaussian_filter

    sigma = [0.0] + [GAUSSIAN_SIGMA if k == 2 else 0.0 for k in step]
    smooth = gaussian_filter(data.astype(np.float32), sigma, mode="mirror", truncate=GAUSSIAN_TRUNCATE)
    inner = smooth[(slice(None), *(slice(lo, n - hi, k) for (lo, hi), n, k in zip(margin, data.shape[1:], step)))]
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(inner), info.min, info.max).astype(data.dtype)
    return inner.astype(data.dtype)


def _pool(workers: int | None) -> tuple[ThreadPoolExecutor, int]:
    threads = workers or os.cpu_count() or 1
    pool = _POOLS.get(threads) or _POOLS.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="convert"))
    return pool, threads


def _accumulator(dtype: np.dtype) -> np.dtype | None:
    """A type holding the sum of 8 values of ``dtype``, or None (left to tensorstore)."""
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        return np.dtype(np.int32)
    if dtype.kind in "iu" and dtype.itemsize == 4:
        return np.dtype(np.int64)
    return None


def _pairs(a: np.ndarray, axis: int, combine: Callable) -> np.ndarray:
    lo = [slice(None)] * a.ndim
    hi = list(lo)
    lo[axis], hi[axis] = slice(0, None, 2), slice(1, None, 2)
    return combine(a[tuple(lo)], a[tuple(hi)])


_SCRATCH = threading.local()  # per pool thread: two int buffers reused by every plane group
GROUP_BYTES = 8 << 20  # input bytes per plane group: temporaries stay small and are reused, not faulted in anew


def _scratch(count: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """This thread's two scratch buffers of at least ``count`` elements of ``dtype``."""
    held = getattr(_SCRATCH, "bufs", None)
    if held is None or held[0].dtype != dtype or held[0].size < count:
        held = _SCRATCH.bufs = (np.empty(count, dtype), np.empty(count, dtype))
    return held


def _numpy_block(data: np.ndarray, step: Sequence[int], method: str, dst: np.ndarray) -> None:
    """One group of z planes (c, z, y, x) downsampled into ``dst``; every stepped axis has even length."""
    if method == "stride":
        dst[...] = data[:, ::step[0], ::step[1], ::step[2]]
        return
    if method in ("min", "max"):
        combine = np.minimum if method == "min" else np.maximum
        out = data
        for axis, k in zip((1, 2, 3), step):
            if k == 2:
                out = _pairs(out, axis, combine)
        dst[...] = out
        return
    acc = _accumulator(data.dtype)
    first = list(data.shape)
    first[next(a for a, k in zip((1, 2, 3), step) if k == 2)] //= 2
    bufs = _scratch(int(np.prod(first)), acc)
    out, turn = data, 0
    for axis, k in zip((1, 2, 3), step):
        if k == 2:  # sums of neighbour pairs, into the two scratch buffers in turn
            shape = list(out.shape)
            shape[axis] //= 2
            target = bufs[turn][:int(np.prod(shape))].reshape(shape)
            lo = [slice(None)] * 4
            hi = list(lo)
            lo[axis], hi[axis] = slice(0, None, 2), slice(1, None, 2)
            np.add(out[tuple(lo)], out[tuple(hi)], out=target, dtype=acc)
            out, turn = target, 1 - turn
    # sum / 2^k rounded half to even, as tensorstore does, with shifts (floor division, also below 0):
    # adding 2^(k-1) - 1 plus the quotient's lowest bit carries exactly when the remainder is over
    # half, or half with an odd quotient.
    k = sum(1 for s in step if s == 2)
    odd = bufs[turn][:out.size].reshape(out.shape)  # the other buffer: free, and at least as large
    np.right_shift(out, k, out=odd)
    odd &= 1
    out += odd
    out += (1 << (k - 1)) - 1
    out >>= k
    np.copyto(dst, out, casting="unsafe")


def downsample(data: np.ndarray, step: Sequence[int], method: str, workers: int | None = None) -> np.ndarray:
    """``data`` (c, z, y, x) downsampled by ``step`` (z, y, x, each 1 or 2) with ``method``; a
    partial block at the end uses the voxels it has."""
    if all(k == 1 for k in step):
        return data
    pool, threads = _pool(workers)
    even = all(k == 1 or n % 2 == 0 for k, n in zip(step, data.shape[1:]))
    numpy_ok = method in ("stride", "min", "max") or (method == "mean" and _accumulator(data.dtype) is not None)
    if even and numpy_ok:
        planes = data.shape[1] // step[0]
        per_plane = data[:, :step[0]].nbytes
        group = max(1, min(-(-planes // (threads * 4)), GROUP_BYTES // per_plane))  # even load, small temporaries
        out = np.empty((data.shape[0], planes, *(n // k for n, k in zip(data.shape[2:], step[1:]))), data.dtype)

        def one(p0: int) -> None:
            p1 = min(planes, p0 + group)
            _numpy_block(data[:, p0 * step[0]:p1 * step[0]], step, method, out[:, p0:p1])

        list(pool.map(one, range(0, planes, group)))
        return out
    import tensorstore as ts

    rows = data.shape[2]
    band = max(step[1], -(-rows // threads // step[1]) * step[1])
    factors = [1, *step]

    def band_of(y0: int) -> np.ndarray:
        return ts.downsample(ts.array(data[:, :, y0:y0 + band]), factors, method=method).read().result()

    parts = list(pool.map(band_of, range(0, rows, band)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def stats(data: np.ndarray, workers: int | None = None) -> list:
    """[min, max, sum, count] of ``data`` (finite values of floats; None, None, 0, 0 if none)."""
    if data.size == 0:
        return [None, None, 0.0, 0]
    pool, _ = _pool(workers)
    planes = data.shape[1]
    group = 8  # fixed, not per thread count: float sums then add up in the same order on every machine

    def one(z0: int) -> list:
        part = data[:, z0:z0 + group]
        if part.dtype.kind == "f":
            part = part[np.isfinite(part)]
            if part.size == 0:
                return [None, None, 0.0, 0]
            return [float(part.min()), float(part.max()), float(part.sum(dtype=np.float64)), int(part.size)]
        return [part.min().item(), part.max().item(), float(part.sum(dtype=np.float64)), int(part.size)]

    out = [None, None, 0.0, 0]
    for lo, hi, total, count in pool.map(one, range(0, planes, group)):
        if lo is not None:
            out = [lo if out[0] is None else min(out[0], lo), hi if out[1] is None else max(out[1], hi),
                   out[2] + total, out[3] + count]
    return out

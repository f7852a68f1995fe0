"""Annotation geometry: the five types, their bounds, and which grid cells each one intersects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ragged import ragged_arange

ANNOTATION_TYPES = ("point", "line", "axis_aligned_bounding_box", "ellipsoid", "polyline")
TWO_VECTOR_TYPES = ("line", "axis_aligned_bounding_box", "ellipsoid")


@dataclass
class Shapes:
    """Geometry of N annotations of one type, as float32 columns.

    ``coords`` is ``(N, rank)`` for points, ``(N, 2 * rank)`` for the two-vector types (point A then
    B; centre then radii for ellipsoids), and ``(M, rank)`` vertices for polylines, where polyline
    ``i`` owns vertices ``vertex_offsets[i] : vertex_offsets[i + 1]``.
    """

    type: str
    rank: int
    coords: np.ndarray
    vertex_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.vertex_offsets) - 1 if self.type == "polyline" else len(self.coords)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-annotation bounding box ``(lo, hi)``, each ``(N, rank)`` float64."""
        r = self.rank
        c = self.coords.astype(np.float64)
        if self.type == "point":
            return c, c
        if self.type == "ellipsoid":
            radii = np.abs(c[:, r:])
            return c[:, :r] - radii, c[:, :r] + radii
        if self.type == "polyline":
            starts = self.vertex_offsets[:-1]
            return np.minimum.reduceat(c, starts, axis=0), np.maximum.reduceat(c, starts, axis=0)
        a, b = c[:, :r], c[:, r:]
        return np.minimum(a, b), np.maximum(a, b)

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest coordinate over all annotations, without per-annotation float64 copies."""
        r = self.rank
        c = self.coords
        if self.type in ("point", "polyline"):
            return c.min(axis=0).astype(np.float64), c.max(axis=0).astype(np.float64)
        if self.type == "ellipsoid":
            radii = np.abs(c[:, r:])
            return (c[:, :r] - radii).min(axis=0).astype(np.float64), (c[:, :r] + radii).max(axis=0).astype(np.float64)
        return np.minimum(c[:, :r].min(axis=0), c[:, r:].min(axis=0)).astype(np.float64), np.maximum(
            c[:, :r].max(axis=0), c[:, r:].max(axis=0)
        ).astype(np.float64)

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Line pieces ``(owner, start, end)`` of lines and polylines."""
        r = self.rank
        c = self.coords.astype(np.float64)
        if self.type == "line":
            return np.arange(len(c)), c[:, :r], c[:, r:]
        counts = np.diff(self.vertex_offsets)
        owner = np.repeat(np.arange(len(counts)), counts - 1)
        first = ragged_arange(self.vertex_offsets[:-1], counts - 1)
        return owner, c[first], c[first + 1]


def _cell_ranges(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, chunk: np.ndarray, grid: np.ndarray):
    first = np.clip(np.floor((lo - origin) / chunk), 0, grid - 1).astype(np.int64)
    last = np.clip(np.floor((hi - origin) / chunk), 0, grid - 1).astype(np.int64)
    return first, last


def _expand(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every cell in each box of cells ``[first, last]``: (box number, cell position) pairs."""
    extent = last - first + 1
    counts = np.prod(extent, axis=1)
    box = np.repeat(np.arange(len(first)), counts)
    k = ragged_arange(np.zeros(len(first), dtype=np.int64), counts)
    cells = np.empty((len(k), first.shape[1]), dtype=np.int64)
    for d in range(first.shape[1]):
        e = extent[box, d]
        cells[:, d] = first[box, d] + k % e
        k //= e
    return box, cells


def _segment_hits_box(p0: np.ndarray, p1: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Slab test: does the segment p0→p1 touch the closed box [lo, hi]? Row-wise."""
    direction = p1 - p0
    t_enter = np.zeros(len(p0))
    t_exit = np.ones(len(p0))
    with np.errstate(divide="ignore", invalid="ignore"):
        for d in range(p0.shape[1]):
            flat = direction[:, d] == 0
            t1 = (lo[:, d] - p0[:, d]) / direction[:, d]
            t2 = (hi[:, d] - p0[:, d]) / direction[:, d]
            near = np.where(flat, -np.inf, np.minimum(t1, t2))
            far = np.where(flat, np.inf, np.maximum(t1, t2))
            outside = flat & ((p0[:, d] < lo[:, d]) | (p0[:, d] > hi[:, d]))
            t_enter = np.maximum(t_enter, near)
            t_exit = np.where(outside, -1.0, np.minimum(t_exit, far))
    return t_enter <= t_exit


def intersected_cells(
    shapes: Shapes, selected: np.ndarray, origin: np.ndarray, chunk: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(annotation number, cell position) for each grid cell each selected annotation intersects.

    Cells are half-open ``[origin + c * chunk, origin + (c + 1) * chunk)`` for locating the
    candidate cells of a bounding box; lines and ellipsoids are then tested exactly, so a diagonal
    line is not listed in cells it only passes near.
    """
    if shapes.type in ("line", "polyline"):
        owner, p0, p1 = shapes.segments()
        keep = selected[owner]
        owner, p0, p1 = owner[keep], p0[keep], p1[keep]
        first, last = _cell_ranges(np.minimum(p0, p1), np.maximum(p0, p1), origin, chunk, grid)
        seg, cells = _expand(first, last)
        cell_lo = origin + cells * chunk
        hit = _segment_hits_box(p0[seg], p1[seg], cell_lo, cell_lo + chunk)
        hit |= (first[seg] == last[seg]).all(axis=1)  # a segment inside one cell touches it
        ann, cells = owner[seg[hit]], cells[hit]
        if shapes.type == "polyline":  # consecutive segments share cells: list each cell once
            linear = np.ravel_multi_index(cells.T, grid)
            _, unique_rows = np.unique(np.stack([ann, linear], axis=1), axis=0, return_index=True)
            ann, cells = ann[unique_rows], cells[unique_rows]
        return ann, cells

    indices = np.flatnonzero(selected)
    if shapes.type == "point":  # one cell each; dimension by dimension to keep temporaries small
        cells = np.empty((len(indices), shapes.rank), dtype=np.int64)
        for d in range(shapes.rank):
            position = (shapes.coords[indices, d] - origin[d]) / chunk[d]
            cells[:, d] = np.clip(np.floor(position), 0, grid[d] - 1)
        return indices, cells
    lo, hi = shapes.bounds()
    first, last = _cell_ranges(lo[indices], hi[indices], origin, chunk, grid)
    box, cells = _expand(first, last)
    if shapes.type == "ellipsoid":
        r = shapes.rank
        centre = shapes.coords[indices[box], :r].astype(np.float64)
        radii = np.abs(shapes.coords[indices[box], r:].astype(np.float64))
        cell_lo = origin + cells * chunk
        nearest = np.clip(centre, cell_lo, cell_lo + chunk)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(radii > 0, (nearest - centre) / radii, np.where(nearest == centre, 0.0, np.inf))
        hit = (scaled**2).sum(axis=1) <= 1
        box, cells = box[hit], cells[hit]
    return indices[box], cells

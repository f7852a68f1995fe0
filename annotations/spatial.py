"""The multi-level spatial index, computed as the spec's sampling rule says.

Level 0 is one cell covering the bounds.  Each finer level halves the chunk size along the
dimensions where that keeps cells closest to isotropic (in physical units).  At each level one
emission probability ``min(1, limit / maxCount)`` is drawn for the whole level, where maxCount is
the largest number of not-yet-emitted annotations intersecting any cell.  An emitted annotation is
listed in every cell of that level it intersects and leaves the pool, so levels are disjoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .geometry import Shapes, intersected_cells
from volumes.sharding import compressed_morton_code, morton_bits
from .ragged import run_offsets

# Morton keys are uint64 and the Python reader interleaves at most 32 bits per dimension; past
# this many bits the finest level takes everything left (only stacks of coincident annotations
# can get there).
MAX_KEY_BITS = 60
MAX_BITS_PER_DIMENSION = 30


@dataclass
class SpatialLevel:
    grid_shape: tuple[int, ...]
    chunk_size: np.ndarray
    cell_positions: np.ndarray  # (C, rank) non-empty cells
    members: np.ndarray  # annotation numbers, grouped by cell, shuffled within each cell
    member_offsets: np.ndarray  # cell i lists members[member_offsets[i] : member_offsets[i + 1]]

    @property
    def morton_codes(self) -> np.ndarray:
        return compressed_morton_code(self.cell_positions, self.grid_shape)

    @property
    def key_bits(self) -> int:
        return morton_bits(self.grid_shape)


def next_halvings(halvings: np.ndarray, extent_physical: np.ndarray) -> np.ndarray:
    """Halve every dimension whose chunk is within a factor √2 of the largest (the spec's
    "equal to, or half of, whichever results in a more spatially isotropic chunk")."""
    chunk = extent_physical / 2.0**halvings
    halve = chunk * np.sqrt(2) >= chunk.max()
    return halvings + halve


def build_levels(
    shapes: Shapes,
    lower: np.ndarray,
    upper: np.ndarray,
    scales: np.ndarray,
    limit: int,
    rng: np.random.Generator,
    on_progress: Callable[[int], None] = lambda n: None,
) -> list[SpatialLevel]:
    """All spatial index levels, coarse to fine, until every annotation is emitted.

    ``on_progress`` hears how many annotations each level emitted.
    """
    n = len(shapes)
    remaining = np.ones(n, dtype=bool)
    extent = upper - lower
    halvings = np.zeros(len(lower), dtype=np.int64)
    levels: list[SpatialLevel] = []
    while remaining.any():
        grid = (1 << halvings).astype(np.int64)
        chunk = extent / grid
        ann, cells = intersected_cells(shapes, remaining, lower, chunk, grid)
        linear = np.ravel_multi_index(cells.T, grid)
        counts = np.unique(linear, return_counts=True)[1] if len(linear) else np.zeros(1)
        upcoming = next_halvings(halvings, extent * scales)
        last_possible = upcoming.sum() > MAX_KEY_BITS or upcoming.max() > MAX_BITS_PER_DIMENSION
        probability = 1.0 if last_possible else min(1.0, limit / counts.max())
        # One draw per annotation, not per (annotation, cell): a spanning annotation is emitted in
        # all of its cells at this level or in none.
        emitted = np.zeros(n, dtype=bool)
        candidates = np.flatnonzero(remaining)
        emitted[candidates] = rng.random(len(candidates)) < probability
        keep = emitted[ann]
        levels.append(_group_by_cell(ann[keep], cells[keep], linear[keep], grid, chunk, rng))
        remaining &= ~emitted
        on_progress(int(emitted.sum()))
        halvings = upcoming
    return levels


def _group_by_cell(ann, cells, linear, grid, chunk, rng) -> SpatialLevel:
    # A random permutation then a stable sort by cell shuffles each cell's list: the viewer draws
    # a prefix of it when it wants fewer annotations.
    shuffle = rng.permutation(len(ann))
    order = shuffle[np.argsort(linear[shuffle], kind="stable")]
    offsets = run_offsets(linear[order])
    return SpatialLevel(
        grid_shape=tuple(int(g) for g in grid),
        chunk_size=chunk,
        cell_positions=cells[order[offsets[:-1]]],
        members=ann[order],
        member_offsets=offsets,
    )

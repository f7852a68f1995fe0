"""The tiling of ``convert``: which box of which level each step builds, so memory stays bounded.

Every level is cut into tiles whose edges fall on whole *write chunks* (the chunks, or the shards
of a sharded output), so writing a tile rewrites nothing another tile wrote: a task is idempotent.

* Along z a tile is one write chunk thick at every level.
* Along y and x a level-0 tile is ``W·2^k`` (``k`` as large as the memory bound allows, up to the
  whole plane); tiles halve level by level until they are one write chunk, then stay that size.

So a level-``L`` tile is the downsampling of its *children* at level ``L-1``: two along z, and
along y/x one while tiles still shrink, two after.  Building a tile depth-first (each child built,
written, downsampled into its parent and dropped before the next) holds about one tile per level,
whatever the volume's size, and every level comes from the previous level's data in one pass.

Work is split into *rounds* of *tasks*.  A task builds one tile of the round's top level (and
everything below it in that round) and writes whole write chunks only.  Round 0 reads the input;
when the coarse levels have too few tiles to share out, a further round builds them from the top
level of the round before, read back from the output (a small fraction of the data: 1/8 per level).
Gaussian downsampling needs a margin of the previous level around each tile, so there every round
builds one level from the previous level's tiles read with that margin.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (lo, hi) per z, y, x

MIN_TASKS = 4  # a round's top level is the coarsest level that still has this many tiles …
MAX_LEAVES = 64  # … and whose tasks read at most this many tiles (a lost task is little work)


@dataclass(frozen=True)
class Tiling:
    """Tiles of every level of one pyramid (shapes and steps z, y, x per level)."""

    shapes: tuple[tuple[int, int, int], ...]
    steps: tuple[tuple[int, int, int], ...]  # factor from the previous level; level 0: (1, 1, 1)
    write: tuple[int, int, int]  # the write chunk (even where an axis is halved)
    k0: tuple[int, int, int]  # level-0 tile = write · 2^k0
    one_level_rounds: bool = False  # each round builds one level from the last (gaussian reads halos)

    @property
    def levels(self) -> int:
        return len(self.shapes)

    def tile(self, level: int) -> tuple[int, int, int]:
        halvings = [sum(1 for s in self.steps[1:level + 1] if s[a] == 2) for a in range(3)]
        return tuple(w << max(0, k - h) for w, k, h in zip(self.write, self.k0, halvings))

    def grid(self, level: int) -> tuple[int, int, int]:
        return tuple(-(-s // t) for s, t in zip(self.shapes[level], self.tile(level)))

    def box(self, level: int, index: tuple[int, int, int]) -> Box:
        return tuple((i * t, min(s, (i + 1) * t)) for i, t, s in zip(index, self.tile(level), self.shapes[level]))

    def children(self, level: int, index: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """The level-``level-1`` tiles a tile is made from, in C order."""
        mine, theirs, below = self.tile(level), self.tile(level - 1), self.grid(level - 1)
        ratios = [st * m // t for st, m, t in zip(self.steps[level], mine, theirs)]
        ranges = [range(i * r, min(g, (i + 1) * r)) for i, r, g in zip(index, ratios, below)]
        return list(itertools.product(*ranges))

    def leaves(self, base: int, level: int, index: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """The ``base``-level tiles under a tile, in the depth-first order they are built."""
        if level == base:
            return [index]
        return [leaf for child in self.children(level, index) for leaf in self.leaves(base, level - 1, child)]

    def rounds(self) -> list[tuple[int, int]]:
        """(base, top) levels of each round: round 0 writes base..top, later rounds base+1..top."""
        if self.levels == 1:
            return [(0, 0)]
        if self.one_level_rounds:
            return [(lv, lv + 1) for lv in range(self.levels - 1)]
        out, base = [], 0
        while base < self.levels - 1:
            fits = [lv for lv in range(base + 1, self.levels) if len(self.leaves(base, lv, (0, 0, 0))) <= MAX_LEAVES]
            # (a tile has at most 8 children, so base + 1 always fits)
            top = next((lv for lv in reversed(fits) if math.prod(self.grid(lv)) >= MIN_TASKS), fits[-1])
            out.append((base, top))
            base = top
        return out

    def tasks(self, level: int) -> list[tuple[int, int, int]]:
        return list(itertools.product(*(range(g) for g in self.grid(level))))


def level_shapes(shape: tuple[int, int, int], n: int) -> tuple[list, list]:
    """Per level: the (z, y, x) shape and the step from the previous level. An axis of size 1 stays 1."""
    shapes, steps = [tuple(shape)], [(1, 1, 1)]
    for _ in range(1, n):
        step = tuple(2 if s > 1 else 1 for s in shapes[-1])
        shapes.append(tuple(-(-s // k) for s, k in zip(shapes[-1], step)))
        steps.append(step)
    return shapes, steps


def make_tiling(shape: tuple[int, int, int], n: int, write: tuple[int, int, int],
                k0: tuple[int, int, int] = (0, 0, 0), one_level_rounds: bool = False) -> Tiling:
    shapes, steps = level_shapes(shape, n)
    # A halved axis needs even tiles, or a block would straddle two of them.
    halved = [any(s[a] == 2 for s in steps) for a in range(3)]
    write = tuple(w * 2 if h and w % 2 else w for w, h in zip(write, halved))
    return Tiling(tuple(shapes), tuple(steps), write, tuple(k0), one_level_rounds)


def full_k(size: int, write: int) -> int:
    """The smallest k for which ``write·2^k`` covers ``size``."""
    return max(0, math.ceil(math.log2(max(1, size) / write))) if size > write else 0

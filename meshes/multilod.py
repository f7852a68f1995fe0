"""Segment meshes in Neuroglancer's precomputed ``neuroglancer_multilod_draco`` format.

The format (google/neuroglancer ``src/datasource/precomputed/meshes.md``): per
segment a binary manifest (``<id>.index``) and a data file (``<id>``) that
concatenates one Draco mesh per octree node ("fragment"), finest level of
detail (LOD) first.  A node of LOD ``k`` at grid position ``p`` covers
``grid_origin + p * chunk_shape * 2**k`` to ``+ chunk_shape * 2**k``; its
vertex positions are integers in ``[0, 2**bits)`` relative to that box.  The
client splits the mesh of a node of LOD > 0 into its 2x2x2 children by
vertex position, so no triangle of such a node may cross a child boundary.

How meshes are made here:

- Stored-model space is level-0 voxels, absolute (:mod:`meshes.pyramid`); the
  ``info`` ``transform`` scales it to nanometres, so anisotropic voxels stay
  exact.  Fragments are near-cubic in nanometres (``chunk_shape`` per axis).
- LOD ``k`` is meshed from pyramid level ``k`` (the label pyramid, real levels
  then the precomputed view's virtual ones), marching cubes with zmesh, box by
  box: each node's box is read with a one-voxel margin so surfaces continue
  across boxes, meshed, then cut at the box (and, for LOD > 0, at its
  children's) planes with ``zmesh.chunk_mesh``.  Volume edges are closed by
  padding with background ourselves: zmesh's ``close=True`` was seen to shift
  vertices by one voxel.
- LOD 0 is not simplified (exact marching-cubes surfaces that meet across
  boxes); coarser LODs are simplified by zmesh within one voxel of their level.
- Draco's own quantization is made the identity (range ``2**bits - 1``, origin
  0), so the integers the client decodes without dequantizing are ours.

Memory is bounded by one box (``chunk_shape * 2**k`` level-0 voxels, read at
level ``k``) plus, for one segment, a window of at most :data:`WINDOW_VOXELS`.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable

import numpy as np

from .pyramid import LabelPyramid

VERTEX_BITS = 16  # 10 or 16 in the format; 16 keeps vertices within 1/65535 of a fragment
FRAGMENT_VOXELS = 64  # LOD-0 fragment edge, in level-0 voxels along the finest axis
MAX_LODS = 6
MIN_LOD_VOXELS = 4  # a coarser LOD is made while the segment spans at least this many of its voxels
REDUCTION = 8  # triangle reduction asked of zmesh's simplifier for LOD > 0
DRACO_LEVEL = 5  # Draco compression level (0 fastest, 10 smallest)
WINDOW_VOXELS = 1 << 23  # one segment's box read in one go when this small (else node by node)

Position = tuple[int, int, int]


@dataclass(frozen=True)
class Layout:
    """The octree every segment of one volume shares (level-0 voxel units)."""

    chunk_shape: tuple[int, int, int]  # a LOD-0 node
    grid_origin: tuple[float, float, float]  # lower corner of node (0, 0, 0), below every vertex
    lod_levels: tuple[int, ...]  # pyramid level meshed for each LOD
    lod_scales: tuple[float, ...]  # level-0 voxels per voxel of each LOD (Neuroglancer picks LODs by it)
    resolution: tuple[float, float, float]  # nm per level-0 voxel
    vertex_quantization_bits: int = VERTEX_BITS

    def node_box(self, lod: int, position: Position) -> tuple[list[float], list[float]]:
        """The level-0 box ``[lo, hi)`` of a node."""
        size = [c * (1 << lod) for c in self.chunk_shape]
        lo = [o + p * s for o, p, s in zip(self.grid_origin, position, size)]
        return lo, [a + s for a, s in zip(lo, size)]

    def nodes_covering(self, lod: int, lo, hi) -> list[Position]:
        """The positions of the LOD's nodes that meet the level-0 box ``[lo, hi)``."""
        size = [c * (1 << lod) for c in self.chunk_shape]
        spans = [range(max(0, math.floor((a - o) / s)), max(0, math.ceil((b - o) / s)))
                 for a, b, o, s in zip(lo, hi, self.grid_origin, size)]
        return list(itertools.product(*spans))


@dataclass
class Piece:
    """Triangles in level-0 voxel coordinates: ``vertices`` float32 ``[n, 3]``, ``faces`` uint32 ``[m, 3]``."""

    vertices: np.ndarray
    faces: np.ndarray

    @staticmethod
    def join(pieces: Iterable["Piece"]) -> "Piece":
        pieces = [p for p in pieces if len(p.faces)]
        if not pieces:
            return Piece(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32))
        starts = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
        return Piece(np.concatenate([p.vertices for p in pieces]).astype(np.float32, copy=False),
                     np.concatenate([p.faces + np.uint32(s) for p, s in zip(pieces, starts)]).astype(np.uint32))


@dataclass
class MultiLodMesh:
    """One segment's manifest (``<id>.index``) and fragment data (``<id>``)."""

    manifest: bytes
    data: bytes
    fragments: list[dict[Position, bytes]] = field(default_factory=list, repr=False)  # per LOD, as stored
    # mesh_segment: the level-0 voxels ``[lo, hi)`` the mesh depends on (the segment's box and a
    # voxel around it); a cache revalidates the source files under them.
    bounds: tuple[list[float], list[float]] | None = None


# -- layout and info --------------------------------------------------------------------------
def layout_for(pyramid: LabelPyramid, max_lods: int = MAX_LODS, fragment_voxels: int = FRAGMENT_VOXELS) -> Layout:
    """The octree for ``pyramid``: near-cubic LOD-0 nodes and one LOD per coarser level (at most ``max_lods``)."""
    res = pyramid.resolution
    finest = min(res)
    chunk = tuple(max(1, round(fragment_voxels * finest / r)) for r in res)
    levels, scales = [0], [1.0]
    for i, lv in enumerate(pyramid.levels[1:], start=1):
        if len(levels) >= max_lods:
            break
        scale = float(max(lv.factors))
        if scale > scales[-1]:  # a level no coarser than the last LOD's adds nothing
            levels.append(i)
            scales.append(scale)
    # Every vertex of LOD k lies on or inside level k's volume box (padding is background).
    origin = tuple(float(min(math.floor(pyramid.levels[i].lo[a] * pyramid.levels[i].factors[a]) for i in levels))
                   for a in range(3))
    return Layout(chunk, origin, tuple(levels), tuple(scales), tuple(res))


def info_json(layout: Layout) -> dict:
    """The mesh source's ``info``: stored-model (level-0 voxel) coordinates scaled to nanometres."""
    rx, ry, rz = layout.resolution
    return {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": layout.vertex_quantization_bits,
        "transform": [rx, 0, 0, 0, 0, ry, 0, 0, 0, 0, rz, 0],
        "lod_scale_multiplier": 1.0,
    }


# -- meshing boxes ----------------------------------------------------------------------------
Reader = Callable[[int, list[int], list[int]], np.ndarray]


def mesh_node(
    pyramid: LabelPyramid, layout: Layout, lod: int, position: Position,
    segments: Collection[int] | None = None, read: Reader | None = None,
) -> dict[int, Piece]:
    """Every segment's (or only ``segments``') surface within one octree node, by segment id.

    The pieces are cut at the node's box and, for LOD > 0, at its children's
    planes, ready for :func:`encode_fragment`.  ``read(level, lo, hi)`` reads
    voxels of a level (default: :meth:`LabelPyramid.read`).  This is what an
    offline mesher calls per node of the whole volume; :func:`mesh_segment`
    meshes one segment.
    """
    pieces, _ = _mesh_node(pyramid, layout, lod, position, segments, read or pyramid.read)
    return pieces


def _mesh_node(pyramid, layout, lod, position, segments, read):
    """:func:`mesh_node`, and the labels read (node box plus a one-voxel margin, in level voxels)."""
    import zmesh

    level = layout.lod_levels[lod]
    f = pyramid.levels[level].factors
    lo, hi = layout.node_box(lod, position)
    a, b = pyramid.to_level(level, lo, hi)
    a, b = [x - 1 for x in a], [x + 1 for x in b]
    labels = read(level, a, b)
    single = segments is not None and len(segments) == 1
    if single:
        (only,) = segments
        volume = (labels == labels.dtype.type(np.array(only, np.uint64).astype(labels.dtype))).view(np.uint8)
        ids = {1: int(only)} if volume.any() else {}
    else:
        present = np.unique(labels)
        wanted = present[present != 0]
        if segments is not None:
            wanted = wanted[np.isin(wanted, np.asarray(list(segments), dtype=labels.dtype))]
        volume, ids = labels, {int(v): int(v) for v in wanted}
    if not ids:
        return {}, labels
    mesher = zmesh.Mesher(tuple(float(x) for x in f))
    mesher.mesh(np.asfortranarray(volume) if single else volume)
    shift = np.array([(x + 0.5) * s for x, s in zip(a, f)], dtype=np.float64)  # voxel centre -> corner coords
    cut = [c * (1 << max(lod - 1, 0)) for c in layout.chunk_shape]
    keep = range(1, 3) if lod else range(1, 2)
    out = {}
    for label, segment in ids.items():
        if lod:
            mesh = mesher.get(label, normals=False, reduction_factor=REDUCTION, max_error=float(max(f)))
        else:
            mesh = mesher.get(label, normals=False)
        if len(mesh.faces) == 0:
            continue
        vertices = (mesh.vertices.astype(np.float64) + shift).astype(np.float32)
        # chunk_mesh puts everything below its origin into cell 0 uncut: start the grid one cell lower.
        # It aborts the process on a negative origin (zmesh 1.15), so cut in coordinates relative to it.
        below = np.array([x - c for x, c in zip(lo, cut)], dtype=np.float64)
        local = (vertices.astype(np.float64) - below).astype(np.float32)
        parts = zmesh.chunk_mesh(zmesh.Mesh(local, mesh.faces, None), cut, (0.0, 0.0, 0.0))
        kept = Piece.join(Piece((p.vertices.astype(np.float64) + below).astype(np.float32), p.faces)
                          for k, p in parts.items() if all(i in keep for i in k))
        if len(kept.faces):
            _snap(kept.vertices, lo, cut)
            out[segment] = kept
    mesher.clear()
    return out, labels


def _snap(vertices: np.ndarray, lo, cut) -> None:
    """Put vertices that chunk_mesh left a rounding error off a cut plane back onto it (in place).

    The client assigns a vertex to a child by comparing it with the midpoint; a cut
    point 1e-7 below the plane would make its triangle cross into the other child.
    """
    for axis in range(3):
        planes = lo[axis] + cut[axis] * np.arange(3)
        column = vertices[:, axis]
        nearest = planes[np.abs(column[:, None] - planes).argmin(1)]
        close = np.abs(column - nearest) < 1e-3
        column[close] = nearest[close]


def encode_fragment(piece: Piece, layout: Layout, lod: int, position: Position) -> bytes:
    """A node's piece as the Draco mesh the format stores (b"" for no triangles)."""
    import DracoPy

    if not len(piece.faces):
        return b""
    top = (1 << layout.vertex_quantization_bits) - 1
    lo, hi = layout.node_box(lod, position)
    lo, size = np.asarray(lo), np.asarray(hi) - np.asarray(lo)
    # Half up, not to even: a vertex on a child plane (0.5) must be the client's midpoint 2**(bits-1).
    q = np.clip(np.floor((piece.vertices.astype(np.float64) - lo) / size * top + 0.5), 0, top)
    # Draco quantizes positions itself; with this range and origin its quantization is the
    # identity, so the integers the client reads (it skips Draco's dequantization) are q.
    return DracoPy.encode(q, piece.faces, quantization_bits=layout.vertex_quantization_bits,
                          quantization_range=float(top), quantization_origin=[0.0, 0.0, 0.0],
                          compression_level=DRACO_LEVEL)


# -- the manifest ---------------------------------------------------------------------------
def morton(position: Position) -> int:
    """The Z-curve key of a node position (x in the lowest bit), the order the manifest lists nodes in."""
    key = 0
    for bit in range(32):
        for axis in range(3):
            key |= ((position[axis] >> bit) & 1) << (3 * bit + axis)
    return key


def assemble(layout: Layout, fragments: list[dict[Position, bytes]]) -> MultiLodMesh | None:
    """Manifest and data from each LOD's encoded fragments by position; None when all are empty.

    LODs after the last one with triangles are dropped (the client builds the
    octree's top itself), and every node gets its parent in the next LOD, an
    empty one if need be: the client reaches nodes only through their parents.
    """
    lods = [dict(f) for f in fragments]
    while lods and not any(lods[-1].values()):
        lods.pop()
    if not lods:
        return None
    for k in range(len(lods) - 1):
        for p in list(lods[k]):
            lods[k + 1].setdefault((p[0] >> 1, p[1] >> 1, p[2] >> 1), b"")
    n = len(lods)
    head = [struct.pack("<3f", *layout.chunk_shape), struct.pack("<3f", *layout.grid_origin), struct.pack("<I", n),
            struct.pack(f"<{n}f", *layout.lod_scales[:n]), struct.pack(f"<{3 * n}f", *([0.0] * 3 * n)),
            struct.pack(f"<{n}I", *(len(f) for f in lods))]
    data = []
    for frags in lods:
        order = sorted(frags, key=morton)
        head.append(np.array(order, dtype="<u4").reshape(-1, 3).T.tobytes())
        head.append(np.array([len(frags[p]) for p in order], dtype="<u4").tobytes())
        data.extend(frags[p] for p in order)
    return MultiLodMesh(b"".join(head), b"".join(data), lods)


# -- one segment ----------------------------------------------------------------------------
def mesh_segment(pyramid: LabelPyramid, segment: int, layout: Layout | None = None) -> MultiLodMesh | None:
    """The multi-LOD mesh of one segment; None when the segment is not in the volume.

    The segment is found in the coarsest level that shows it
    (:meth:`LabelPyramid.find`); LOD 0 then grows node by node from there while
    the segment continues across a node's face, so parts thinner than a coarse
    voxel are followed as long as they connect to what the coarse level shows.
    """
    layout = layout or layout_for(pyramid)
    found = pyramid.find(segment)
    if found is None:
        return None
    level, a, b = found
    lo, hi = pyramid.to_level0(level, [x - 1 for x in a], [x + 1 for x in b])
    ids = (segment,)
    todo = layout.nodes_covering(0, lo, hi)
    # One read for the nodes that cover where the coarse level shows the segment (and their margins).
    first = layout.node_box(0, tuple(min(p[i] for p in todo) for i in range(3)))[0]
    last = layout.node_box(0, tuple(max(p[i] for p in todo) for i in range(3)))[1]
    read = _windowed(pyramid, 0, [x - 1 for x in first], [x + 1 for x in last])
    lod0: dict[Position, bytes] = {}
    seen = set(todo)
    box_lo, box_hi = [math.inf] * 3, [-math.inf] * 3  # level-0 voxels holding the segment
    while todo:
        position = todo.pop()
        pieces, labels = _mesh_node(pyramid, layout, 0, position, ids, read)
        inside = _mask(labels, segment)
        if not inside.any():
            continue
        core = inside[1:-1, 1:-1, 1:-1]
        if core.any():
            node_lo, _ = layout.node_box(0, position)
            e_lo, e_hi = _extent(core)
            box_lo = [min(x, n + e) for x, n, e in zip(box_lo, node_lo, e_lo)]
            box_hi = [max(x, n + e) for x, n, e in zip(box_hi, node_lo, e_hi)]
        if segment in pieces:
            lod0[position] = encode_fragment(pieces[segment], layout, 0, position)
        for step in itertools.product((-1, 0, 1), repeat=3):
            if step == (0, 0, 0):
                continue
            nxt = tuple(p + s for p, s in zip(position, step))
            if min(nxt) < 0 or nxt in seen:
                continue
            margin = tuple({-1: slice(0, 1), 0: slice(1, -1), 1: slice(-1, None)}[s] for s in step)
            if inside[margin].any():
                seen.add(nxt)
                todo.append(nxt)
    if not lod0:
        return None
    fragments = [lod0]
    extent = max(h - l for l, h in zip(box_lo, box_hi))
    for lod in range(1, len(layout.lod_levels)):
        lv = layout.lod_levels[lod]
        g = pyramid.levels[lv].factors
        if extent / max(g) < MIN_LOD_VOXELS:
            break
        # The level's voxels that can hold the segment, one more around (mode keeps a label where it was).
        wa, wb = pyramid.to_level(lv, box_lo, box_hi)
        wlo, whi = pyramid.to_level0(lv, [x - 1 for x in wa], [x + 1 for x in wb])
        read = _windowed(pyramid, lv, wlo, whi, clip=True)
        frags = {}
        for position in layout.nodes_covering(lod, wlo, whi):
            pieces, _ = _mesh_node(pyramid, layout, lod, position, ids, read)
            if segment in pieces:
                frags[position] = encode_fragment(pieces[segment], layout, lod, position)
        fragments.append(frags)
    mesh = assemble(layout, fragments)
    if mesh is not None:
        mesh.bounds = ([x - 1 for x in box_lo], [x + 1 for x in box_hi])
    return mesh


def _mask(labels: np.ndarray, segment: int) -> np.ndarray:
    return labels == labels.dtype.type(np.array(segment, np.uint64).astype(labels.dtype))


def _extent(mask: np.ndarray) -> tuple[list[int], list[int]]:
    from .pyramid import _extent as extent

    return extent(mask)


def _windowed(pyramid: LabelPyramid, level: int, lo, hi, clip: bool = False) -> Reader:
    """A reader that serves reads of ``level`` from one read of the level-0 box ``[lo, hi)`` when it is small.

    With ``clip``, voxels outside the window read as background: the caller
    knows the segment is not there (coarse LODs of one segment), and a node of
    a coarse LOD may be far larger than the segment.
    """
    a, b = pyramid.to_level(level, lo, hi)
    window = None
    if math.prod(max(0, y - x) for x, y in zip(a, b)) <= WINDOW_VOXELS:
        window = pyramid.read(level, a, b)

    def read(lv: int, lo2: list[int], hi2: list[int]) -> np.ndarray:
        inner = all(x >= y for x, y in zip(lo2, a)) and all(x <= y for x, y in zip(hi2, b))
        if lv == level and window is not None and (inner or clip):
            out = np.zeros([h - l for l, h in zip(lo2, hi2)], dtype=window.dtype)
            s = [max(x, y) for x, y in zip(lo2, a)]
            e = [min(x, y) for x, y in zip(hi2, b)]
            if all(x < y for x, y in zip(s, e)):
                out[tuple(slice(x - l, y - l) for x, y, l in zip(s, e, lo2))] = \
                    window[tuple(slice(x - w, y - w) for x, y, w in zip(s, e, a))]
            return out
        if lv == level and clip:  # too large to hold: read node by node, still only within the window
            s = [max(x, y) for x, y in zip(lo2, a)]
            e = [min(x, y) for x, y in zip(hi2, b)]
            out = np.zeros([h - l for l, h in zip(lo2, hi2)], dtype=pyramid.dtype)
            if all(x < y for x, y in zip(s, e)):
                out[tuple(slice(x - l, y - l) for x, y, l in zip(s, e, lo2))] = pyramid.read(lv, s, e)
            return out
        return pyramid.read(lv, lo2, hi2)

    return read

"""Shared by the annotation tests: synthetic tables of every type, and a full read-back check.

The check reads with neuroglancer's own ``AnnotationReader`` and recomputes, independently of the
writer, which cells each annotation must be listed in.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from neuroglancer.read_precomputed_annotations import AnnotationReader

RANK = 3
PROPERTIES = ["n:uint32", "score:float32", "w:int16", "kind", "flag:int8", "colour"]
KINDS = ["axon", "dendrite", "soma"]


def synthetic_table(type_: str, n: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A table of ``n`` annotations (polylines: ``n`` lines of vertices) with every property kind,
    a one-id relationship ``seg`` and a list relationship ``partners``; and the column options."""
    rng = np.random.default_rng(seed)
    origin = np.array([-40.0, 1000.0, 7.0])  # a non-zero, partly negative offset
    extent = np.array([500.0, 300.0, 60.0])  # anisotropic bounds

    def points(k):
        return origin + rng.uniform(0, 1, (k, RANK)) * extent

    columns: dict[str, np.ndarray] = {}
    if type_ == "point":
        geometry = ["x", "y", "z"]
        columns.update(zip(geometry, points(n).T))
    elif type_ in ("line", "axis_aligned_bounding_box"):
        geometry = ["xa", "ya", "za", "xb", "yb", "zb"]
        a = points(n)
        b = np.clip(a + rng.normal(0, 1, (n, RANK)) * extent * 0.15, origin, origin + extent)
        columns.update(zip(geometry, np.concatenate([a, b], axis=1).T))
    elif type_ == "ellipsoid":
        geometry = ["cx", "cy", "cz", "rx", "ry", "rz"]
        centre = points(n)
        radii = rng.uniform(0.5, 1, (n, RANK)) * extent * 0.08
        columns.update(zip(geometry, np.concatenate([centre, radii], axis=1).T))
    elif type_ == "polyline":
        geometry = ["x", "y", "z"]
        counts = rng.integers(2, 7, n)
        starts = np.repeat(points(n), counts, axis=0)
        steps = rng.normal(0, 1, (counts.sum(), RANK)) * extent * 0.04
        owner = np.repeat(np.arange(n), counts)
        walk = np.cumsum(steps, axis=0)
        walk -= np.repeat(walk[np.cumsum(counts) - counts], counts, axis=0)
        verts = np.clip(starts + walk, origin, origin + extent)
        columns.update(zip(geometry, verts.T))
        ids = 5000 + owner * 3
        rows = len(owner)
    else:
        raise ValueError(type_)
    if type_ != "polyline":
        rows = n
        ids = rng.permutation(np.arange(10, 10 + 7 * n, 7, dtype=np.uint64))
    per = np.repeat(np.arange(n), counts) if type_ == "polyline" else np.arange(n)
    u = rng.random(n)
    columns.update(
        id=np.asarray(ids, dtype=np.uint64),
        n=(rng.integers(0, 2**32 - 1, n, dtype=np.uint64))[per],
        score=u[per],
        w=rng.integers(-30000, 30000, n)[per],
        kind=np.array(KINDS)[rng.integers(0, 3, n)][per],
        flag=rng.integers(-128, 128, n)[per],
        colour=np.array(["#%02x%02x%02x" % tuple(c) for c in rng.integers(0, 256, (n, 3))])[per],
        seg=rng.integers(1, 40, n, dtype=np.uint64)[per],
    )
    partners = [list(rng.integers(2**60, 2**60 + 50, rng.integers(0, 4), dtype=np.uint64)) for _ in range(n)]
    frame = pd.DataFrame(columns)
    frame["partners"] = [partners[i] for i in per]
    assert len(frame) == rows
    options = dict(
        type=type_,
        columns=geometry,
        id_column="id",
        properties=PROPERTIES,
        relationships=["seg", "partners"],
        scale=[8, 8, 40],
        units="nm",
    )
    return frame, options


def expected_annotations(frame: pd.DataFrame, type_: str, geometry: list[str]) -> dict[int, dict]:
    """id → geometry (float32), property values, relationships, as the reader should return them."""
    out = {}
    ids = frame["id"].to_numpy()
    coords = frame[geometry].to_numpy().astype(np.float32)
    for _, rows in pd.Series(np.arange(len(frame))).groupby(ids, sort=False):
        first = rows.iloc[0]
        row = frame.iloc[first]
        geom = coords[rows.to_numpy()].ravel()
        colour = row["colour"].lstrip("#")
        out[int(ids[first])] = dict(
            geometry=geom,
            props=[
                int(row["n"]),
                np.float32(row["score"]),
                int(row["w"]),
                KINDS.index(row["kind"]),
                int(row["flag"]),
                [int(colour[i : i + 2], 16) for i in (0, 2, 4)],
            ],
            seg=[int(row["seg"])],
            partners=[int(p) for p in row["partners"]],
        )
    return out


def annotation_geometry(annotation, type_: str) -> np.ndarray:
    if type_ == "point":
        return np.asarray(annotation.point, dtype=np.float32)
    if type_ == "ellipsoid":
        return np.concatenate([annotation.center, annotation.radii]).astype(np.float32)
    if type_ == "polyline":
        return np.asarray(annotation.points, dtype=np.float32).ravel()
    return np.concatenate([annotation.point_a, annotation.point_b]).astype(np.float32)


def _cells_touched(type_: str, geom: np.ndarray, lower, chunk, grid) -> tuple[set, callable]:
    """Cells a shape certainly touches (from dense samples of it), and an exact test for one cell."""
    g = geom.astype(np.float64)
    if type_ == "point":
        samples = g[None, :]
    elif type_ == "axis_aligned_bounding_box":
        lo, hi = np.minimum(g[:RANK], g[RANK:]), np.maximum(g[:RANK], g[RANK:])
        first = np.clip(np.floor((lo - lower) / chunk), 0, grid - 1).astype(int)
        last = np.clip(np.floor((hi - lower) / chunk), 0, grid - 1).astype(int)
        cells = set(itertools.product(*[range(a, b + 1) for a, b in zip(first, last)]))
        return cells, lambda cell: tuple(cell) in cells
    elif type_ in ("line", "polyline"):
        verts = g.reshape(-1, RANK)
        t = np.linspace(0, 1, 4001)[:, None]
        samples = np.concatenate([a + t * (b - a) for a, b in zip(verts[:-1], verts[1:])])
    elif type_ == "ellipsoid":
        centre, radii = g[:RANK], g[RANK:]
        rng = np.random.default_rng(0)
        v = rng.normal(size=(20000, RANK))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        samples = centre + v * radii * rng.uniform(0, 1, (len(v), 1)) ** (1 / 3)
        samples = np.concatenate([samples, centre + v * radii * (1 - 1e-9)])

        def exact(cell):
            lo = lower + np.asarray(cell) * chunk
            nearest = np.clip(centre, lo, lo + chunk)
            return (((nearest - centre) / radii) ** 2).sum() <= 1 + 1e-9

        cells = {tuple(c) for c in np.clip(np.floor((samples - lower) / chunk), 0, grid - 1).astype(int)}
        return cells, exact
    cells = {tuple(c) for c in np.clip(np.floor((samples - lower) / chunk), 0, grid - 1).astype(int)}

    def near(cell):  # the shape passes within a sample spacing of the cell
        lo = lower + np.asarray(cell) * chunk
        gap = np.linalg.norm(np.clip(samples, lo, lo + chunk) - samples, axis=1).min()
        return gap <= np.linalg.norm(chunk) * 1e-3 + 1e-9 + (np.ptp(samples, axis=0).max() / 4000)

    return cells, near


def check_annotations(reader: AnnotationReader, expected: dict[int, dict], type_: str, limit: int) -> dict:
    """Assert that ``reader`` holds exactly ``expected``; return a few facts for further checks."""
    meta = reader.metadata
    for member in ("@type", "dimensions", "lower_bound", "upper_bound", "annotation_type", "properties",
                   "relationships", "by_id", "spatial"):
        assert member in meta, member
    assert meta["annotation_type"] == type_
    lower = np.array(meta["lower_bound"])
    upper = np.array(meta["upper_bound"])

    # by_id: every id with exact geometry, properties and relationships.
    for annotation_id, want in expected.items():
        got = reader.by_id[annotation_id]
        np.testing.assert_array_equal(annotation_geometry(got, type_), want["geometry"])
        assert int(got.props[0]) == want["props"][0]
        assert np.float32(got.props[1]) == want["props"][1]
        assert [int(v) for v in got.props[2:5]] == want["props"][2:5]
        assert [int(v) for v in got.props[5]] == want["props"][5]
        assert [int(s) for s in got.segments[0]] == want["seg"]
        assert [int(s) for s in got.segments[1]] == want["partners"]

    # Relationship indices: each segment lists exactly the annotations that name it.
    for rel in ("seg", "partners"):
        by_segment: dict[int, set] = {}
        for annotation_id, want in expected.items():
            for s in set(want[rel]):
                by_segment.setdefault(s, set()).add(annotation_id)
        for segment, ids in by_segment.items():
            listed = reader.relationships[rel][segment]
            assert sorted(int(a.id) for a in listed) == sorted(ids)
            for a in listed:
                np.testing.assert_array_equal(annotation_geometry(a, type_), expected[int(a.id)]["geometry"])

    # Spatial index: levels disjoint, together complete; each annotation in every cell it touches.
    levels_of: dict[int, set] = {}
    cells_of: dict[int, set] = {}
    counts = []
    previous_chunk = None
    for level, index in enumerate(reader.spatial):
        grid = np.array(index.metadata["grid_shape"])
        chunk = np.array(index.metadata["chunk_size"])
        np.testing.assert_allclose(grid * chunk, upper - lower)
        if previous_chunk is None:
            assert (grid == 1).all()
        else:
            assert np.all((chunk == previous_chunk) | np.isclose(chunk * 2, previous_chunk))
        previous_chunk = chunk
        for cell in itertools.product(*[range(s) for s in grid]):
            try:
                listed = index[cell]
            except KeyError:
                continue
            counts.append((level, len(listed)))
            ids = [int(a.id) for a in listed]
            assert len(ids) == len(set(ids)), "an annotation listed twice in one cell"
            for a in listed:
                np.testing.assert_array_equal(annotation_geometry(a, type_), expected[int(a.id)]["geometry"])
                levels_of.setdefault(int(a.id), set()).add(level)
                cells_of.setdefault(int(a.id), set()).add(cell)
    assert set(levels_of) == set(expected), "the spatial levels miss annotations"
    assert all(len(v) == 1 for v in levels_of.values()), "an annotation appears at two levels"
    for annotation_id, (level,) in levels_of.items():
        index = reader.spatial[level]
        grid = np.array(index.metadata["grid_shape"])
        chunk = np.array(index.metadata["chunk_size"])
        touched, intersects = _cells_touched(type_, expected[annotation_id]["geometry"], lower, chunk, grid)
        listed = cells_of[annotation_id]
        assert touched <= listed, f"annotation {annotation_id} missing from cells {touched - listed}"
        assert all(intersects(c) for c in listed - touched), f"annotation {annotation_id} in cells it misses"
    # Sampling keeps cells near the limit: the fullest cell's count is Binomial(maxCount, limit/maxCount).
    slack = 6 * math.sqrt(limit) + 1
    assert max(c for _, c in counts) <= limit + slack
    return {"levels": len(reader.spatial), "cell_counts": counts}

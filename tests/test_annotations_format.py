"""The writer's output, read back from disk by neuroglancer's own AnnotationReader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from neuroglancer.read_precomputed_annotations import AnnotationReader
from test_annotations_support import check_annotations, expected_annotations, synthetic_table

from annotations import ANNOTATION_TYPES, write_annotations
from volumes.sharding import compressed_morton_code
from volumes.sharding import murmurhash3_x86_128_low64

SIZES = {"point": 3000, "line": 500, "axis_aligned_bounding_box": 400, "ellipsoid": 300, "polyline": 300}
LIMIT = 150


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("type_", ANNOTATION_TYPES)
def test_roundtrip_every_type(tmp_path, type_, sharded):
    frame, options = synthetic_table(type_, SIZES[type_], seed=3)
    out = write_annotations(frame, tmp_path / "ann", limit=LIMIT, sharded=sharded, seed=1, **options)
    reader = AnnotationReader(f"file://{out}/")
    facts = check_annotations(reader, expected_annotations(frame, type_, options["columns"]), type_, LIMIT)
    assert facts["levels"] >= 2, "a multi-level index was expected at this size"
    info = json.loads((out / "info").read_text())
    assert ("sharding" in info["by_id"]) == sharded
    assert all(("sharding" in s) == sharded for s in info["spatial"] + info["relationships"])
    assert info["dimensions"] == {"x": [8.0, "nm"], "y": [8.0, "nm"], "z": [40.0, "nm"]}
    # Properties are listed in record order: 4-byte, then 2-byte, then 1-byte types.
    assert [p["type"] for p in info["properties"]] == ["uint32", "float32", "int16", "uint8", "int8", "rgb"]
    assert info["properties"][3]["enum_labels"] == ["axon", "dendrite", "soma"]
    assert not list(tmp_path.glob(".ann.*")), "the staging folder was left behind"


def test_sampling_follows_one_probability_per_level(tmp_path):
    """Coarse levels are thinned to about ``limit`` in the fullest cell, and cell lists are shuffled."""
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 1000, (20000, 3))
    out = write_annotations(points, tmp_path / "ann", columns=["x", "y", "z"], limit=500, seed=2)
    reader = AnnotationReader(f"file://{out}/")
    cell = reader.spatial[0][(0, 0, 0)]
    assert 400 <= len(cell) <= 600  # Binomial(20000, 500/20000): mean 500, sd 22
    ids = [int(a.id) for a in cell]
    assert ids != sorted(ids)
    # Levels continue until everything is emitted; the finest holds no more than the limit's slack.
    total = 0
    for index in reader.spatial:
        grid = index.metadata["grid_shape"]
        for c in np.ndindex(*grid):
            try:
                total += len(index[c])
            except KeyError:
                pass
    assert total == 20000


def test_sharded_by_default_above_threshold_and_gzip(tmp_path):
    points = np.random.default_rng(0).uniform(0, 50, (12000, 3))
    out = write_annotations(points, tmp_path / "a", columns=["x", "y", "z"], compression="gzip", seed=0)
    info = json.loads((out / "info").read_text())
    assert info["by_id"]["sharding"]["data_encoding"] == "gzip"
    assert info["spatial"][0]["sharding"]["hash"] == "identity"
    assert info["by_id"]["sharding"]["hash"] == "murmurhash3_x86_128"
    reader = AnnotationReader(f"file://{out}/")
    np.testing.assert_array_equal(reader.by_id[11999].point, points[11999].astype(np.float32))
    raw = write_annotations(points, tmp_path / "b", columns=["x", "y", "z"], compression="raw", seed=0)
    info = json.loads((raw / "info").read_text())
    assert info["by_id"]["sharding"]["minishard_index_encoding"] == "raw"
    assert AnnotationReader(f"file://{raw}/").by_id[7].point is not None


def test_murmurhash_matches_reference():
    # Reference values from the mmh3 package: mmh3.hash64(key.to_bytes(8, "little"), x64arch=False)[0].
    keys = np.array([0, 1, 12345678901234567, 2**64 - 1], dtype=np.uint64)
    assert murmurhash3_x86_128_low64(keys).tolist() == [
        5148371408780832321,
        16770674756601302682,
        640264003810928997,
        6291360166951214362,
    ]


def test_compressed_morton_code_skips_exhausted_dimensions():
    # grid 4×2×1: bits x0 y0 x1 (z has none); cell (3, 1, 0) → 0b111, (2, 0, 0) → 0b100.
    codes = compressed_morton_code(np.array([[3, 1, 0], [2, 0, 0], [1, 1, 0]]), (4, 2, 1))
    assert codes.tolist() == [0b111, 0b100, 0b011]


@pytest.mark.parametrize(
    "lengths",
    [
        [[5, 1, 2]] * 7,  # every part as long in every entry: the column-block path
        [[2, 300, 120], [2, 90, 36], [2, 200, 80]],  # few long pieces (mean > LONG_PIECE_WORDS): slice copies
        [[1, 0, 3], [1, 4, 1], [1, 2, 0], [1, 1, 1]],  # short ragged pieces: the index path
    ],
    ids=["constant", "long", "ragged"],
)
def test_interleave_pieces_matches_a_plain_concatenation(lengths):
    from annotations.ragged import interleave_pieces, offsets_from_lengths

    rng = np.random.default_rng(0)
    lengths = np.array(lengths)
    parts = []
    for p in range(lengths.shape[1]):
        offsets = offsets_from_lengths(lengths[:, p])
        parts.append((rng.integers(0, 2**32, offsets[-1], dtype=np.uint64).astype("<u4"), offsets))
    words, totals = interleave_pieces(parts)
    expected = [w[o[e] : o[e + 1]] for e in range(len(lengths)) for w, o in parts]
    np.testing.assert_array_equal(words, np.concatenate(expected))
    np.testing.assert_array_equal(totals, lengths.sum(axis=1))
    assert words.dtype == np.dtype("<u4")

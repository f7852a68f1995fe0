"""``ngserve skeleton``: kimimaro (TEASAR) skeletons of a label volume, written in Neuroglancer's
precomputed skeleton format (``skeletons.md``): an ``info`` of ``@type neuroglancer_skeletons`` and
one file per segment id, vertex positions in nanometres (the model space), a ``radius`` attribute.

The labels are read through :class:`meshes.LabelPyramid` (any format volumes reads, the same levels
as the meshes).  kimimaro needs a whole array in memory, so the finest pyramid level that fits
``max_memory`` is skeletonized (``level`` overrides).  Files are written into a hidden staging folder that replaces
the output when every skeleton is written, the ``info`` last.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from volumes import building
from volumes.convert_stores import write_json

from .prepare import TYPES, PrepareError, attach_to_info
from .pyramid import LabelPyramid

# kimimaro holds the labels, a float32 distance field and per-object crops: ~3x the uint64 labels.
BYTES_PER_VOXEL = 24


def encode_skeleton(vertices: np.ndarray, edges: np.ndarray, radii: np.ndarray) -> bytes:
    """One segment's file: counts, float32 ``[n, 3]`` positions, uint32 ``[m, 2]`` edges, float32 radii."""
    header = np.array([len(vertices), len(edges)], dtype="<u4")
    return b"".join([header.tobytes(), np.asarray(vertices, "<f4").tobytes(), np.asarray(edges, "<u4").tobytes(),
                     np.asarray(radii, "<f4").tobytes()])


def _shape(pyramid: LabelPyramid, level: int) -> list[int]:
    lv = pyramid.levels[level]
    return [h - l for l, h in zip(lv.lo, lv.hi)]


def choose_level(pyramid: LabelPyramid, max_memory: int) -> int:
    """The finest level whose whole array kimimaro can hold within ``max_memory``."""
    for level in range(len(pyramid.levels)):
        if int(np.prod(_shape(pyramid, level))) * BYTES_PER_VOXEL <= max_memory:
            return level
    coarsest = "x".join(map(str, _shape(pyramid, len(pyramid.levels) - 1)))
    raise PrepareError(f"even the coarsest level ({coarsest} voxels) needs more than --max-memory; raise it")


def skeletonize(
    ds,
    pyramid: LabelPyramid,
    output: Path,
    *,
    segments: np.ndarray | None = None,
    level: int | None = None,
    max_memory: int = 2 << 30,
    dust: int = 1000,
    scale: float = 1.5,
    const_voxels: float = 10.0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Skeletons of ``segments`` (default all) at ``level``; returns a summary for the one-line report."""
    import kimimaro

    started = time.monotonic()
    if level is None:
        level = choose_level(pyramid, max_memory)
    elif not 0 <= level < len(pyramid.levels):
        raise PrepareError(f"--level {level}: the labels have levels 0 to {len(pyramid.levels) - 1}")
    lv = pyramid.levels[level]
    voxel = np.array(pyramid.resolution) * np.array(lv.factors, dtype=float)  # nm per voxel of the level
    labels = pyramid.read(level, lv.lo, lv.hi)
    if segments is not None:
        present = np.isin(segments, labels)
        if not present.all():
            missing = ",".join(str(s) for s in segments[~present][:5])
            raise PrepareError(f"--segments: {missing} not in {ds.location}; give ids the labels contain")
    skeletons = kimimaro.skeletonize(
        np.asfortranarray(labels),
        teasar_params={"scale": scale, "const": const_voxels * float(voxel.max())},
        anisotropy=tuple(float(v) for v in voxel),
        object_ids=None if segments is None else [int(s) for s in segments],
        dust_threshold=dust, progress=False, parallel=workers or os.cpu_count() or 1,
    )
    # kimimaro puts voxel centres at index * voxel size; the model space has voxel corners at the
    # level's absolute voxel index * voxel size, so a centre is half a voxel further.
    shift = (np.array(lv.lo, dtype=float) + 0.5) * voxel
    with building(output) as staging:
        ids = sorted(skeletons)
        for done, segment in enumerate(ids, 1):
            sk = skeletons[segment]
            data = encode_skeleton(sk.vertices + shift, sk.edges, sk.radii)
            (staging / str(int(segment))).write_bytes(data)
            if progress:
                progress(done, len(ids))
        write_json(staging / "info", {
            "@type": TYPES["skeletons"],
            "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
            "vertex_attributes": [{"id": "radius", "data_type": "float32", "num_components": 1}],
        })
    attached = attach_to_info(ds, output, "skeletons")
    return {"output": str(output), "skeletons": len(skeletons), "level": level, "attached": attached,
            "seconds": time.monotonic() - started}

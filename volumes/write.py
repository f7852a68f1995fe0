"""Writing datasets with tensorstore: OME-Zarr pyramids, plain zarr, N5 and precomputed.

Used by the demo, the test fixtures and the benchmarks.  Arrays are given in
C order (``z, y, x`` for volumes); the N5 and precomputed writers reverse them
into those formats' x-first order.  Each writer builds its folder in a temporary
sibling and renames it into place (replacing what was there), so a failed or
interrupted write never leaves a dataset that looks valid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorstore as ts

from .atomic import building


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _pyramid(data: np.ndarray, levels: int, factors: Sequence[int], method: str) -> list[np.ndarray]:
    """``levels`` arrays, each downsampled by ``factors`` from the previous one.

    Each level is downsampled from the one just read, not through a chain of downsample views
    (which would recompute every finer level from ``data`` again).
    """
    out = [data]
    for _ in range(1, levels):
        out.append(ts.downsample(ts.array(out[-1]), list(factors), method=method).read().result())
    return out


def _zarr_store(path: Path, arr: np.ndarray, chunks: Sequence[int], version: int, dimension_names=None):
    chunks = [min(c, s) for c, s in zip(chunks, arr.shape)]
    if version == 3:
        metadata: dict = {
            "shape": list(arr.shape),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "data_type": np.dtype(arr.dtype).name,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3}}],
        }
        if dimension_names:
            metadata["dimension_names"] = list(dimension_names)
        spec = {"driver": "zarr3", "metadata": metadata}
    else:
        spec = {
            "driver": "zarr",
            "metadata": {
                "shape": list(arr.shape),
                "chunks": chunks,
                "dtype": np.dtype(arr.dtype).str,
                "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
                "dimension_separator": "/",
            },
        }
        if arr.dtype.kind in "iuf":
            # tensorstore writes fill_value null, which breaks uint64 in Neuroglancer's client
            # (see ngstate.viewable); 0 means the same for every reader.
            spec["metadata"]["fill_value"] = 0
    spec.update({"kvstore": {"driver": "file", "path": str(path) + "/"}, "create": True, "delete_existing": True})
    store = ts.open(spec).result()
    store.write(arr).result()


def write_ome_zarr(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    axes: Sequence[str] = ("z", "y", "x"),
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    unit: str = "micrometer",
    levels: int = 3,
    chunks: Sequence[int] | None = None,
    method: str = "mean",
    label: bool = False,
    name: str | None = None,
    translation: Sequence[float] | None = None,
    zarr_version: int = 2,
    windows: Sequence[tuple[float, float]] | None = None,
) -> None:
    """Write ``data`` as an OME-Zarr multiscale image: 0.4 on zarr v2, or 0.5 on zarr v3.

    ``axes`` names every axis; ``c`` is a channel axis and ``t`` time, and only
    the other (space) axes are halved per level, with tensorstore's downsample
    driver (``method``: "mean" for images, "mode" for labels).  ``voxel_size``
    and ``translation`` are per axis (channel entries are ignored); each level
    carries the half-voxel translation OME-Zarr implies.  ``label=True`` adds
    ``image-label`` metadata; ``windows`` adds ``omero`` channel windows.
    """
    with building(path) as root:
        kinds = ["channel" if a == "c" else "time" if a == "t" else "space" for a in axes]
        factors = [2 if k == "space" else 1 for k in kinds]
        base = [1.0 if k == "channel" else float(v) for k, v in zip(kinds, voxel_size)]
        shift = [0.0 if k == "channel" else float(t) for k, t in zip(kinds, translation or [0.0] * len(axes))]
        chunks = list(chunks or [1 if k == "channel" else min(64, s) for k, s in zip(kinds, data.shape)])
        datasets = []
        for level, arr in enumerate(_pyramid(data, levels, factors, method)):
            _zarr_store(root / str(level), arr, chunks, zarr_version, dimension_names=axes if zarr_version == 3 else None)
            f = [fa**level for fa in factors]
            datasets.append(
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [v * k for v, k in zip(base, f)]},
                        {"type": "translation", "translation": [t + (k - 1) * v / 2 for t, v, k in zip(shift, base, f)]},
                    ],
                }
            )
        multiscale: dict = {
            "name": name or Path(path).name,
            "axes": [
                {"name": a, "type": k, **({"unit": unit} if k == "space" else {})} for a, k in zip(axes, kinds)
            ],
            "datasets": datasets,
        }
        ome: dict = {"multiscales": [multiscale]}
        if windows:
            ome["omero"] = {
                "channels": [
                    {"active": True, "color": "FFFFFF", "window": {"start": lo, "end": hi, "min": 0, "max": hi * 2}}
                    for lo, hi in windows
                ]
            }
        if label:
            ome["image-label"] = {"source": {"image": "../../"}}
        if zarr_version == 3:
            _write_json(root / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", **ome}}})
        else:
            multiscale["version"] = "0.4"
            if label:
                ome["image-label"]["version"] = "0.4"
            _write_json(root / ".zgroup", {"zarr_format": 2})
            _write_json(root / ".zattrs", ome)


def add_labels_group(image_path: str | os.PathLike, names: Sequence[str], zarr_version: int = 2) -> Path:
    """Create ``labels/`` inside an OME-Zarr image listing ``names``; return its path."""
    labels = Path(image_path) / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    if zarr_version == 3:
        attrs = {"ome": {"version": "0.5", "labels": list(names)}}
        _write_json(labels / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": attrs})
    else:
        _write_json(labels / ".zgroup", {"zarr_format": 2})
        _write_json(labels / ".zattrs", {"labels": list(names)})
    return labels


def write_zarr_array(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    zarr_version: int = 2,
    chunks: Sequence[int] | None = None,
    dimension_names: Sequence[str] | None = None,
) -> None:
    """A single plain zarr array (no OME metadata); v2 names go in ``_ARRAY_DIMENSIONS``."""
    with building(path) as root:
        _zarr_store(root, data, list(chunks or [32] * data.ndim), zarr_version, dimension_names if zarr_version == 3 else None)
        if dimension_names and zarr_version == 2:
            _write_json(root / ".zattrs", {"_ARRAY_DIMENSIONS": list(dimension_names)})


def write_n5(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    convention: str,
    voxel_size_xyz: Sequence[float],
    translate_xyz: Sequence[float] = (0.0, 0.0, 0.0),
    levels: int = 2,
    block: int = 32,
    method: str = "mean",
) -> None:
    """A multiscale N5 group (``s0``, ``s1``, …) from ``data`` in z, y, x order, in nm.

    ``convention``: "neuroglancer" (``resolution``/``units``/``scales`` on the
    group), "n5-viewer" (``pixelResolution`` and ``downsamplingFactors`` per
    level), or "cosem" (a ``multiscales`` list and a ``transform`` per level,
    with voxel-centre translations).
    """
    with building(path) as root:
        xyz = np.ascontiguousarray(np.transpose(data))  # N5 lists dimensions x first
        pyramid = _pyramid(xyz, levels, [2] * xyz.ndim, method)
        res = [float(v) for v in voxel_size_xyz]
        group: dict = {"n5": "2.5.0"}
        datasets = []
        for level, arr in enumerate(pyramid):
            f = 2**level
            ts.open(
                {
                    "driver": "n5",
                    "kvstore": {"driver": "file", "path": str(root / f"s{level}") + "/"},
                    "metadata": {
                        "dimensions": list(arr.shape),
                        "blockSize": [min(block, s) for s in arr.shape],
                        "dataType": np.dtype(arr.dtype).name,
                        "compression": {"type": "gzip"},
                    },
                    "create": True,
                    "delete_existing": True,
                }
            ).result().write(arr).result()
            attrs_path = root / f"s{level}" / "attributes.json"
            attrs = json.loads(attrs_path.read_text())
            if convention == "n5-viewer":
                attrs["downsamplingFactors"] = [f] * 3
                attrs["pixelResolution"] = {"dimensions": [r * f for r in res], "unit": "nm"}
            elif convention == "cosem":
                transform = {
                    "axes": ["z", "y", "x"],
                    "ordering": "C",
                    "scale": [r * f for r in res][::-1],
                    "translate": [t + (f - 1) * r / 2 for t, r in zip(translate_xyz, res)][::-1],
                    "units": ["nm", "nm", "nm"],
                }
                attrs["transform"] = transform
                datasets.append({"path": f"s{level}", "transform": transform})
            _write_json(attrs_path, attrs)
        if convention == "neuroglancer":
            group.update({"resolution": res, "units": ["nm", "nm", "nm"], "axes": ["x", "y", "z"],
                          "scales": [[2**i] * 3 for i in range(levels)]})
        elif convention == "cosem":
            group["multiscales"] = [{"name": Path(path).name, "datasets": datasets}]
        elif convention != "n5-viewer":
            raise ValueError(f"unknown N5 convention {convention!r}")
        _write_json(root / "attributes.json", group)


def write_precomputed(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    resolution_xyz: Sequence[float],
    voxel_offset_xyz: Sequence[int] = (0, 0, 0),
    kind: str = "image",
    levels: int = 2,
    sharded: bool = False,
    encoding: str = "raw",
    chunk: int = 32,
    extra_info: dict | None = None,
) -> None:
    """A precomputed volume from ``data`` in z, y, x (or c, z, y, x) order."""
    with building(path) as root:
        arr = data if data.ndim == 4 else data[np.newaxis]
        xyzc = np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0)))
        method = "mode" if kind == "segmentation" else "mean"
        pyramid = _pyramid(xyzc, levels, [2, 2, 2, 1], method)
        for level, a in enumerate(pyramid):
            f = 2**level
            scale: dict = {
                "resolution": [r * f for r in resolution_xyz],
                "size": list(a.shape[:3]),
                "voxel_offset": [int(v) // f for v in voxel_offset_xyz],
                "chunk_size": [min(chunk, s) for s in a.shape[:3]],
                "encoding": encoding,
            }
            if encoding == "compressed_segmentation":
                scale["compressed_segmentation_block_size"] = [8, 8, 8]
            if sharded:
                scale["sharding"] = {
                    "@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "identity",
                    "minishard_bits": 2, "shard_bits": 1, "minishard_index_encoding": "gzip", "data_encoding": "gzip",
                }
            spec = {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": str(root) + "/"},
                "multiscale_metadata": {"type": kind, "data_type": np.dtype(a.dtype).name, "num_channels": a.shape[3]},
                "scale_metadata": scale,
                "create": True,
            }
            store = ts.open(spec).result()
            store[ts.d[:].translate_to[0]].write(a).result()
        if extra_info:
            info = json.loads((root / "info").read_text())
            info.update(extra_info)
            _write_json(root / "info", info)

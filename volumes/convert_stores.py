"""Outputs of ``convert``: tensorstore specs of one level's array, and the OME-Zarr group metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

COMPRESSIONS = ("blosc-zstd", "blosc-lz4", "gzip", "none")


def _zarr2_compressor(compression: str, itemsize: int) -> dict | None:
    if compression == "none":
        return None
    if compression == "gzip":
        return {"id": "gzip", "level": 5}
    return {"id": "blosc", "cname": compression.split("-", 1)[1], "clevel": 5, "shuffle": 2 if itemsize == 1 else 1,
            "blocksize": 0}


def _zarr3_codecs(compression: str, itemsize: int) -> list[dict]:
    codecs: list[dict] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compression == "gzip":
        codecs.append({"name": "gzip", "configuration": {"level": 5}})
    elif compression != "none":
        codecs.append({"name": "blosc", "configuration": {
            "cname": compression.split("-", 1)[1], "clevel": 5, "shuffle": "bitshuffle" if itemsize == 1 else "shuffle",
            "typesize": itemsize, "blocksize": 0}})
    return codecs


def zarr_spec(path: Path, shape: Sequence[int], chunks: Sequence[int], dtype: np.dtype, *, version: int,
              compression: str, shard: Sequence[int] | None = None, dimension_names: Sequence[str] | None = None) -> dict:
    """The spec creating one level's array (fill value 0, ``/`` separated chunk keys)."""
    chunks = [max(1, min(c, s)) for c, s in zip(chunks, shape)]
    kvstore = {"driver": "file", "path": str(path) + "/"}
    if version == 2:
        metadata = {"shape": list(shape), "chunks": chunks, "dtype": dtype.str, "fill_value": 0, "order": "C",
                    "compressor": _zarr2_compressor(compression, dtype.itemsize), "dimension_separator": "/",
                    "filters": None}
        return {"driver": "zarr", "kvstore": kvstore, "metadata": metadata}
    codecs = _zarr3_codecs(compression, dtype.itemsize)
    grid = chunks
    if shard:
        grid = [max(c, min(s, -(-n // c) * c)) for c, s, n in zip(chunks, shard, shape)]
        grid = [g // c * c for g, c in zip(grid, chunks)]  # a whole number of chunks per shard
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": chunks, "codecs": codecs,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end"}}]
    metadata = {"shape": list(shape), "data_type": dtype.name, "fill_value": 0,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "codecs": codecs}
    if dimension_names:
        metadata["dimension_names"] = list(dimension_names)
    return {"driver": "zarr3", "kvstore": kvstore, "metadata": metadata}


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` atomically (a temporary file renamed over ``path``), so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def write_group(root: Path, version: int, attrs: dict) -> None:
    """A zarr group at ``root`` with ``attrs``: ``.zgroup``/``.zattrs`` (v2) or ``zarr.json`` (v3)."""
    if version == 3:
        write_json(root / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": attrs})
    else:
        write_json(root / ".zgroup", {"zarr_format": 2})
        write_json(root / ".zattrs", attrs)


def ome_attrs(*, version: int, name: str, axes: Sequence[tuple[str, str, str | None]], scales: list[list[float]],
              translations: list[list[float]], omero: dict | None, label: bool, extra: dict) -> dict:
    """The group attributes of an OME-Zarr multiscale image (0.4 on zarr v2, 0.5 on zarr v3).

    ``axes`` are (name, type, unit); ``scales``/``translations`` one list per level. ``extra``
    (ngserve's statistics) goes beside the OME metadata, under its own key.
    """
    multiscale: dict = {
        "name": name,
        "axes": [{"name": a, "type": t, **({"unit": u} if u else {})} for a, t, u in axes],
        "datasets": [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": s},
                                                                     {"type": "translation", "translation": t}]}
                     for i, (s, t) in enumerate(zip(scales, translations))],
    }
    ome: dict = {"multiscales": [multiscale]}
    if omero:
        ome["omero"] = omero
    if label:
        ome["image-label"] = {"source": {"image": "../../"}}
    if version == 3:
        return {"ome": {"version": "0.5", **ome}, **extra}
    multiscale["version"] = "0.4"
    if label:
        ome["image-label"]["version"] = "0.4"
    return {**ome, **extra}

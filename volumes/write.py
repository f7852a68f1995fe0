"""Writing OME-Zarr pyramids with tensorstore (used by the demo and test fixtures)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorstore as ts


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2))


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
) -> None:
    """Write ``data`` as an OME-Zarr 0.4 multiscale image (zarr v2) at ``path``.

    Coarser levels halve every spatial axis with tensorstore's downsample
    driver (``method``: "mean" for images, "mode" for labels) and carry the
    half-voxel translation OME-Zarr implies.  ``label=True`` adds the
    ``image-label`` metadata of a member of a ``labels/`` group.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / ".zgroup", {"zarr_format": 2})
    chunks = list(chunks or [min(64, s) for s in data.shape])
    datasets = []
    level_data = ts.array(data)
    for level in range(levels):
        factor = 2**level
        if level:
            level_data = ts.downsample(level_data, [2] * data.ndim, method=method)
        arr = level_data.read().result()
        store = ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(root / str(level))},
                "metadata": {
                    "shape": list(arr.shape),
                    "chunks": [min(c, s) for c, s in zip(chunks, arr.shape)],
                    "dtype": np.dtype(arr.dtype).str,
                    "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
                    "dimension_separator": "/",
                },
                "create": True,
                "delete_existing": True,
            }
        ).result()
        store.write(arr).result()
        scale = [v * factor for v in voxel_size]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": [(factor - 1) * v / 2 for v in voxel_size]},
                ],
            }
        )
    attrs: dict = {
        "multiscales": [
            {
                "version": "0.4",
                "name": name or root.name,
                "axes": [{"name": a, "type": "space", "unit": unit} for a in axes],
                "datasets": datasets,
            }
        ]
    }
    if label:
        attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    _write_json(root / ".zattrs", attrs)


def add_labels_group(image_path: str | os.PathLike, names: Sequence[str]) -> Path:
    """Create ``labels/`` inside an OME-Zarr image listing ``names``; return its path."""
    labels = Path(image_path) / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    _write_json(labels / ".zgroup", {"zarr_format": 2})
    _write_json(labels / ".zattrs", {"labels": list(names)})
    return labels

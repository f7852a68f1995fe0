"""``convert --add-levels N``: coarser levels for an existing OME-Zarr (0.4 or 0.5), in place.

The new levels are built from the coarsest level (or ``from_level``) with the same tiles and
tasks as a conversion (:mod:`.conversion`), into arrays with that level's chunking and codecs,
staged in a hidden folder of the group.  They are then moved into the group, and the group's
metadata is replaced in one atomic write (the moment the levels appear); levels below
``from_level`` that the new ones replace are removed after that.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .convert_sources import ConvertError, _from_dataset
from .convert_stores import write_json

STAGING = ".ngserve-add-levels"


def _read_group(root: Path) -> tuple[int, dict, dict]:
    """(zarr version, the group's attributes, its OME metadata) of an OME-Zarr image group."""
    if (root / "zarr.json").is_file():
        attrs = json.loads((root / "zarr.json").read_text()).get("attributes", {})
        return 3, attrs, attrs.get("ome", {})
    if (root / ".zattrs").is_file():
        attrs = json.loads((root / ".zattrs").read_text())
        return 2, attrs, attrs
    raise ConvertError(f"{root}: not an OME-Zarr image group (no zarr.json or .zattrs); --add-levels extends one")


def _array_meta(root: Path, path: str, version: int) -> dict:
    return json.loads((root / path / ("zarr.json" if version == 3 else ".zarray")).read_text())


def _next_path(paths: list[str], index: int) -> str:
    """The name of level ``index``: like the others (``3`` after ``0, 1, 2``; ``s3`` after ``s0, s1, s2``)."""
    prefix = os.path.commonprefix(paths) if len(paths) > 1 else paths[0].rstrip("0123456789")
    prefix = prefix.rstrip("0123456789")
    if all(p[len(prefix):].isdigit() for p in paths):
        return f"{prefix}{index}"
    raise ConvertError(f"levels named {paths}: cannot tell what to name new ones (expected 0, 1, … or s0, s1, …)")


def add_levels(path: str | os.PathLike, count: int, *, from_level: int | None = None, method: str | None = None,
               max_memory: int, workers: int | None = None) -> dict:
    """Add ``count`` levels to the OME-Zarr image at ``path``, each downsampled from the one before,
    starting from its coarsest level (or ``from_level``, replacing the levels after it)."""
    from . import open_dataset
    from .conversion import CENTRED, METHODS, _factors, _Job, _merge, _plan_tiles, _Plan, _run_task, _tree_size, task_list

    started = time.monotonic()
    root = Path(path)
    if count < 1:
        raise ConvertError("--add-levels takes a number of levels to add, at least 1")
    version, attrs, ome = _read_group(root)
    multiscales = ome.get("multiscales") or []
    if not multiscales:
        raise ConvertError(f"{root}: no OME multiscales metadata; --add-levels extends an OME-Zarr image")
    ms = multiscales[0]
    datasets = ms["datasets"]
    base = len(datasets) - 1 if from_level is None else from_level
    if not 0 <= base < len(datasets):
        raise ConvertError(f"--from-level {from_level}: {root} has levels 0 to {len(datasets) - 1}")
    axes = [a.get("type") for a in ms["axes"]]
    names = [a["name"] for a in ms["axes"]]
    if [n for n, t in zip(names, axes) if t != "space"] not in ([], ["c"]) or names[-3:] != ["z", "y", "x"]:
        raise ConvertError(f"{root}: axes {names}; --add-levels handles (c,) z, y, x images")
    method = method or (ome.get("ngserve") or attrs.get("ngserve") or {}).get("method") or \
        ("mode" if "image-label" in ome else "mean")
    if method not in METHODS:
        raise ConvertError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    source = _from_dataset(open_dataset(str(root)), str(root), level=base)
    c = source.shape[0]
    meta = _array_meta(root, datasets[base]["path"], version)
    grid = (meta["chunk_grid"]["configuration"]["chunk_shape"] if version == 3 else meta["chunks"])[-3:]
    job = _Job("", source, source.dtype, method, "image-label" in ome, None)
    tiling = _plan_tiles([job], count + 1, tuple(int(g) for g in grid), max_memory)
    shapes = tiling.shapes
    job.shapes = [(c, *s) for s in shapes]
    job.factors = factors = _factors(tiling)

    import tensorstore as ts

    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    paths = [d["path"] for d in datasets[:base + 1]]
    new_paths = []
    stores: list = [None]
    limits = {"limit": workers} if workers else {"limit": "shared"}
    context = ts.Context({"data_copy_concurrency": limits, "file_io_concurrency": limits})
    for k in range(1, count + 1):
        name = _next_path(paths + new_paths, base + k)
        new_paths.append(name)
        level_meta = dict(meta)
        level_meta["shape"] = list(meta["shape"][:-3]) + list(shapes[k])
        level_meta.pop("zarr_format", None), level_meta.pop("node_type", None)
        level_meta.pop("attributes", None)
        spec = {"driver": "zarr3" if version == 3 else "zarr",
                "kvstore": {"driver": "file", "path": str(staging / name) + "/"},
                "metadata": level_meta, "create": True}
        store = ts.open(spec, context=context).result()
        while store.rank > (4 if c > 1 else 3):  # a channel axis of one
            store = store[0]
        stores.append(store)
    plan = _Plan([job], version, list(grid), None, None, tiling, {}, "", workers, staging, "", write_base=False)
    stats: dict[str, list] = {}
    for t in range(len(task_list(tiling))):
        for level, s in _run_task(plan, 0, t, stores)[0].items():
            _merge(stats, level, s)

    # The new levels' placement: each block's value sits at its centre (none for stride).
    first = datasets[base]["coordinateTransformations"]
    scale = next(t["scale"] for t in first if t["type"] == "scale")
    trans = next((t["translation"] for t in first if t["type"] == "translation"), [0.0] * len(scale))
    spatial = len(scale) - 3
    added = []
    for k, name in enumerate(new_paths, start=1):
        f = [1] * spatial + list(factors[k])
        shift = [0.0 if method in CENTRED else (k_ - 1) * s / 2 for s, k_ in zip(scale, f)]
        added.append({"path": name, "coordinateTransformations": [
            {"type": "scale", "scale": [float(f"{s * k_:.12g}") for s, k_ in zip(scale, f)]},
            {"type": "translation", "translation": [float(f"{t + d:.12g}") for t, d in zip(trans, shift)]}]})
    dropped = [d["path"] for d in datasets[base + 1:]]
    for name in new_paths:
        target = root / name
        if target.exists():  # a level being replaced: aside until the metadata no longer names it
            target.rename(staging / f"{name}.old")
        (staging / name).rename(target)
    ms["datasets"] = datasets[:base + 1] + added
    extra = attrs.get("ngserve")
    if isinstance(extra, dict) and isinstance(extra.get("levels"), list):
        kept = extra["levels"][:base + 1]
        for k, name in enumerate(new_paths, start=1):
            s = stats.get(str(k), [None, None, 0.0, 0])
            kept.append({"path": name, "min": s[0], "max": s[1], "mean": s[2] / s[3] if s[3] else None})
        extra["levels"] = kept
    if version == 3:
        group = json.loads((root / "zarr.json").read_text())
        group["attributes"] = attrs
        write_json(root / "zarr.json", group)
    else:
        write_json(root / ".zattrs", attrs)
    for name in dropped:
        if name not in new_paths:
            shutil.rmtree(root / name, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return {"output": str(root), "levels": len(ms["datasets"]), "added": new_paths,
            "shapes": [list(s) for s in shapes[1:]], "bytes": _tree_size(root),
            "seconds": time.monotonic() - started, "voxels": sum(c * math.prod(s) for s in shapes[1:]),
            "dtype": str(np.dtype(source.dtype))}

"""``convert --add-levels N``: coarser levels for an existing OME-Zarr (0.4 or 0.5), in place.

The new levels are built from the coarsest level (or ``from_level``) with the same tiles and
tasks as a conversion (:mod:`.conversion`), into arrays with that level's axes, chunking and
codecs, staged in a hidden folder of the group.  Only space axes are downsampled (a 2-D ``y, x``
image stays 2-D; ``t`` and ``c`` keep their sizes, each time point built by tasks of its own).
The staging folder holds the conversion's manifest of finished tasks, so ``resume=True``
continues an interrupted run, byte for byte equal to an uninterrupted one.

When every task is done the run *commits*: the manifest records the group's new metadata, the
new levels are moved into the group (a level they replace is first moved aside into the staging
folder), the group's metadata is replaced in one atomic write, and what was replaced is removed.
Until that write the metadata names only the levels it named before, all complete.  A run
stopped while committing is finished by ``--resume`` (or by any run, once the metadata was
written) and otherwise undone, so the image is as it was.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .convert_sources import ConvertError, _from_dataset
from .convert_stores import write_json

STAGING = ".ngserve-add-levels"


def _read_group(root: Path) -> tuple[int, dict, dict]:
    """(zarr version, the group's attributes, its OME metadata) of an OME-Zarr image group."""
    if (root / "zarr.json").is_file():
        meta = json.loads((root / "zarr.json").read_text())
        if meta.get("node_type") != "group":
            raise ConvertError(f"{root}: a zarr array, not an OME-Zarr image group; --add-levels extends an image")
        attrs = meta.get("attributes", {})
        return 3, attrs, attrs.get("ome", {})
    if (root / ".zattrs").is_file() and not (root / ".zarray").is_file():
        attrs = json.loads((root / ".zattrs").read_text())
        return 2, attrs, attrs
    if not root.exists():
        raise ConvertError(f"{root}: no such folder; --add-levels extends an existing OME-Zarr image")
    raise ConvertError(f"{root}: not an OME-Zarr image group (no zarr.json or .zattrs); --add-levels extends one")


def _multiscale(attrs: dict, version: int) -> dict | None:
    ome = attrs.get("ome", {}) if version == 3 else attrs
    return (ome.get("multiscales") or [None])[0]


def _array_meta(root: Path, path: str, version: int) -> dict:
    return json.loads((root / path / ("zarr.json" if version == 3 else ".zarray")).read_text())


def _next_path(paths: list[str], index: int) -> str:
    """The name of level ``index``: like the others (``3`` after ``0, 1, 2``; ``s3`` after ``s0, s1, s2``)."""
    prefix = os.path.commonprefix(paths) if len(paths) > 1 else paths[0].rstrip("0123456789")
    prefix = prefix.rstrip("0123456789")
    if all(p[len(prefix):].isdigit() for p in paths):
        return f"{prefix}{index}"
    raise ConvertError(f"levels named {paths}: cannot tell what to name new ones (expected 0, 1, … or s0, s1, …)")


def _zyx_view(store, kinds: list[str], c: int, at: dict[int, int]):
    """``store`` (the image's own axes order) indexed ``(c, z, y, x)``, or ``(z, y, x)`` for one
    channel, as :func:`volumes.conversion._run_task` reads and writes levels: the other axes (``t``,
    …) at their index in ``at``, and a 2-D image given a z axis of size 1."""
    import tensorstore as ts

    space = [i for i, k in enumerate(kinds) if k == "space"]
    channel = [i for i, k in enumerate(kinds) if k == "channel"] if c > 1 else []
    kept = sorted(space + channel)
    view = store[tuple(slice(None) if i in kept else at.get(i, 0) for i in range(len(kinds)))]
    view = view[ts.d[:].transpose[[kept.index(i) for i in channel + space]]]
    if len(space) == 2:
        view = view[(slice(None),) * len(channel) + (ts.newaxis,)]
    return view


def _per_axis(values: list, space: list[int], zyx) -> list:
    """``values`` (one per axis of the image) with its space axes' entries from ``zyx`` (z, y, x)."""
    out = list(values)
    for i, v in zip(space, list(zyx)[3 - len(space):]):
        out[i] = v
    return out


def _new_attrs(attrs: dict, version: int, base: int, names: list[str], factors: list[list[int]], centred: bool,
               stats: dict[str, list]) -> dict:
    """The group's attributes naming levels ``names`` after level ``base``: their scale and
    translation from ``factors`` (per level and axis, vs ``base``; a block's value sits at its
    centre unless ``centred``), and their statistics beside ngserve's others."""
    new = copy.deepcopy(attrs)
    ms = _multiscale(new, version)
    transforms = ms["datasets"][base]["coordinateTransformations"]
    scale = next(t["scale"] for t in transforms if t["type"] == "scale")
    trans = next((t["translation"] for t in transforms if t["type"] == "translation"), [0.0] * len(scale))
    added = []
    for name, f in zip(names, factors[1:]):
        shift = [0.0 if centred else (k - 1) * s / 2 for s, k in zip(scale, f)]
        added.append({"path": name, "coordinateTransformations": [
            {"type": "scale", "scale": [float(f"{s * k:.12g}") for s, k in zip(scale, f)]},
            {"type": "translation", "translation": [float(f"{t + d:.12g}") for t, d in zip(trans, shift)]}]})
    ms["datasets"] = ms["datasets"][:base + 1] + added
    extra = new.get("ngserve")
    if isinstance(extra, dict) and isinstance(extra.get("levels"), list):
        kept = extra["levels"][:base + 1]
        for k, name in enumerate(names, start=1):
            s = stats.get(str(k), [None, None, 0.0, 0])
            kept.append({"path": name, "min": s[0], "max": s[1], "mean": s[2] / s[3] if s[3] else None})
        extra["levels"] = kept
    return new


def _settle(root: Path, staging: Path, commit: dict, finish: bool) -> bool:
    """A run stopped while committing: finish it (``finish``, or when the group's metadata already
    names the new levels), or else put the image back as it was.  True when finished."""
    version, attrs, _ = _read_group(root)
    if finish or attrs == commit["attrs"]:
        _move_in(root, staging, commit)
        return True
    for name in commit["added"]:  # undo _move_in's renames, in either of its states
        new, old, target = staging / name, staging / f"{name}.old", root / name
        if not new.exists() and target.exists():
            target.rename(new)
        if old.exists():
            old.rename(target)
    return False


def _move_in(root: Path, staging: Path, commit: dict) -> None:
    """Move the new levels into the group, write its metadata, remove what they replaced.  Every
    step can be run again after an interruption."""
    for name in commit["added"]:
        new, old, target = staging / name, staging / f"{name}.old", root / name
        if new.exists():
            if target.exists():  # a level being replaced: aside until the metadata no longer names it
                target.rename(old)
            new.rename(target)
    if commit["version"] == 3:
        group = json.loads((root / "zarr.json").read_text())
        group["attributes"] = commit["attrs"]
        write_json(root / "zarr.json", group)
    else:
        write_json(root / ".zattrs", commit["attrs"])
    for name in commit["dropped"]:
        if name not in commit["added"]:
            shutil.rmtree(root / name, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _pending_commit(staging: Path) -> dict | None:
    from .conversion import WORK

    try:
        return json.loads((staging / WORK / "manifest.json").read_text()).get("commit")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _summary(root: Path, commit: dict, started: float, resumed: int) -> dict:
    from .conversion import _tree_size

    return {"output": str(root), "levels": commit["levels"], "added": commit["added"], "shapes": commit["shapes"],
            "bytes": _tree_size(root), "seconds": time.monotonic() - started, "voxels": commit["voxels"],
            "dtype": commit["dtype"], "resumed_tasks": resumed}


def add_levels(path: str | os.PathLike, count: int, *, from_level: int | None = None, method: str | None = None,
               max_memory: int, workers: int | None = None, overwrite: bool = False, resume: bool = False,
               progress: Callable[[int, int], None] | None = None) -> dict:
    """Add ``count`` levels to the OME-Zarr image at ``path``, each downsampled from the one before,
    starting from its coarsest level (or ``from_level``, replacing the levels after it, which
    needs ``overwrite``).  ``resume`` continues a run with the same options that was stopped.
    ``progress(done, total)`` is called with the voxels written after each task."""
    from . import open_dataset
    from .conversion import (CENTRED, METHODS, WORK, _factors, _Job, _merge, _plan_tiles, _Plan, _release_memory, _run_task,
                             _start, _task_voxels, record, task_list)

    started = time.monotonic()
    root = Path(path)
    if count < 1:
        raise ConvertError("--add-levels takes a number of levels to add, at least 1")
    staging = root / STAGING
    request = {"count": count, "from_level": from_level, "method": method}
    commit = _pending_commit(staging)
    if commit is not None:
        if resume and commit["request"] != request:
            raise ConvertError(f"{staging} was started with other options; run without --resume to start over")
        if _settle(root, staging, commit, finish=resume):
            if resume:
                return _summary(root, commit, started, commit["tasks"])
            resume = False  # that run is done: this one starts afresh on its result

    version, attrs, ome = _read_group(root)
    ms = _multiscale(attrs, version)
    if not ms or not ms.get("datasets"):
        inner = "0" if "bioformats2raw.layout" in ome else ome["labels"][0] if ome.get("labels") else None
        hint = f" (give one of the images it holds, e.g. {root / inner})" if inner else ""
        raise ConvertError(f"{root}: no OME multiscales metadata; --add-levels extends an OME-Zarr image{hint}")
    datasets = ms["datasets"]
    base = len(datasets) - 1 if from_level is None else from_level
    if not 0 <= base < len(datasets):
        raise ConvertError(f"--from-level {from_level}: {root} has levels 0 to {len(datasets) - 1}")
    kinds = [a.get("type") or "space" for a in ms["axes"]]  # as the OME reader takes them
    space = [i for i, k in enumerate(kinds) if k == "space"]
    method = method or (ome.get("ngserve") or attrs.get("ngserve") or {}).get("method") or \
        ("mode" if "image-label" in ome else "mean")
    if method not in METHODS:
        raise ConvertError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    meta = _array_meta(root, datasets[base]["path"], version)
    # Every index of the other axes (t, …) is an image of its own, built by its own tasks.
    others = [i for i, k in enumerate(kinds) if k not in ("space", "channel")]
    points = list(itertools.product(*(range(meta["shape"][i]) for i in others)))
    ds = open_dataset(str(root))

    def job_at(point: tuple) -> _Job:
        source = _from_dataset(ds, str(root), level=base, at=dict(zip(others, point)))  # refuses what convert cannot
        return _Job(",".join(map(str, point)), source, source.dtype, method, "image-label" in ome, None)

    first = job_at(points[0])
    c = first.source.shape[0]

    paths = [d["path"] for d in datasets[:base + 1]]
    new_paths: list[str] = []
    for k in range(1, count + 1):
        new_paths.append(_next_path(paths + new_paths, base + k))
    dropped = [d["path"] for d in datasets[base + 1:]]
    present = sorted(set(dropped) | {n for n in new_paths if (root / n).exists()}, key=lambda n: (len(n), n))
    if present and not overwrite:
        raise ConvertError(f"{root}: level(s) {', '.join(present)} exist; pass --overwrite to replace them")

    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"] if version == 3 else meta["chunks"]
    grid = [1] * (3 - len(space)) + [int(chunks[i]) for i in space]  # the write chunk (shard), z, y, x
    tiling = _plan_tiles([first], count + 1, tuple(grid), max_memory)
    shapes, factors = tiling.shapes, _factors(tiling)
    first.shapes, first.factors = [(c, *s) for s in shapes], factors

    fingerprint = hashlib.sha256(json.dumps(
        {"request": [count, base, method], "datasets": datasets[:base + 1], "meta": meta, "shapes": shapes,
         "tiles": [tiling.write, tiling.k0, tiling.rounds()], "names": new_paths}).encode()).hexdigest()
    manifest = _start(staging, fingerprint, resume)
    resumed = sum(len(v) for v in manifest["done"].values())

    import tensorstore as ts

    limits = {"limit": workers} if workers else {"limit": "shared"}
    context = ts.Context({"data_copy_concurrency": limits, "file_io_concurrency": limits})
    arrays = []
    for k, name in enumerate(new_paths, start=1):
        level_meta = {key: v for key, v in meta.items() if key not in ("zarr_format", "node_type", "attributes")}
        level_meta["shape"] = _per_axis(meta["shape"], space, shapes[k])
        spec = {"driver": "zarr3" if version == 3 else "zarr",
                "kvstore": {"driver": "file", "path": str(staging / name) + "/"}, "metadata": level_meta,
                **({"open": True} if resumed else {"create": True, "delete_existing": True})}
        arrays.append(ts.open(spec, context=context).result())
    tasks = range(len(task_list(tiling)))
    plan = _Plan([first], version, grid, None, None, tiling, {}, "", workers, staging, fingerprint, write_base=False)
    per_job = [_task_voxels(plan, first, t) for t in tasks]
    total, written = len(points) * sum(per_job), sum(per_job[t] for finished in manifest["done"].values() for t in finished)
    stats: dict[str, list] = {}
    for point in points:
        job = first if point == points[0] else job_at(point)
        job.shapes, job.factors = first.shapes, factors
        plan.jobs = [job]
        done = set(manifest["done"].setdefault(job.key, []))
        manifest["stats"].setdefault(job.key, {})
        # Level 0 of the tiling is the existing level, only read (write_base=False).
        stores = [None] + [_zyx_view(a, kinds, c, dict(zip(others, point))) for a in arrays]
        for t in tasks:
            if t not in done:
                record(staging, manifest, job.key, t, _run_task(plan, 0, t, stores)[0])
                _release_memory()
                written += per_job[t]
                if progress:
                    progress(written, total)
        # Statistics in task order, so a resumed run sums them exactly as an uninterrupted one.
        for t in sorted(manifest["stats"][job.key], key=int):
            for level, st in manifest["stats"][job.key][t].items():
                _merge(stats, level, st)

    new_attrs = _new_attrs(attrs, version, base, new_paths, [_per_axis([1] * len(kinds), space, f) for f in factors],
                           method in CENTRED, stats)
    manifest["commit"] = commit = {
        "request": request, "version": version, "attrs": new_attrs, "added": new_paths, "dropped": dropped,
        "levels": base + 1 + count, "shapes": [_per_axis(meta["shape"], space, s) for s in shapes[1:]],
        "voxels": len(points) * sum(c * math.prod(s) for s in shapes[1:]), "dtype": str(np.dtype(first.dtype)),
        "tasks": len(tasks) * len(points)}
    write_json(staging / WORK / "manifest.json", manifest)  # from here a stop is finished by --resume, or undone
    _move_in(root, staging, commit)
    return _summary(root, commit, started, resumed)

"""``convert``: any volume ``volumes`` reads (or a numpy/dask array) to a multiscale OME-Zarr, in bounded memory.

The volume is processed in slabs along z.  A slab is ``chunk_z × 2**(levels-1)``
level-0 slices (or a whole multiple of that), so every level's part of the slab
is a whole number of its chunks and comes from the previous level's part in one
pass: each input slice is read once and no level is read back.  Memory is about
a few slabs, whatever the input size; ``max_memory`` chooses how many base slabs
one slab holds, and refuses when not even one fits.

The output is built in a hidden sibling folder (``.NAME.partial-convert``) and
renamed into place at the end.  After each slab a manifest in that folder lists
the finished slabs and their statistics, so ``resume=True`` continues an
interrupted run; chunk writes are whole chunks with deterministic bytes, so the
result equals an uninterrupted run byte for byte.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .atomic import move_into_place
from .convert_sources import ConvertError, Source, crop, open_source, parse_ranges, stack_channels
from .convert_stores import COMPRESSIONS, ome_attrs, precomputed_specs, write_group, write_json, zarr_spec
from .units import ome_unit

DEFAULT_MAX_MEMORY = 2 << 30
METHODS = ("mean", "mode", "median", "min", "max", "stride")
FORMATS = {"ome-zarr": 2, "ome-zarr-0.4": 2, "ome-zarr-0.5": 3, "precomputed": 0}  # -> zarr version, 0: none
SAMPLE_VOXELS = 1 << 20  # per channel, spread over the whole volume, for the omero window
WORK = ".ngserve-convert"  # manifest and samples inside the staging folder; removed at the end
_COLORS = ["FF0000", "00FF00", "0000FF", "FF00FF", "00FFFF", "FFFF00"]


@dataclass
class _Job:
    """One multiscale image to write: the image at the root, or ``labels/NAME``."""

    key: str
    source: Source
    dtype: np.dtype
    method: str
    label: bool
    rescale: tuple[float, float] | None
    shapes: list[tuple[int, int, int, int]] = field(default_factory=list)  # per level, (c, z, y, x)
    factors: list[tuple[int, int, int]] = field(default_factory=list)  # per level, vs level 0, (z, y, x)


def convert(
    inputs: Any,
    output: str | os.PathLike,
    *,
    labels: dict[str, Any] | None = None,
    format: str = "ome-zarr",
    chunk: int | Sequence[int] = 128,
    shard: int | Sequence[int] | None = None,
    levels: int | None = None,
    method: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: str | None = None,
    translation: Sequence[float] | None = None,
    overwrite: bool = False,
    compression: str = "blosc-zstd",
    dtype: str | None = None,
    rescale: tuple[float, float] | None = None,
    channel_names: Sequence[str] | None = None,
    ranges: str | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    resume: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    dask: str | None = None,
) -> dict:
    """Convert ``inputs`` (one path/array, or several: channels) to a multiscale OME-Zarr at ``output``.

    Paths are anything :func:`volumes.open_dataset` reads (``file.h5:/path`` for HDF5).
    ``labels`` maps names to inputs written as ``labels/NAME`` (mode downsampling).
    ``voxel_size``/``translation`` are ``z, y, x`` in ``units`` (OME's voxel-centre translation).
    ``progress(done, total)`` is called with level-0 voxels after each slab.
    ``dask`` (``"tcp://HOST:PORT"`` or ``"local"``) runs the slabs as tasks on a dask.distributed cluster.
    Returns a summary: ``levels``, ``shapes``, ``bytes``, ``seconds``, ``output``, ``slab`` (slices per
    slab), ``tasks`` (slabs written by this run), ``resumed_slabs``, ``dask``.
    """
    started = time.monotonic()
    _limit_arenas()
    recipe = dict(inputs=inputs, output=output, labels=labels, format=format, chunk=chunk, shard=shard, levels=levels,
                  method=method, voxel_size=voxel_size, units=units, translation=translation, overwrite=overwrite,
                  compression=compression, dtype=dtype, rescale=rescale, channel_names=channel_names,
                  ranges=ranges, max_memory=max_memory, workers=workers)
    plan = _prepare(**recipe)
    if dask is not None:
        if plan.shard is not None or any("sharding" in spec["scale_metadata"] for job in plan.jobs if plan.version == 0
                                          for spec in _precomputed_specs(plan, job)):
            raise ConvertError("--dask writes whole chunks from separate tasks, which cannot share a shard; "
                               "drop --shard (or --dask)")
    manifest = _start(plan.staging, plan.fingerprint, resume)
    jobs, slab = plan.jobs, plan.slab
    total = sum(math.prod(j.shapes[0]) for j in jobs)
    resumed = sum(len(v) for v in manifest["done"].values())
    done_voxels = 0
    todo = []
    for index, job in enumerate(jobs):
        _create_stores(plan, job, fresh=not manifest["done"].get(job.key))  # every task then opens what exists
        finished = set(manifest["done"].setdefault(job.key, []))
        manifest["stats"].setdefault(job.key, {})
        done_voxels += sum(_slab_voxels(job, s, slab) for s in finished)
        todo += [(index, s) for s in range(-(-job.source.shape[1] // slab)) if s not in finished]

    def finished(index: int, s: int, stats: list, sample: np.ndarray) -> None:
        nonlocal done_voxels
        key = jobs[index].key
        np.save(plan.staging / WORK / f"sample-{index}-{s}.npy", sample)
        manifest["stats"][key][str(s)] = stats
        manifest["done"][key].append(s)
        write_json(plan.staging / WORK / "manifest.json", manifest)  # only after the slab's writes completed
        done_voxels += _slab_voxels(jobs[index], s, slab)
        if progress:
            progress(done_voxels, total)

    if dask is not None:
        from .convert_dask import run_on_dask

        run_on_dask(dask, recipe, plan.fingerprint, todo, finished)
    else:
        _run_local(plan, todo, finished)
    label_names = [j.key[7:] for j in jobs if j.label]
    for index, job in enumerate(jobs):
        manifest["done"][job.key].sort()
        _write_metadata(plan.staging, job, index, manifest, plan.placement, plan.version, label_names)
    shutil.rmtree(plan.staging / WORK)
    output = Path(output)
    move_into_place(plan.staging, output)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    return {"output": str(output), "levels": len(jobs[0].shapes), "shapes": [list(s) for s in jobs[0].shapes],
            "bytes": size, "seconds": time.monotonic() - started, "slab": slab, "resumed_slabs": resumed,
            "tasks": len(todo), "dask": dask}


@dataclass
class _Plan:
    """Everything a slab task needs, derived from the options alone (so a dask worker derives the same)."""

    jobs: list[_Job]
    version: int
    chunk: list[int]
    shard: list[int] | None
    slab: int
    placement: dict
    compression: str
    workers: int | None
    staging: Path
    fingerprint: str


def _prepare(*, inputs, output, labels, format, chunk, shard, levels, method, voxel_size, units, translation,
             overwrite, compression, dtype, rescale, channel_names, ranges, max_memory, workers) -> _Plan:
    """Check the options, open the inputs and plan levels and slabs; writes nothing."""
    output = Path(output)
    if format not in FORMATS:
        raise ConvertError(f"unknown --format {format!r}; use one of {', '.join(FORMATS)}")
    version = FORMATS[format]
    if compression not in COMPRESSIONS:
        raise ConvertError(f"unknown --compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")
    if method is not None and method not in METHODS:
        raise ConvertError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    if shard is not None and version == 2:
        raise ConvertError("--shard needs --format ome-zarr-0.5 (zarr v3 sharding) or precomputed")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise ConvertError(f"{output} exists; pass --overwrite to replace it")
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise ConvertError("no input given")
    image = stack_channels([open_source(i) for i in items])
    box = parse_ranges(ranges, image.shape[1:]) if ranges else None
    if box:
        image = crop(image, box)
    if channel_names is not None:
        if len(channel_names) != image.shape[0]:
            raise ConvertError(f"{len(channel_names)} --channel-names for {image.shape[0]} channels")
        image.channel_names = list(channel_names)
    jobs = [_Job("", image, _out_dtype(image, dtype, rescale), method or "mean", False, rescale)]
    for name, item in (labels or {}).items():
        src = open_source(item)
        if box:  # the same sub-volume of the labels
            src = crop(src, parse_ranges(ranges, src.shape[1:]))
        if src.shape[1:] != image.shape[1:] or src.shape[0] != 1:
            raise ConvertError(f"labels {name!r}: shape {src.shape[1:]} (with {src.shape[0]} channels) does not "
                               f"match the image's {image.shape[1:]}; labels need one channel of the same size")
        if src.dtype.kind not in "iub":
            raise ConvertError(f"labels {name!r}: dtype {src.dtype} is not an integer type")
        label_dtype = src.dtype
        if version == 0 and label_dtype not in (np.uint32, np.uint64):  # compressed_segmentation's types
            label_dtype = np.dtype(np.uint32 if np.can_cast(src.dtype, np.uint32, "safe") else np.uint64)
        jobs.append(_Job(f"labels/{name}", src, label_dtype, "mode" if method in (None, "mean") else method, True, None))

    chunk3 = _three(chunk, "--chunk")
    shard3 = _three(shard, "--shard") if shard is not None else None
    n_levels, slab = _plan_slabs(jobs, chunk3, levels, max_memory)
    for job in jobs:
        job.shapes, job.factors = _level_shapes(job.source.shape, n_levels)
    placement = _placement(image, voxel_size, units, translation)
    if version == 0:
        _voxel_offset(placement)  # refused now, before anything is written
    staging = output.with_name(f".{output.name}.partial-convert")
    fingerprint = _fingerprint(jobs, chunk3, shard3, slab, version, compression, placement, items, labels)
    return _Plan(jobs, version, chunk3, shard3, slab, placement, compression, workers, staging, fingerprint)


def _run_local(plan: _Plan, todo: list[tuple[int, int]], finished: Callable) -> None:
    """The slabs in order, in this process: the next slab is read while this one is downsampled and written."""
    stores = {}
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_read_slab, plan.jobs[todo[0][0]], todo[0][1], plan.slab) if todo else None
        for n, (index, s) in enumerate(todo):
            data = pending.result()
            if n + 1 < len(todo):
                nxt = todo[n + 1]
                pending = reader.submit(_read_slab, plan.jobs[nxt[0]], nxt[1], plan.slab)
            if index not in stores:
                stores = {index: _create_stores(plan, plan.jobs[index], fresh=False)}
            stats, sample = _write_slab(plan.jobs[index], stores[index], s, plan.slab, data)
            del data
            finished(index, s, stats, sample)
            _release_memory()


def slab_task(plan: _Plan, index: int, s: int) -> tuple[list, np.ndarray]:
    """Read, downsample and write slab ``s`` of job ``index`` (whole chunks: running it twice is harmless)."""
    job = plan.jobs[index]
    stats_sample = _write_slab(job, _create_stores(plan, job, fresh=False), s, plan.slab, _read_slab(job, s, plan.slab))
    _release_memory()
    return stats_sample


# -- planning ------------------------------------------------------------------------------

def _three(value: int | Sequence[int], option: str) -> list[int]:
    vals = [int(value)] * 3 if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or min(vals) < 1:
        raise ConvertError(f"{option} takes one positive size or Z,Y,X, not {value!r}")
    return vals


def _out_dtype(src: Source, dtype: str | None, rescale: tuple[float, float] | None) -> np.dtype:
    """The output dtype; narrowing needs an explicit ``rescale`` window (no silent wrap-around)."""
    if dtype is None:
        if rescale is not None:
            raise ConvertError("--rescale needs --dtype (the type to rescale into)")
        return src.dtype
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise ConvertError(f"unknown --dtype {dtype!r}") from None
    if out.kind not in "iuf":
        raise ConvertError(f"--dtype {dtype}: only integer and float types can be written")
    if rescale is None and not np.can_cast(src.dtype, out, "safe"):
        raise ConvertError(f"--dtype {out} cannot hold every {src.dtype} value; give --rescale LO:HI "
                           f"(input values LO..HI become the full {out} range)")
    if rescale is not None and not rescale[1] > rescale[0]:
        raise ConvertError(f"--rescale {rescale[0]}:{rescale[1]}: HI must be above LO")
    return out


def _level_shapes(shape: tuple[int, ...], n: int) -> tuple[list, list]:
    """Per level: the (c, z, y, x) shape and the cumulative (z, y, x) factor. An axis of size 1 stays 1."""
    shapes, factors = [tuple(shape)], [(1, 1, 1)]
    for _ in range(1, n):
        prev, f = shapes[-1], factors[-1]
        step = [2 if s > 1 else 1 for s in prev[1:]]
        shapes.append((prev[0], *[-(-s // k) for s, k in zip(prev[1:], step)]))
        factors.append(tuple(a * k for a, k in zip(f, step)))
    return shapes, factors


def _slab_bytes(job: _Job, thickness: int) -> int:
    """Working memory of one slab: the slab read and the next one prefetched, its cast copy and
    tensorstore's copy while writing, and the coarser levels (1/7 of it) twice."""
    c, _, y, x = job.source.shape
    voxels = c * thickness * y * x
    return int(voxels * (2 * job.source.dtype.itemsize + 2.3 * job.dtype.itemsize))


def _plan_slabs(jobs: list[_Job], chunk: list[int], levels: int | None, max_memory: int) -> tuple[int, int]:
    """(levels, slab thickness in level-0 slices) within ``max_memory``."""
    c, z, y, x = jobs[0].source.shape
    wanted = levels
    if wanted is None:  # until the coarsest level fits in one chunk
        wanted, dims = 1, [z, y, x]
        while any(d > k for d, k in zip(dims, chunk)):
            dims = [-(-d // 2) for d in dims]
            wanted += 1
    if wanted < 1:
        raise ConvertError("--levels must be at least 1")
    n = wanted
    while True:
        base = min(chunk[0] * 2 ** (n - 1), -(-z // chunk[0]) * chunk[0])  # never more than the volume
        need = max(_slab_bytes(j, base) for j in jobs)
        if need <= max_memory or (levels is None and n == 1) or levels is not None:
            break
        n -= 1  # by default, fewer levels rather than more memory
    if need > max_memory:
        what = f"{n} levels of" if n > 1 else "one slab of"
        raise ConvertError(f"{what} {base} slices of {y}x{x} needs about {_size(need)}, over --max-memory "
                           f"{_size(max_memory)}; raise --max-memory or lower --chunk{' or --levels' if n > 1 else ''}")
    k = max(1, max_memory // need)
    slab = base * k
    return n, min(slab, -(-z // base) * base)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _slab_voxels(job: _Job, s: int, slab: int) -> int:
    c, z, y, x = job.shapes[0]
    return c * (min(z, (s + 1) * slab) - s * slab) * y * x


def _placement(image: Source, voxel_size, units, translation) -> dict:
    """Axis units, level-0 voxel size and translation (OME's voxel centre), z, y, x."""
    if voxel_size is not None:
        voxel = _three_floats(voxel_size, "--voxel-size")
        unit = units or "micrometer"
    elif all(v is not None for v in image.voxel_m):
        unit = units or ("nanometer" if min(image.voxel_m) < 1e-7 else "micrometer")
        factor = _unit_factor(unit)
        voxel = [_tidy(v / factor) for v in image.voxel_m]
    else:
        voxel, unit = [1.0, 1.0, 1.0], units
    if unit:
        _unit_factor(unit)
    if translation is not None:
        trans = _three_floats(translation, "--translation")
        corner = [t / v - 0.5 for t, v in zip(trans, voxel)]
    elif image.offset is None:  # an array has no placement: voxel 0's centre (OME) or corner (precomputed) at 0
        trans, corner = [_tidy(s * v) for s, v in zip(image.shift, voxel)], [float(s) for s in image.shift]
    else:  # where ngserve shows the input: voxel 0 spans [offset, offset+1), its centre is what OME states
        corner = [o + s for o, s in zip(image.offset, image.shift)]
        trans = [_tidy((c + 0.5) * v) for c, v in zip(corner, voxel)]
    return {"unit": unit, "voxel": voxel, "translation": trans, "corner": corner}


def _nanometres(placement: dict) -> list[float]:
    """Level-0 voxel size in nm (precomputed's unit), z, y, x; unitless sizes are taken as nm."""
    factor = _unit_factor(placement["unit"]) / 1e-9 if placement["unit"] else 1.0
    return [_tidy(v * factor) for v in placement["voxel"]]


def _voxel_offset(placement: dict) -> list[int]:
    """Precomputed's whole-voxel offset of voxel 0's corner, z, y, x."""
    corner = placement["corner"]
    if any(abs(c - round(c)) > 1e-6 for c in corner):
        raise ConvertError(f"precomputed places voxels on whole-voxel offsets; voxel 0's corner is at {corner} voxels "
                           f"(give --translation as (N + 0.5) × voxel size)")
    return [int(round(c)) for c in corner]


def _unit_factor(unit: str) -> float:
    try:
        return ome_unit(unit)[1]
    except ValueError:
        raise ConvertError(f"unknown --units {unit!r}; use an OME unit name such as micrometer or nanometer") from None


def _three_floats(vals: Sequence[float], option: str) -> list[float]:
    vals = [float(v) for v in vals]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3:
        raise ConvertError(f"{option} takes one number or Z,Y,X")
    return vals


def _tidy(v: float) -> float:
    return float(f"{v:.12g}")  # 0.2 rather than 0.20000000000000004 after unit conversion


def _fingerprint(jobs, chunk, shard, slab, version, compression, placement, items, labels) -> str:
    desc = {"jobs": [[j.key, j.source.shape, j.dtype.str, j.method, j.rescale, j.shapes] for j in jobs],
            "chunk": chunk, "shard": shard, "slab": slab, "version": version, "compression": compression,
            "placement": placement, "inputs": [str(i) if isinstance(i, (str, os.PathLike)) else "array" for i in items],
            "labels": sorted((labels or {}).keys())}
    return hashlib.sha256(json.dumps(desc, default=str).encode()).hexdigest()


# -- running -------------------------------------------------------------------------------

def _start(staging: Path, fingerprint: str, resume: bool) -> dict:
    """The manifest to continue from (``resume``), or a fresh one in an emptied staging folder."""
    path = staging / WORK / "manifest.json"
    if resume and path.exists():
        manifest = json.loads(path.read_text())
        if manifest.get("fingerprint") != fingerprint:
            raise ConvertError(f"{staging} was started with other inputs or options; run without --resume to start over")
        return manifest
    if staging.exists():
        shutil.rmtree(staging)
    (staging / WORK).mkdir(parents=True)
    manifest = {"fingerprint": fingerprint, "done": {}, "stats": {}}
    write_json(path, manifest)
    return manifest


def _create_stores(plan: _Plan, job: _Job, fresh: bool) -> list:
    """Each level's array, opened for writing (created when ``fresh``), indexed ``(c, z, y, x)``
    (``(z, y, x)`` for one channel)."""
    import tensorstore as ts

    limits = {"limit": plan.workers} if plan.workers else {"limit": "shared"}
    context = ts.Context({"data_copy_concurrency": limits, "file_io_concurrency": limits})
    root = plan.staging / job.key if job.key else plan.staging
    c = job.shapes[0][0]
    if plan.version == 0:  # (a restarted job's leftovers are rewritten with the same bytes)
        stores = []
        for spec in _precomputed_specs(plan, job):
            store = ts.open(spec, context=context).result()
            view = store[ts.d[:].transpose[3, 2, 1, 0]]  # precomputed is x, y, z, channel
            view = view[ts.d[:].translate_to[0]]
            stores.append(view if c > 1 else view[0])
        return stores
    names = (["c"] if c > 1 else []) + ["z", "y", "x"]
    stores = []
    for level, shape in enumerate(job.shapes):
        dims = list(shape if c > 1 else shape[1:])
        spec = zarr_spec(root / str(level), dims, ([1] if c > 1 else []) + plan.chunk, job.dtype, version=plan.version,
                         compression=plan.compression,
                         shard=(([1] if c > 1 else []) + plan.shard) if plan.shard else None,
                         dimension_names=names if plan.version == 3 else None)
        spec.update({"create": True, "delete_existing": True} if fresh else {"open": True})
        stores.append(ts.open(spec, context=context).result())
    return stores


def _precomputed_specs(plan: _Plan, job: _Job) -> list[dict]:
    root = plan.staging / job.key if job.key else plan.staging
    return precomputed_specs(root, job.shapes, job.factors, plan.chunk, job.dtype, label=job.label,
                             resolution_nm=_nanometres(plan.placement), offset=_voxel_offset(plan.placement),
                             shard=plan.shard)


def _read_slab(job: _Job, s: int, slab: int) -> np.ndarray:
    z = job.source.shape[1]
    data = job.source.read(s * slab, min(z, (s + 1) * slab))
    if data.shape[1:] != (min(z, (s + 1) * slab) - s * slab, *job.source.shape[2:]):
        raise ConvertError(f"{job.source.name}: slab {s} read as shape {data.shape}, expected {job.source.shape}")
    return _cast(data, job)


def _cast(data: np.ndarray, job: _Job) -> np.ndarray:
    if job.rescale is None:
        return data.astype(job.dtype, copy=False)
    lo, hi = job.rescale
    scaled = (data.astype(np.float64) - lo) / (hi - lo)
    if job.dtype.kind == "f":
        return scaled.astype(job.dtype)
    info = np.iinfo(job.dtype)
    return np.clip(np.rint(scaled * (info.max - info.min) + info.min), info.min, info.max).astype(job.dtype)


def _write_slab(job: _Job, stores: list, s: int, slab: int, data: np.ndarray) -> tuple[list, np.ndarray]:
    """Write slab ``s`` of every level, each from the previous one; its statistics and voxel sample."""
    import tensorstore as ts

    c = job.shapes[0][0]
    stats, writes = [], []
    lo, hi = s * slab, s * slab + data.shape[1]
    for level, store in enumerate(stores):
        if level:
            prev_f, f = job.factors[level - 1], job.factors[level]
            step = [1] + [b // a for a, b in zip(prev_f, f)]
            data = ts.downsample(ts.array(data), step, method=job.method).read().result()
            lo, hi = lo // step[1], lo // step[1] + data.shape[1]
        writes.append((store[:, lo:hi] if c > 1 else store[lo:hi]).write(data if c > 1 else data[0]))
        stats.append(_stats(data))
        if level == 0:
            sample = _sample(data, job, s * slab)
    for w in writes:
        w.result()
    return stats, sample


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_arenas() -> None:
    """Make threads created from now on share one glibc malloc arena.

    Tensorstore's codec threads would each get an arena of their own; slab-sized buffers freed
    in one arena are not reused by another, so the peak RSS crept up with the slab count (by
    about a slab per thread).  One shared arena keeps it flat.  Harmless where it is not glibc.
    """
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (AttributeError, OSError):
        pass


def _release_memory() -> None:
    """Hand freed heap back to the system after a slab (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to trim
        pass


def _stats(data: np.ndarray) -> list:
    if data.size == 0:
        return [None, None, 0.0, 0]
    if data.dtype.kind == "f":
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            return [None, None, 0.0, 0]
        return [float(finite.min()), float(finite.max()), float(finite.sum(dtype=np.float64)), int(finite.size)]
    return [data.min().item(), data.max().item(), float(data.sum(dtype=np.float64)), int(data.size)]


def _sample(data: np.ndarray, job: _Job, z0: int) -> np.ndarray:
    """Every k-th voxel of each channel in global order, so the samples of all slabs are one even sample."""
    c, z, y, x = job.shapes[0]
    step = max(1, z * y * x // SAMPLE_VOXELS)
    first = (-z0 * y * x) % step
    return np.ascontiguousarray(data.reshape(data.shape[0], -1)[:, first::step])


def _write_metadata(staging: Path, job: _Job, index: int, manifest: dict, placement: dict, version: int,
                    label_names: list[str]) -> None:
    """The group's OME attributes, with every level's min/max/mean and the omero window from the samples."""
    from .stats import _percentiles

    slabs = manifest["stats"][job.key]
    order = sorted(slabs, key=int)
    levels = []
    for level in range(len(job.shapes)):
        per = [slabs[s][level] for s in order]
        mins = [p[0] for p in per if p[0] is not None]
        maxs = [p[1] for p in per if p[1] is not None]
        count = sum(p[3] for p in per)
        levels.append({"path": str(level), "min": min(mins) if mins else None, "max": max(maxs) if maxs else None,
                       "mean": sum(p[2] for p in per) / count if count else None})
    if version == 0:  # precomputed: the statistics beside the scales in ``info``
        info_path = (staging / job.key if job.key else staging) / "info"
        info = json.loads(info_path.read_text())
        info["ngserve"] = {"levels": levels, "method": job.method}
        write_json(info_path, info)
        return
    c = job.shapes[0][0]
    unit = placement["unit"]
    axes = ([("c", "channel", None)] if c > 1 else []) + [(a, "space", unit) for a in "zyx"]
    scales, translations = [], []
    for f in job.factors:
        scale = [_tidy(v * k) for v, k in zip(placement["voxel"], f)]
        # A block's value sits at the block's centre: (k-1)/2 level-0 voxels past voxel 0's centre.
        shift = [0.0 if job.method == "stride" else (k - 1) * v / 2 for v, k in zip(placement["voxel"], f)]
        trans = [_tidy(t + d) for t, d in zip(placement["translation"], shift)]
        scales.append(([1.0] if c > 1 else []) + scale)
        translations.append(([0.0] if c > 1 else []) + trans)
    omero = None
    if not job.label:
        samples = np.concatenate([np.load(staging / WORK / f"sample-{index}-{s}.npy") for s in order], axis=1)
        names = job.source.channel_names or []
        channels = []
        for ch in range(c):
            start, end = _percentiles(samples[ch], 0.5, 99.5)
            kind = job.dtype.kind
            full = (np.iinfo(job.dtype).min, np.iinfo(job.dtype).max) if kind in "iu" else (levels[0]["min"], levels[0]["max"])
            channels.append({"label": names[ch] if ch < len(names) else f"channel {ch}", "active": True,
                             "color": "FFFFFF" if c == 1 else _COLORS[ch % len(_COLORS)],
                             "window": {"start": start, "end": end, "min": full[0], "max": full[1]}})
        omero = {"channels": channels, "rdefs": {"model": "color" if c > 1 else "greyscale"}}
        if version == 2:
            omero["version"] = "0.4"
    name = job.key.rsplit("/", 1)[-1] if job.key else staging.name[1:].split(".partial-convert")[0]
    attrs = ome_attrs(version=version, name=name, axes=axes, scales=scales, translations=translations, omero=omero,
                      label=job.label, extra={"ngserve": {"levels": levels, "method": job.method}})
    root = staging / job.key if job.key else staging
    write_group(root, version, attrs)
    if not job.key and label_names:
        labels_attrs = {"ome": {"version": "0.5", "labels": label_names}} if version == 3 else {"labels": label_names}
        write_group(staging / "labels", version, labels_attrs)

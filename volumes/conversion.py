"""``convert``: any volume ``volumes`` reads (or a numpy/dask array) to a multiscale OME-Zarr, in bounded memory.

The pyramid is built tile by tile (:mod:`.convert_tiles`): a level-0 tile is one write chunk (chunk
or shard) thick and as wide in y/x as ``max_memory`` allows; every coarser tile is the downsampling
of its children, built depth-first, so about one tile per level is in memory whatever the input's
size, each level comes from the previous level's data in one pass, and each input voxel is read
once.  Where a format cannot read part of a 2-D plane (a TIFF slice in one compressed strip, or
tiled; an HDF5/zarr chunk wider than a tile), that part is read again for each tile it touches:
tiles span the whole plane whenever the bound allows, so this only happens for planes too large
for it.  Reading the next tile, downsampling and tensorstore's compression and writes overlap.

The output is built in a hidden sibling folder (``.NAME.partial-convert``) and renamed into place
at the end.  The unit of work is a *task*, one tile of a round's top level with everything under
it; tasks write whole write chunks with deterministic bytes, so running one twice is harmless (a
lost dask worker) and after each task a manifest in that folder lists the finished tasks and their
statistics: ``resume=True`` continues an interrupted run, byte for byte equal to an uninterrupted one.
"""

from __future__ import annotations

import ctypes
import functools
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
from .convert_downsample import GAUSSIAN_MARGIN, downsample, gaussian
from .convert_downsample import stats as tile_stats
from .convert_sources import ConvertError, Source, crop, open_source, parse_ranges, stack_channels
from .convert_stores import COMPRESSIONS, JPEG_QUALITY, SHARD_ABOVE, ome_attrs, precomputed_specs, write_group, write_json, zarr_spec
from .convert_tiles import Tiling, full_k, make_tiling
from .units import ome_unit

DEFAULT_MAX_MEMORY = 2 << 30
METHODS = ("mean", "mode", "median", "min", "max", "stride", "gaussian")
CENTRED = ("stride", "gaussian")  # a coarse voxel sits on a fine one (others: at the centre of its block)
FORMATS = {"ome-zarr": 2, "ome-zarr-0.4": 2, "ome-zarr-0.5": 3, "precomputed": 0}  # -> zarr version, 0: none
SAMPLE_VOXELS = 1 << 20  # per channel, spread over the whole volume, for the omero window
WORK = ".ngserve-convert"  # manifest and samples inside the staging folder; removed at the end
_COLORS = ["FF0000", "00FF00", "0000FF", "FF00FF", "00FFFF", "FFFF00"]


@dataclass
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
    output: str | os.PathLike | None = None,
    *,
    add_levels: int | None = None,
    from_level: int | None = None,
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
    axes: str | None = None,
    encoding: str = "raw",
    jpeg_quality: int | None = None,
) -> dict:
    """Convert ``inputs`` (one path/array, or several: channels) to a multiscale OME-Zarr at ``output``.

    Paths are anything :func:`volumes.open_dataset` reads (``file.h5:/path`` for HDF5).
    ``labels`` maps names to inputs written as ``labels/NAME`` (mode downsampling).
    ``voxel_size``/``translation`` are ``z, y, x`` in ``units`` (OME's voxel-centre translation).
    ``progress(done, total)`` is called with voxels written (all levels) after each task.
    ``dask`` (``"tcp://HOST:PORT"`` or ``"local"``) runs the tasks on a dask.distributed cluster.
    ``axes`` names the inputs' dimensions in storage order (``"xyz"``, ``"czyx"``, ``"tzyx"``…)
    when their readers cannot tell (arrays) or tell wrong.  ``encoding="jpeg"`` writes a
    precomputed uint8 image (1 or 3 channels) as jpeg chunks (lossy) at ``jpeg_quality`` (1-100, default 90).
    Returns a summary: ``levels``, ``shapes``, ``bytes``, ``seconds``, ``output``, ``tile`` (level-0
    tile, z, y, x), ``tasks`` (tasks run by this call), ``resumed_tasks``, ``dask``.

    ``add_levels=N`` instead adds N coarser levels to the OME-Zarr image ``inputs`` in place (from
    its coarsest level, or ``from_level``, replacing the levels after it); see
    :func:`volumes.convert_add_levels.add_levels`.  Only ``method``, ``max_memory``, ``workers``,
    ``overwrite``, ``resume`` and ``progress`` apply.
    """
    started = time.monotonic()
    _tune_malloc()
    if add_levels is not None:
        from .convert_add_levels import add_levels as extend

        if output is not None and Path(output) != Path(inputs):
            raise ConvertError("--add-levels extends one OME-Zarr in place: give only its path")
        return extend(inputs, add_levels, from_level=from_level, method=method, max_memory=max_memory, workers=workers,
                      overwrite=overwrite, resume=resume, progress=progress)
    if from_level is not None:
        raise ConvertError("--from-level goes with --add-levels")
    if output is None:
        raise ConvertError("give the OUTPUT folder")
    recipe = dict(inputs=inputs, output=output, labels=labels, format=format, chunk=chunk, shard=shard, levels=levels,
                  method=method, voxel_size=voxel_size, units=units, translation=translation, overwrite=overwrite,
                  compression=compression, dtype=dtype, rescale=rescale, channel_names=channel_names,
                  ranges=ranges, max_memory=max_memory, workers=workers, axes=axes,
                  encoding=encoding, jpeg_quality=jpeg_quality)
    plan = _prepare(**recipe)
    manifest = _start(plan.staging, plan.fingerprint, resume)
    jobs, tasks = plan.jobs, task_list(plan.tiling)
    total = sum(_task_voxels(plan, j, t) for j in jobs for t in range(len(tasks)))
    resumed = sum(len(v) for v in manifest["done"].values())
    done_voxels = 0
    batches: list[list[tuple[int, int]]] = [[] for _ in plan.tiling.rounds()]  # one batch per round
    for index, job in enumerate(jobs):
        _create_stores(plan, job, fresh=not manifest["done"].get(job.key))  # every task then opens what exists
        finished = set(manifest["done"].setdefault(job.key, []))
        manifest["stats"].setdefault(job.key, {})
        done_voxels += sum(_task_voxels(plan, job, t) for t in finished)
        for t, (r, _) in enumerate(tasks):
            if t not in finished:
                batches[r].append((index, t))

    def finished(index: int, t: int, stats: dict, sample: np.ndarray | None) -> None:
        nonlocal done_voxels
        key = jobs[index].key
        if sample is not None:
            np.save(plan.staging / WORK / f"sample-{index}-{t}.npy", sample)
        record(plan.staging, manifest, key, t, stats)
        done_voxels += _task_voxels(plan, jobs[index], t)
        if progress:
            progress(done_voxels, total)

    if dask is not None:
        from .convert_dask import run_on_dask

        run_on_dask(dask, recipe, plan.fingerprint, batches, finished)
    else:
        _run_local(plan, [item for batch in batches for item in batch], finished)
    label_names = [j.key[7:] for j in jobs if j.label]
    for index, job in enumerate(jobs):
        manifest["done"][job.key].sort()
        _write_metadata(plan.staging, job, index, manifest, plan.placement, plan.version, label_names)
    shutil.rmtree(plan.staging / WORK)
    output = Path(output)
    move_into_place(plan.staging, output)
    size = _tree_size(output)
    return {"output": str(output), "levels": len(jobs[0].shapes), "shapes": [list(s) for s in jobs[0].shapes],
            "bytes": size, "seconds": time.monotonic() - started, "tile": list(plan.tiling.tile(0)),
            "resumed_tasks": resumed, "tasks": sum(len(b) for b in batches), "dask": dask}


def _tree_size(root: Path) -> int:
    """Bytes of the files under ``root``, one directory at a time (``rglob`` over a million chunk
    files would hold tens of MB)."""
    total, folders = 0, [str(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


@dataclass
class _Plan:
    """Everything a task needs, derived from the options alone (so a dask worker derives the same)."""

    jobs: list[_Job]
    version: int
    chunk: list[int]
    shard: list[int] | None
    shard_bits: int | None  # precomputed: a shard is 2^bits chunks along each axis
    tiling: Tiling
    placement: dict
    compression: str
    workers: int | None
    staging: Path
    fingerprint: str
    write_base: bool = True  # False when adding levels: level 0 is an existing array, only read
    encoding: str = "raw"  # precomputed images: raw or jpeg
    jpeg_quality: int = JPEG_QUALITY


def _prepare(*, inputs, output, labels, format, chunk, shard, levels, method, voxel_size, units, translation,
             overwrite, compression, dtype, rescale, channel_names, ranges, max_memory, workers, axes,
             encoding, jpeg_quality) -> _Plan:
    """Check the options, open the inputs and plan levels and tiles; writes nothing."""
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
    image = stack_channels([open_source(i, axes) for i in items])
    box = parse_ranges(ranges, image.shape[1:]) if ranges else None
    if box:
        image = crop(image, box)
    if channel_names is not None:
        if len(channel_names) != image.shape[0]:
            raise ConvertError(f"{len(channel_names)} --channel-names for {image.shape[0]} channels")
        image.channel_names = list(channel_names)
    jobs = [_Job("", image, _out_dtype(image, dtype, rescale), method or "mean", False, rescale)]
    quality = _check_encoding(encoding, version, jobs[0], jpeg_quality)
    for name, item in (labels or {}).items():
        src = open_source(item, axes)
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
        label_method = "mode" if method in (None, "mean", "gaussian") else method  # never averaged or smoothed
        jobs.append(_Job(f"labels/{name}", src, label_dtype, label_method, True, None))

    chunk3 = _three(chunk, "--chunk")
    shard3 = _three(shard, "--shard") if shard is not None else None
    n_levels = _count_levels(image.shape[1:], chunk3, levels)
    shard_bits = None
    if version == 0:
        shard_bits = _precomputed_shard_bits(image.shape[1:], chunk3, shard3, n_levels)
    write = _write_chunk(chunk3, shard3, version, shard_bits)
    tiling = _plan_tiles(jobs, n_levels, write, max_memory)
    for job in jobs:
        job.shapes = [(job.source.shape[0], *s) for s in tiling.shapes]
        job.factors = _factors(tiling)
    placement = _placement(image, voxel_size, units, translation)
    if version == 0:
        _voxel_offset(placement)  # refused now, before anything is written
    staging = output.with_name(f".{output.name}.partial-convert")
    fingerprint = _fingerprint(jobs, chunk3, shard3, tiling, version, f"{compression} {encoding} {quality}", placement, items,
                               labels)
    return _Plan(jobs, version, chunk3, shard3, shard_bits, tiling, placement, compression, workers, staging,
                 fingerprint, encoding=encoding, jpeg_quality=quality)


def _check_encoding(encoding: str, version: int, image: _Job, jpeg_quality: int | None) -> int:
    """The jpeg quality to write with (refusing options that do not fit the output)."""
    if jpeg_quality is not None:
        if encoding != "jpeg":
            raise ConvertError("--jpeg-quality goes with --encoding jpeg (precomputed uint8 images)")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, (int, np.integer)) or not 1 <= jpeg_quality <= 100:
            raise ConvertError(f"--jpeg-quality {jpeg_quality!r}: give a whole number from 1 to 100")
    if encoding == "raw":
        return JPEG_QUALITY
    if encoding != "jpeg":
        raise ConvertError(f"unknown --encoding {encoding!r}; use raw or jpeg")
    if version != 0:
        raise ConvertError("--encoding jpeg needs --format precomputed")
    if image.dtype != np.uint8 or image.source.shape[0] not in (1, 3):
        raise ConvertError(f"--encoding jpeg takes uint8 images of 1 or 3 channels, not {image.source.shape[0]} "
                           f"channel(s) of {image.dtype}; add --dtype uint8 --rescale LO:HI")
    return JPEG_QUALITY if jpeg_quality is None else int(jpeg_quality)


def _run_local(plan: _Plan, todo: list[tuple[int, int]], finished: Callable) -> None:
    """The tasks in order, in this process (each overlaps its own reading, downsampling and writing)."""
    stores: dict[int, list] = {}
    for index, t in todo:
        if index not in stores:
            stores = {index: _create_stores(plan, plan.jobs[index], fresh=False)}
        stats, sample = _run_task(plan, index, t, stores[index])
        finished(index, t, stats, sample)
        _release_memory()


def task(plan: _Plan, index: int, t: int) -> tuple[dict, np.ndarray | None]:
    """Run task ``t`` of job ``index`` (whole write chunks: running it twice is harmless)."""
    result = _run_task(plan, index, t, _create_stores(plan, plan.jobs[index], fresh=False))
    _release_memory()
    return result


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


def _factors(tiling: Tiling) -> list[tuple[int, int, int]]:
    """Per level, the cumulative (z, y, x) factor vs level 0."""
    out = [(1, 1, 1)]
    for step in tiling.steps[1:]:
        out.append(tuple(a * b for a, b in zip(out[-1], step)))
    return out


def _count_levels(shape: Sequence[int], chunk: list[int], levels: int | None) -> int:
    if levels is not None:
        if levels < 1:
            raise ConvertError("--levels must be at least 1")
        return levels
    n, dims = 1, list(shape)
    while any(d > k for d, k in zip(dims, chunk)):  # until the coarsest level fits in one chunk
        dims = [-(-d // 2) for d in dims]
        n += 1
    return n


def _precomputed_shard_bits(shape: Sequence[int], chunk: list[int], shard: list[int] | None, n: int) -> int | None:
    """Shards of 2^bits chunks per axis: from ``--shard``, or 4 when a level has over SHARD_ABOVE chunks."""
    if shard is not None:
        return max(0, min(int(math.log2(max(1, s // c))) for s, c in zip(shard, chunk)))
    if math.prod(-(-s // c) for s, c in zip(shape, chunk)) > SHARD_ABOVE:
        return 2
    return None


def _write_chunk(chunk: list[int], shard: list[int] | None, version: int, shard_bits: int | None) -> tuple:
    """The box one write must cover whole: the chunk, or the shard of a sharded output."""
    if version == 3 and shard is not None:
        return tuple(max(c, s // c * c) for c, s in zip(chunk, shard))
    if version == 0 and shard_bits is not None:
        return tuple(c << shard_bits for c in chunk)
    return tuple(chunk)


def _tile_bytes(job: _Job, tiling: Tiling) -> int:
    """Working memory of a task: two level-0 tiles (one written and downsampled, the next read), the
    cast copy, tensorstore's copy of the tile it writes (1.25: with its encoding buffers), and one
    tile of every coarser level twice (assembled, and in tensorstore while written)."""
    c = job.source.shape[0]
    vox = [c * math.prod(min(t, s) for t, s in zip(tiling.tile(lv), tiling.shapes[lv])) for lv in range(tiling.levels)]
    src, out = job.source.dtype.itemsize, job.dtype.itemsize
    cast = out if (job.rescale is not None or job.dtype != job.source.dtype) else 0
    smooth = 8 if job.method == "gaussian" else 0  # scipy's float32 copy and its result
    return int(vox[0] * (2 * src + cast + 1.25 * out + smooth) + 2 * out * sum(vox[1:]))


def _plan_tiles(jobs: list[_Job], n: int, write: tuple, max_memory: int) -> Tiling:
    """The tiling with the largest level-0 tiles within ``max_memory``: the whole plane if it fits,
    else bands of whole rows, else parts of rows."""
    shape = jobs[0].source.shape[1:]
    k = [0, full_k(shape[1], write[1]), full_k(shape[2], write[2])]
    while True:
        tiling = make_tiling(shape, n, write, tuple(k), one_level_rounds=any(j.method == "gaussian" for j in jobs))
        need = max(_tile_bytes(j, tiling) for j in jobs)
        if need <= max_memory:
            return tiling
        if k[1] or k[2]:  # fewer rows first: whole rows are one read in row-major files (TIFF strips, MRC, …)
            k[1 if k[1] else 2] -= 1
        else:
            t = "x".join(map(str, tiling.tile(0)))
            raise ConvertError(f"a tile of {t} voxels (one write chunk: chunk or shard) needs about {_size(need)}, "
                               f"over --max-memory {_size(max_memory)}; raise --max-memory or lower --chunk/--shard")


@functools.lru_cache(maxsize=8)
def task_list(tiling: Tiling) -> tuple[tuple[int, tuple[int, int, int]], ...]:
    """Every task of a job: (round, tile index at the round's top level), round by round."""
    return tuple((r, index) for r, (_, top) in enumerate(tiling.rounds()) for index in tiling.tasks(top))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _task_voxels(plan: _Plan, job: _Job, t: int) -> int:
    """Voxels a task writes (every level it builds), for the progress bar."""
    r, index = task_list(plan.tiling)[t]
    base, top = plan.tiling.rounds()[r]
    c = job.shapes[0][0]
    first = base if r == 0 and plan.write_base else base + 1
    count = 0
    for level in range(first, top + 1):
        box = _scale_box(plan.tiling, top, index, level)
        count += c * math.prod(hi - lo for lo, hi in box)
    return count


def _scale_box(tiling: Tiling, level: int, index: tuple, target: int) -> tuple:
    """The part of level ``target`` (≤ ``level``) under a tile of ``level``."""
    box = tiling.box(level, index)
    f = [1, 1, 1]
    for step in tiling.steps[target + 1:level + 1]:
        f = [a * b for a, b in zip(f, step)]
    return tuple((lo * k, min(s, hi * k)) for (lo, hi), k, s in zip(box, f, tiling.shapes[target]))


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


def _fingerprint(jobs, chunk, shard, tiling, version, compression, placement, items, labels) -> str:
    desc = {"jobs": [[j.key, j.source.shape, j.dtype.str, j.method, j.rescale, j.shapes] for j in jobs],
            "chunk": chunk, "shard": shard, "tiles": [tiling.write, tiling.k0, tiling.rounds()], "version": version,
            "compression": compression, "placement": placement,
            "inputs": [str(i) if isinstance(i, (str, os.PathLike)) else "array" for i in items],
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


def record(staging: Path, manifest: dict, key: str, t: int, stats: dict) -> None:
    """Note task ``t`` of job ``key`` as finished, with its statistics; call it only after the task's
    writes completed, so a resumed run never skips a task whose chunks are not all written."""
    manifest["stats"][key][str(t)] = stats
    manifest["done"][key].append(t)
    write_json(staging / WORK / "manifest.json", manifest)


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
                             shard_bits=plan.shard_bits, encoding=plan.encoding,
                             jpeg_quality=plan.jpeg_quality)


def _cast(data: np.ndarray, job: _Job) -> np.ndarray:
    if job.rescale is None:
        return data.astype(job.dtype, copy=False)
    lo, hi = job.rescale
    scaled = (data.astype(np.float64) - lo) / (hi - lo)
    if job.dtype.kind == "f":
        return scaled.astype(job.dtype)
    info = np.iinfo(job.dtype)
    return np.clip(np.rint(scaled * (info.max - info.min) + info.min), info.min, info.max).astype(job.dtype)


def _region(box: tuple, c: int) -> tuple:
    """The index of ``box`` in a level's store (which has no channel axis for one channel)."""
    return tuple(slice(lo, hi) for lo, hi in box) if c == 1 else (slice(None), *(slice(lo, hi) for lo, hi in box))


def _run_task(plan: _Plan, index: int, t: int, stores: list) -> tuple[dict, np.ndarray | None]:
    """Build task ``t`` of job ``index`` depth-first; its statistics per level and level-0 voxel sample.

    The next leaf tile is read on a thread while this one is downsampled; tensorstore compresses
    and writes a tile in the background until the next leaf's write is due.
    """
    job, tiling = plan.jobs[index], plan.tiling
    r, top_index = task_list(tiling)[t]
    base, top = tiling.rounds()[r]
    c = job.shapes[0][0]
    stats: dict[str, list] = {}
    samples: list[np.ndarray] = []
    pending: list = []
    leaves = iter(tiling.leaves(base, top, top_index))
    no_margin = ((0, 0),) * 3
    smooth = job.method == "gaussian" and base + 1 < tiling.levels

    def read_leaf(leaf: tuple) -> tuple[np.ndarray, tuple]:
        """A leaf tile, with the margin of its neighbours that gaussian smoothing needs."""
        box = tiling.box(base, leaf)
        margin = no_margin
        if smooth:
            margin = tuple((min(GAUSSIAN_MARGIN, lo), min(GAUSSIAN_MARGIN, size - hi)) if k == 2 else (0, 0)
                           for (lo, hi), size, k in zip(box, tiling.shapes[base], tiling.steps[base + 1]))
            box = tuple((lo - a, hi + b) for (lo, hi), (a, b) in zip(box, margin))
        if r == 0:
            data = job.source.read(box)
            want = (c, *(hi - lo for lo, hi in box))
            if data.shape != want:
                raise ConvertError(f"{job.source.name}: region {box} read as shape {data.shape}, expected {want}")
            return _cast(data, job), margin
        data = stores[base][_region(box, c)].read().result()
        return (data if c > 1 else data[None]), margin

    def write(level: int, leaf: tuple, data: np.ndarray) -> None:
        box = tiling.box(level, leaf)
        # (can_reference_source_data_indefinitely=True would spare tensorstore's copy, but encoding
        # then gathers each chunk from the strided tile: 15% more CPU time, measured.)
        pending.append(stores[level][_region(box, c)].write(data if c > 1 else data[0]))
        _merge(stats, str(level), tile_stats(data, plan.workers))
        if level == 0:
            samples.append(_sample(data, job, box))

    reader = _leaf_reader()
    ahead = [reader.submit(read_leaf, next(leaves))]

    def build(level: int, leaf: tuple) -> tuple[np.ndarray, tuple]:
        """The tile and the margin around it (gaussian's leaves only)."""
        if level == base:
            data, margin = ahead.pop().result()
            # The previous leaf's writes are committed before the next leaf is read, so at most two
            # leaf tiles are alive (this one, written and downsampled, and the next, read) with
            # what tensorstore still holds of this one's write, however many leaves a task has:
            # peak memory does not depend on the input's size.
            for w in pending:
                w.result()
            pending.clear()
            following = next(leaves, None)
            if following is not None:
                ahead.append(reader.submit(read_leaf, following))
            if r == 0 and plan.write_base:
                inner = tuple(slice(a, n - b) for (a, b), n in zip(margin, data.shape[1:]))
                write(level, leaf, data[(slice(None), *inner)] if margin != no_margin else data)
            return data, margin
        box = tiling.box(level, leaf)
        step = tiling.steps[level]
        out = np.empty((c, *(hi - lo for lo, hi in box)), job.dtype)
        for child in tiling.children(level, leaf):
            data, margin = build(level - 1, child)
            if job.method == "gaussian":
                part = gaussian(data, step, margin)
            else:
                part = downsample(data, step, job.method, plan.workers)
            del data
            corner = [lo // k - plo for (lo, _), k, (plo, _) in zip(tiling.box(level - 1, child), step, box)]
            out[(slice(None), *(slice(a, a + n) for a, n in zip(corner, part.shape[1:])))] = part
        write(level, leaf, out)
        return out, no_margin

    build(top, top_index)
    for w in pending:
        w.result()
    sample = np.concatenate(samples, axis=1) if samples else None
    return stats, sample


_READER: list = []  # (pid, executor) of _leaf_reader


def _leaf_reader() -> ThreadPoolExecutor:
    """The thread that reads the next leaf tile ahead, one per process for all its tasks.

    Not one per task: a Python thread that ends while another thread runs sys._current_frames()
    (dask's worker profiler, every 10 ms) can deadlock CPython 3.11 up to 3.11.8 (gh-106883), and
    did, in a 16 GiB --dask local run.  Keyed by process: a forked child has no thread behind
    its parent's executor."""
    if not _READER or _READER[0][0] != os.getpid():
        _READER[:] = [(os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="convert_read"))]
    return _READER[0][1]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value


def _tune_malloc() -> None:
    """Make glibc's malloc reuse freed memory instead of handing it back and faulting it in again.

    * One arena shared by the threads created from now on: tensorstore's codec threads would each
      get their own, and tile-sized buffers freed in one are not reused by another.
    * Blocks up to 32 MiB (tensorstore's chunk buffers, the downsampling's plane groups) come from
      the heap, which keeps up to 64 MiB of freed memory at its top for reuse (all of it goes back
      after each task: ``_release_memory``).  With glibc's defaults many chunk buffers were fresh
      mmaps, zeroed page by page by the kernel.
    Harmless where it is not glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, 1)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    except (AttributeError, OSError):
        pass


def _release_memory() -> None:
    """Hand freed heap back to the system after a task (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to trim
        pass


def _merge(stats: dict, level: str, new: list) -> None:
    """Fold one tile's [min, max, sum, count] into a level's."""
    old = stats.get(level)
    if old is None:
        stats[level] = new
        return
    pick = lambda f, a, b: b if a is None else a if b is None else f(a, b)  # noqa: E731
    stats[level] = [pick(min, old[0], new[0]), pick(max, old[1], new[1]), old[2] + new[2], old[3] + new[3]]


def _sample(data: np.ndarray, job: _Job, box: tuple) -> np.ndarray:
    """The voxels of a tile on a fixed grid over the whole volume (every k-th along each axis), so
    the samples of all tiles are one even sample of about SAMPLE_VOXELS per channel."""
    _, z, y, x = job.shapes[0]
    k = max(1, round((z * y * x / SAMPLE_VOXELS) ** (1 / 3)))
    index = tuple(slice((-lo) % k, None, k) for lo, _ in box)
    return np.ascontiguousarray(data[(slice(None), *index)].reshape(data.shape[0], -1))


def _write_metadata(staging: Path, job: _Job, index: int, manifest: dict, placement: dict, version: int,
                    label_names: list[str]) -> None:
    """The group's OME attributes, with every level's min/max/mean and the omero window from the samples."""
    from .stats import _percentiles

    tasks = manifest["stats"][job.key]
    order = sorted(tasks, key=int)
    levels = []
    for level in range(len(job.shapes)):
        per = [tasks[t][str(level)] for t in order if str(level) in tasks[t]]
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
        shift = [0.0 if job.method in CENTRED else (k - 1) * v / 2 for v, k in zip(placement["voxel"], f)]
        trans = [_tidy(t + d) for t, d in zip(placement["translation"], shift)]
        scales.append(([1.0] if c > 1 else []) + scale)
        translations.append(([0.0] if c > 1 else []) + trans)
    omero = None
    if not job.label:
        files = [staging / WORK / f"sample-{index}-{t}.npy" for t in order]
        samples = np.concatenate([np.load(f) for f in files if f.exists()], axis=1)  # round-0 tasks have one
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

"""``ngserve mesh``: the multi-resolution meshes of every segment of a label volume, written ahead
of time in the sharded ``neuroglancer_multilod_draco`` format.

Two stages, each a set of independent tasks run on a process pool or a dask cluster:

1. **Nodes.**  Every octree node of every level of detail is meshed for all the segments in it
   (:func:`meshes.mesh_node`; the segments of a node are found there, in a node-sized box, so
   memory is one box per worker).  A task writes its Draco fragments to ``nodes/<lod>_<x>_<y>_<z>.npz``
   in the staging folder (ids, sizes, bytes), atomically.
2. **Shards.**  The fragments are grouped by segment (:func:`meshes.assemble`: manifest and data)
   and each shard file is written with the data just before the manifest the segment id names,
   as ``meshes.md`` places them (:func:`volumes.sharding.write_shard`); memory is one shard.

The staging folder ``.<OUTPUT>.partial`` beside the output holds ``plan.json`` (the options) and
the finished node and shard files: that is the manifest ``--resume`` continues from, and since
every file is a pure function of the labels and options the result is byte-identical.  The
``info`` is written last, then the folder is renamed into place.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from volumes import Dataset, open_dataset
from volumes.atomic import move_into_place
from volumes.convert_stores import write_json
from volumes.sharding import ShardingSpec, choose_sharding, order_in_shards, write_shard

from .multilod import assemble, encode_fragment, info_json, layout_for, mesh_node
from .prepare import PrepareError, attach_to_info
from .pyramid import LabelPyramid

Progress = Callable[[int, int], None]
CHECKED_SEGMENTS = 20  # --segments ids looked up before meshing (each a scan of the coarse levels)
MANIFEST_BYTES = 200  # a rough manifest size per segment, for choosing the sharding before assembling

_OPENED: dict[str, tuple[LabelPyramid, Any]] = {}  # per process: source -> (pyramid, layout)


def _opened(source: str, pyramid: LabelPyramid | None = None) -> tuple[LabelPyramid, Any]:
    if source not in _OPENED:
        pyramid = pyramid or LabelPyramid.from_dataset(open_dataset(source))
        _OPENED[source] = (pyramid, layout_for(pyramid))
    return _OPENED[source]


def node_tasks(pyramid: LabelPyramid, layout) -> list[tuple[int, tuple[int, int, int]]]:
    """(lod, position) of every octree node that meets the volume, for every LOD."""
    out = []
    for lod, level in enumerate(layout.lod_levels):
        lv = pyramid.levels[level]
        lo, hi = pyramid.to_level0(level, lv.lo, lv.hi)
        out.extend((lod, p) for p in layout.nodes_covering(lod, lo, hi))
    return out


def _node_name(lod: int, position) -> str:
    return f"{lod}_{position[0]}_{position[1]}_{position[2]}.npz"


def mesh_node_task(source: str, lod: int, position: tuple[int, int, int], segments: list[int] | None,
                   folder: str) -> int:
    """Mesh one node for all (or ``segments``) and write its fragments file; the number of fragments."""
    pyramid, layout = _opened(source)
    pieces = mesh_node(pyramid, layout, lod, tuple(position), segments)
    ids = sorted(pieces)
    blobs = [encode_fragment(pieces[s], layout, lod, tuple(position)) for s in ids]
    keep = [i for i, b in enumerate(blobs) if b]
    path = Path(folder) / _node_name(lod, position)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        np.savez(f, segments=np.array([ids[i] for i in keep], dtype=np.uint64),
                 sizes=np.array([len(blobs[i]) for i in keep], dtype=np.int64),
                 data=np.frombuffer(b"".join(blobs[i] for i in keep), dtype=np.uint8))
    os.replace(temporary, path)
    return len(keep)


def write_shard_task(source: str, staging: str, spec: dict, shard: int, keys: list[int]) -> int:
    """Assemble the meshes of ``keys`` (one shard's segments) from the node files and write the shard file."""
    _, layout = _opened(source)
    spec_ = ShardingSpec.from_json(spec)
    wanted = np.array(keys, dtype=np.uint64)
    fragments: dict[int, list[dict]] = {int(k): [{} for _ in layout.lod_levels] for k in keys}
    for name, lod, position in _node_files(Path(staging) / "nodes"):
        with np.load(Path(staging) / "nodes" / name) as node:
            ids = node["segments"]
            hit = np.flatnonzero(np.isin(ids, wanted))
            if not len(hit):
                continue
            data = node["data"]
            starts = np.concatenate([[0], np.cumsum(node["sizes"])])
            for i in hit:
                fragments[int(ids[i])][lod][position] = data[starts[i]:starts[i + 1]].tobytes()
    meshes = {k: assemble(layout, f) for k, f in fragments.items()}
    present = np.array(sorted(k for k, m in meshes.items() if m is not None), dtype=np.uint64)
    order, _, minishard = order_in_shards(present, spec_)
    ordered = [meshes[int(k)] for k in present[order]]
    data = b"".join(m.data + m.manifest for m in ordered)
    sizes = np.array([len(m.manifest) for m in ordered], dtype=np.int64)
    gaps = np.array([len(m.data) for m in ordered], dtype=np.int64)
    write_shard(Path(staging) / spec_.shard_name(shard), present[order], minishard[order], [(data, sizes, gaps)], spec_)
    return len(ordered)


def _node_files(folder: Path) -> list[tuple[str, int, tuple[int, int, int]]]:
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".npz") and not name.startswith("."):
            lod, x, y, z = (int(v) for v in name[:-4].split("_"))
            out.append((name, lod, (x, y, z)))
    return out


def build_meshes(
    ds: Dataset,
    pyramid: LabelPyramid,
    output: Path,
    *,
    segments: np.ndarray | None = None,
    workers: int | None = None,
    dask: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Write the sharded meshes of ``ds`` (opened as ``pyramid``; all segments, or ``segments``) to
    ``output``, named in precomputed labels' ``info`` when inside them; a summary for the one-line report."""
    started = time.monotonic()
    source = ds.location.root + ds.location.query_suffix  # what each worker opens
    _, layout = _opened(source, pyramid)
    if segments is not None:
        _check_segments(pyramid, segments, source)
    staging = output.with_name(f".{output.name}.partial")
    plan = {"source": source, "segments": None if segments is None else [int(s) for s in segments],
            "layout": asdict(layout)}
    resumed = _prepare_staging(staging, plan, resume)
    nodes_dir = staging / "nodes"
    nodes = node_tasks(pyramid, layout)
    done = {(lod, p) for _, lod, p in _node_files(nodes_dir)}
    todo = [(lod, p) for lod, p in nodes if (lod, p) not in done]
    total = len(nodes) + 1  # the shards count as one more step until their number is known
    count = [len(nodes) - len(todo)]

    def step(*_):
        count[0] += 1
        if progress:
            progress(count[0], total)

    seg_list = plan["segments"]
    _run([(f"ngserve-mesh-node-{lod}-{p[0]}-{p[1]}-{p[2]}", mesh_node_task, (source, lod, p, seg_list, str(nodes_dir)))
          for lod, p in todo], workers, dask, step)

    # Every segment and its fragment bytes, from the node files' small id and size arrays.
    ids, sizes = [], []
    for name, _, _ in _node_files(nodes_dir):
        with np.load(nodes_dir / name) as node:
            ids.append(node["segments"])
            sizes.append(node["sizes"])
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    keys = np.unique(all_ids)
    if segments is not None:
        missing = np.setdiff1d(segments, keys)
        if len(missing):
            raise PrepareError(f"--segments: {','.join(str(int(s)) for s in missing[:5])} not in {source}; "
                               "give ids the labels contain")
    spec = choose_sharding(len(keys), int(all_sizes.sum()) + MANIFEST_BYTES * len(keys), hash="murmurhash3_x86_128",
                           minishard_index_encoding="gzip", data_encoding="raw")
    order, shard_of, _ = order_in_shards(keys, spec)
    shards: dict[int, list[int]] = {}
    for k in order:
        shards.setdefault(int(shard_of[k]), []).append(int(keys[k]))
    total = len(nodes) + len(shards)
    pending = {s: k for s, k in shards.items() if not (staging / spec.shard_name(s)).exists()}
    count[0] = total - len(pending)
    _run([(f"ngserve-mesh-shard-{s}", write_shard_task, (source, str(staging), spec.to_json(), s, k))
          for s, k in pending.items()], workers, dask, step)

    write_json(staging / "info", {**info_json(layout), "sharding": spec.to_json()})
    shutil.rmtree(nodes_dir)
    (staging / "plan.json").unlink()
    move_into_place(staging, output)
    attached = attach_to_info(ds, output, "mesh")
    return {"attached": attached, "output": str(output), "segments": len(keys), "shards": len(shards), "lods": len(layout.lod_levels),
            "bytes": sum(f.stat().st_size for f in output.iterdir()), "seconds": time.monotonic() - started,
            "resumed_nodes": len(done) if resumed else 0, "dask": dask, "nodes": len(nodes)}


def _check_segments(pyramid: LabelPyramid, segments: np.ndarray, source: str) -> None:
    """Refuse ids the labels cannot hold, and (for a short list) ids no level shows, before any meshing."""
    for s in segments[:CHECKED_SEGMENTS]:
        if pyramid.find(int(s)) is None:
            raise PrepareError(f"--segments: {int(s)} is not in {source}; give ids the labels contain")


def _prepare_staging(staging: Path, plan: dict, resume: bool) -> bool:
    """Create (or, with ``resume``, reuse) the staging folder; whether an earlier run is continued."""
    if resume and (staging / "plan.json").exists():
        earlier = json.loads((staging / "plan.json").read_text())
        if earlier != json.loads(json.dumps(plan)):
            raise PrepareError(f"--resume: the unfinished run in {staging} used other labels or options; "
                               "give the same ones, or drop --resume to start over")
        return True
    if staging.exists():
        shutil.rmtree(staging)  # an unfinished run that is not being resumed
    (staging / "nodes").mkdir(parents=True)
    write_json(staging / "plan.json", plan)
    return False


def _run(calls: list[tuple[str, Callable, tuple]], workers: int | None, dask: str | None, step: Callable) -> None:
    """Run the calls on a process pool (``workers``, default all cores) or on dask; ``step()`` after each."""
    if not calls:
        return
    if dask is not None:
        from volumes.convert_dask import run_calls
        from volumes.convert_sources import ConvertError

        try:
            run_calls(dask, workers, [{name: (fn, args) for name, fn, args in calls}], step)
        except ConvertError as exc:
            raise PrepareError(str(exc)) from None
        return
    n = workers or os.cpu_count() or 1
    if n == 1:
        for _, fn, args in calls:
            fn(*args)
            step()
        return
    # spawn, not fork: the driver has tensorstore's threads running, which a fork would copy mid-flight.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        # A bounded number in flight: the queue of pending calls stays small for huge volumes.
        queue = iter(calls)
        running = set()
        for _, fn, args in queue:
            running.add(pool.submit(fn, *args))
            if len(running) >= 4 * n:
                break
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
                step()
                nxt = next(queue, None)
                if nxt is not None:
                    running.add(pool.submit(nxt[1], *nxt[2]))

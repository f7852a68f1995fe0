"""Present any :class:`Dataset` as a Neuroglancer precomputed volume: ``info``, chunk names, chunks.

Pure format knowledge, no HTTP: the server's ``/-/precomputed/`` view calls
:func:`present` once per dataset, then :meth:`Presentation.info` and
:meth:`Presentation.chunk` (blocking: tensorstore reads) per request.

Geometry.  A precomputed volume has dimensions x, y, z (x fastest) and a
channel count.  The dataset's spatial axes map onto x, y, z by name when they
are called x/y/z, else in reverse order (zarr and OME list the fastest axis
last); a channel axis becomes ``num_channels``; other axes must have size 1.
Each real level is one scale, its ``voxel_offset`` the dataset's offset in
that level's voxels, rounded to whole voxels (precomputed has no sub-voxel
offset; OME's half-voxel centre convention is the usual remainder, which
:func:`offset_remainder` gives for a viewer state's source transform).

Virtual pyramid.  While the coarsest level is still larger than one chunk
along some axis, a coarser scale is added: tensorstore's downsample driver
(mean for images, mode for labels) over the next finer scale, factor 2 on each
still-large axis whose voxels are not already much coarser than the finest
such axis, so anisotropic data becomes isotropic before it shrinks evenly.
Each virtual scale is the downsampling of the scale before it *as presented*
(a chain, as pyramid writers make them), so a virtual chunk is computed from
the few finer chunks below it (:meth:`Presentation.inputs`,
:meth:`Presentation.combine`), which a server caches: a zoomed-out view then
reads each source chunk at most once.  At edges of odd size and for mode, a
chain differs from one downsampling by the total factor; the chain is what
this module defines, and both ways of computing a chunk here give it exactly.

Data types.  precomputed knows uint8/16/32/64, int8/16/32 and float32.
float64 becomes float32 (lossy: float32 precision); float16 becomes float32
and bool uint8 (both lossless); int64 becomes uint64 bit for bit (lossless:
non-negative values are unchanged, a negative v reads as 2**64 + v), which is
what label volumes written as int64 (scikit-image, numpy defaults) need.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .location import SourceError
from .model import Dataset

CHUNK = 64  # voxels per axis of a translated chunk, unless the source's own chunking is usable
MIN_SOURCE_CHUNK, MAX_SOURCE_CHUNK, MAX_SOURCE_VOXELS = 8, 512, 1 << 21  # source chunking we keep
MAX_VIRTUAL = 24  # virtual scales at most (2**24 voxels along an axis is far beyond any dataset)
# Work per request stays bounded whatever the array: a chunk of a real scale may read at most
# MAX_FILES_PER_CHUNK source chunks (an array stored in 1-voxel chunks is refused), and a virtual
# scale is offered only while one of its chunks stands, cold, on at most MAX_FILES_BELOW source
# chunks (16x per axis over 64^3 source chunks; 10k^3 still gets 5 virtual scales).  A zoomed-out
# view then loads more chunks of the coarsest scale offered, as from a pyramid written that deep.
MAX_FILES_PER_CHUNK = 1 << 12
MAX_FILES_BELOW = 1 << 16
MAX_SOURCE_FILES = 1 << 16  # a chunk reading more source files than this is not tracked (not cached)
SEGMENTATION_BLOCK = [8, 8, 8]

# source dtype -> precomputed data_type (see the module docstring for what each mapping keeps)
DATA_TYPES = {
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "int8": "int8", "int16": "int16", "int32": "int32", "float32": "float32",
    "float64": "float32", "float16": "float32", "bool": "uint8", "int64": "uint64",
}
_CHUNK_NAME = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)$")


class TranslationError(SourceError):
    """The dataset cannot be presented as precomputed; the message says why."""


class ChunkNameError(ValueError):
    """A request names no chunk of this volume; ``malformed`` when it is not even a chunk name."""

    def __init__(self, message: str, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


@dataclass(frozen=True)
class Scale:
    key: str
    size: tuple[int, ...]  # x, y, z voxels
    voxel_offset: tuple[int, ...]
    resolution: tuple[float, ...]  # nm
    chunk: tuple[int, ...]
    level: int  # the real level this scale reads
    factors: tuple[int, ...] = (1, 1, 1)  # downsampling of that level (virtual scales only)
    step: tuple[int, ...] = (1, 1, 1)  # downsampling of the scale before this one (virtual scales only)
    files_per_chunk: int = 1  # source chunks one chunk of a real scale reads, at most

    @property
    def virtual(self) -> bool:
        return self.factors != (1, 1, 1)

    def to_json(self, encoding: str) -> dict:
        out = {
            "key": self.key,
            "size": list(self.size),
            "voxel_offset": list(self.voxel_offset),
            "resolution": list(self.resolution),
            "chunk_sizes": [list(self.chunk)],
            "encoding": encoding,
        }
        if encoding == "compressed_segmentation":
            out["compressed_segmentation_block_size"] = SEGMENTATION_BLOCK
        return out

    def box(self, index: tuple[int, ...]) -> list[tuple[int, int]]:
        """The ``[(lo, hi)] * 3`` voxels of the chunk at grid ``index``."""
        return [(o + i * c, min(o + (i + 1) * c, o + n))
                for o, i, c, n in zip(self.voxel_offset, index, self.chunk, self.size)]

    def covering(self, ranges: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """The boxes of the chunks that cover ``ranges`` (voxels of this scale, within it), x fastest."""
        spans = [range((lo - o) // c, (hi - o - 1) // c + 1)
                 for (lo, hi), o, c in zip(ranges, self.voxel_offset, self.chunk)]
        return [self.box((i, j, k)) for k in spans[2] for j in spans[1] for i in spans[0]]


def chunk_name(box: list[tuple[int, int]]) -> str:
    return "_".join(f"{lo}-{hi}" for lo, hi in box)


@dataclass
class Presentation:
    """A dataset seen as precomputed.  Thread-safe: stores open lazily under a lock."""

    dataset: Dataset
    xyz: list[int | None]  # source dimension for x, y, z (None: the source has no such axis)
    channel: int | None
    dropped: list[int]  # source dimensions of size 1 that precomputed has no place for
    data_type: str
    type: str  # "image" or "segmentation"
    encoding: str
    num_channels: int
    scales: list[Scale]
    notes: list[str] = field(default_factory=list)
    _views: dict[int, Any] = field(default_factory=dict, repr=False)
    _sources: dict[int, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- metadata ------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": self.type,
            "data_type": self.data_type,
            "num_channels": self.num_channels,
            "scales": [s.to_json(self.encoding) for s in self.scales],
        }

    def scale(self, key: str) -> Scale:
        for s in self.scales:
            if s.key == key:
                return s
        raise ChunkNameError(f"no scale {key!r}: this volume has {', '.join(s.key for s in self.scales)}")

    def parse_chunk(self, key: str, name: str) -> tuple[Scale, list[tuple[int, int]]]:
        """The scale and ``[(lo, hi)] * 3`` box a chunk name denotes; ChunkNameError unless it is one of its grid."""
        scale = self.scale(key)
        m = _CHUNK_NAME.match(name)
        if m is None:
            raise ChunkNameError(f"{name!r} is not a chunk name (x0-x1_y0-y1_z0-z1)", malformed=True)
        box = [(int(m.group(2 * i + 1)), int(m.group(2 * i + 2))) for i in range(3)]
        for (lo, hi), off, size, chunk in zip(box, scale.voxel_offset, scale.size, scale.chunk):
            if (lo - off) % chunk or not off <= lo < off + size or hi != min(lo + chunk, off + size):
                raise ChunkNameError(f"{name!r} is not a chunk of scale {key!r}")
        return scale, box

    # -- data ----------------------------------------------------------------------------
    def chunk(self, key: str, name: str) -> bytes:
        """The encoded chunk (blocking: reads the source with tensorstore).

        A virtual chunk read this way reads the whole region of the real level below it
        (through the chain of downsamplings); a server that caches chunks builds it from
        cached finer chunks instead (:meth:`inputs`, :meth:`combine`).
        """
        scale, box = self.parse_chunk(key, name)
        view = self._view(scale)
        region = view[tuple(slice(lo, hi) for lo, hi in box) + (slice(None),)].read().result()
        return encode(region, self.data_type, self.encoding, box)

    def inputs(self, key: str, name: str) -> tuple[str, list[str]] | None:
        """A virtual chunk's inputs: the previous scale's key and the names of its chunks that
        the chunk is the downsampling of; None for a chunk of a real scale (read from the source)."""
        scale, box = self.parse_chunk(key, name)
        if not scale.virtual:
            return None
        finer = self.scales[self.scales.index(scale) - 1]
        return finer.key, [chunk_name(b) for b in finer.covering(_region(finer, scale, box))]

    def combine(self, key: str, name: str, parts: list[bytes]) -> bytes:
        """A virtual chunk from its :meth:`inputs`' encoded bytes, in their order (blocking: CPU only)."""
        import numpy as np
        import tensorstore as ts

        scale, box = self.parse_chunk(key, name)
        finer = self.scales[self.scales.index(scale) - 1]
        region = _region(finer, scale, box)
        lo = [a for a, _ in region]
        buffer = np.empty([b - a for a, b in region] + [self.num_channels], dtype=self.data_type)
        for part, inner in zip(parts, finer.covering(region), strict=True):
            data = decode(part, self.data_type, self.encoding, inner, self.num_channels)
            cut = [(max(a, ra), min(b, rb)) for (a, b), (ra, rb) in zip(inner, region)]
            buffer[tuple(slice(a - o, b - o) for (a, b), o in zip(cut, lo))] = \
                data[tuple(slice(a - i, b - i) for (a, b), (i, _) in zip(cut, inner))]
        # The region starts on a block boundary of the step or at the finer scale's own edge,
        # so its blocks are exactly those ts.downsample of the whole finer scale averages.
        view = ts.array(buffer)[ts.d[:].translate_to[[*lo, 0]]]
        out = ts.downsample(view, [*scale.step, 1], method=self._method).read().result()
        return encode(out, self.data_type, self.encoding, box)

    def view(self, key: str):
        """Scale ``key`` as a lazy tensorstore with dimensions x, y, z, c in that scale's voxel coordinates."""
        return self._view(self.scale(key))

    # -- jpeg, on request -----------------------------------------------------------------
    def jpeg_problem(self) -> str | None:
        """Why this volume has no jpeg form (None when it has: uint8 images of 1 or 3 channels)."""
        if self.data_type == "uint8" and self.type == "image" and self.num_channels in (1, 3):
            return None
        return (f"jpeg is for uint8 images of 1 or 3 channels; this is a {self.data_type} {self.type} "
                f"of {self.num_channels} channel(s)")

    def jpeg_info(self) -> dict:
        """:meth:`info` with every scale jpeg-encoded (lossy; the same chunk names)."""
        info = self.info()
        for scale in info["scales"]:
            scale["encoding"] = "jpeg"
        return info

    def jpeg(self, key: str, name: str, data: bytes) -> bytes:
        """A chunk as jpeg from its own (raw) bytes (blocking: CPU only).  Coarser scales are
        built from the raw chunks, so jpeg's loss never compounds down the pyramid."""
        _, box = self.parse_chunk(key, name)
        return encode(decode(data, self.data_type, self.encoding, box, self.num_channels), "uint8", "jpeg", box)

    @property
    def _method(self) -> str:
        return "mode" if self.type == "segmentation" else "mean"

    @property
    def single_file(self) -> bool:
        """Whether the dataset is one file (TIFF, MRC, HDF5, NIfTI) that a file reader opened."""
        return self.dataset.levels[0].opener is not None and "slices" not in self.dataset.extras

    def source_files(self, key: str, name: str) -> list[str] | None:
        """The files below the dataset root whose bytes a real scale's chunk is read from; None when unknown.

        The server keys its cache by their validators, so an edited source file
        changes the key of exactly the chunks read from it (and, through
        :meth:`inputs`, of the virtual chunks above them).
        """
        scale, box = self.parse_chunk(key, name)
        if scale.virtual:
            raise ValueError(f"scale {key!r} is virtual: its chunks are computed from finer chunks (inputs)")
        level = self.dataset.levels[scale.level]
        real = self.scales[scale.level]
        if level.opener is not None:  # a file reader: one file ("" is the dataset itself), or a stack
            if self.single_file:
                return [""]
            return self._slice_files(real, box)

        src, spec = self._opened(scale.level)
        lo_dom, hi_dom = list(src.domain.inclusive_min), list(src.domain.exclusive_max)
        ranges = [(lo_dom[d], lo_dom[d] + 1) for d in range(src.rank)]  # dropped: the one index
        if self.channel is not None:
            ranges[self.channel] = (lo_dom[self.channel], hi_dom[self.channel])
        for axis, dim in enumerate(self.xyz):
            if dim is None:
                continue
            f, shift = scale.factors[axis], lo_dom[dim] - real.voxel_offset[axis]
            lo, hi = box[axis]
            ranges[dim] = (max(lo * f + shift, lo_dom[dim]), min(hi * f + shift, hi_dom[dim]))
        keys = chunk_keys(spec, level, ranges, lo_dom)
        if keys is None:
            return None
        prefix = level.path.strip("/")
        return [f"{prefix}/{k}" if prefix else k for k in keys]

    def _slice_files(self, real: Scale, box: list[tuple[int, int]]) -> list[str] | None:
        """The files of a TIFF stack's slices (its z, source dimension 0) that ``box`` reads."""
        files = self.dataset.extras.get("_slice_files")
        if files is None or 0 not in self.xyz:
            return None
        axis = self.xyz.index(0)
        lo, hi = box[axis]
        return files[lo - real.voxel_offset[axis]:hi - real.voxel_offset[axis]]

    def open_sources(self) -> None:
        """Open every level now (blocking), so that :meth:`source_files` never waits on a read."""
        for level in range(len(self.dataset.levels)):
            self._source(level)

    def _source(self, level: int):
        return self._opened(level)[0]

    def _opened(self, level: int) -> tuple[Any, dict]:
        """The level's tensorstore and its spec as JSON (chunk layout, key encoding)."""
        with self._lock:
            found = self._sources.get(level)
        if found is None:
            store = self.dataset.open_level(level)
            # A file reader's store is virtual_chunked, whose spec has no JSON form.
            lv = self.dataset.levels[level]
            found = (store, lv.spec if lv.opener is not None else store.spec().to_json())
            with self._lock:
                found = self._sources.setdefault(level, found)
        return found

    def _view(self, scale: Scale):
        """The scale as a tensorstore with dimensions x, y, z, c and precomputed voxel coordinates."""
        index = self.scales.index(scale)
        with self._lock:
            cached = self._views.get(index)
        if cached is not None:
            return cached
        import tensorstore as ts

        if scale.virtual:  # the chain: the scale before this one, downsampled
            view = ts.downsample(self._view(self.scales[index - 1]), [*scale.step, 1], method=self._method)
        else:
            view = self._present(self._source(scale.level), scale)
        with self._lock:
            self._views[index] = view
        return view

    def _present(self, store, scale: Scale):
        import tensorstore as ts

        if store.rank > len(self.dataset.axes):
            # A precomputed source's store has a channel dimension that a one-channel dataset's
            # axes (x, y, z) leave out: take its one channel, so the dimensions match the axes.
            first = list(store.domain.inclusive_min)
            store = store[(...,) + tuple(first[len(self.dataset.axes):])]
        rank = store.rank
        origin = list(store.domain.inclusive_min)
        keep = [d for d in range(rank) if d not in self.dropped]
        view = store[tuple(origin[d] if d in self.dropped else slice(None) for d in range(rank))]
        order = [keep.index(d) for d in (*self.xyz, self.channel) if d is not None]
        view = view[ts.d[order].transpose[list(range(len(order)))]]
        # Add the axes the source lacks (a 2-D image's z, a single channel) at their positions.
        for position, dim in enumerate((*self.xyz, self.channel)):
            if dim is None:
                view = view[(slice(None),) * position + (ts.newaxis, ...)]
        view = view[ts.d[:].translate_to[[*scale.voxel_offset, 0]]]
        if str(view.dtype.numpy_dtype) != self.data_type:
            view = ts.cast(view, self.data_type)
        return view


def encode(region, data_type: str, encoding: str, box: list[tuple[int, int]]) -> bytes:
    """A chunk's bytes: ``region`` is ``[x, y, z, c]``; precomputed stores it x fastest, channel slowest."""
    import numpy as np

    region = np.asarray(region, dtype=data_type)
    if encoding == "raw":
        return region.astype(region.dtype.newbyteorder("<"), copy=False).tobytes(order="F")
    return _encode_with_tensorstore(region, data_type, encoding, box)


def decode(data: bytes, data_type: str, encoding: str, box: list[tuple[int, int]], channels: int):
    """The ``[x, y, z, c]`` array of a chunk :func:`encode` made."""
    import numpy as np

    shape = [hi - lo for lo, hi in box] + [channels]
    if encoding == "raw":
        return np.frombuffer(data, dtype=np.dtype(data_type).newbyteorder("<")).reshape(shape, order="F")
    store = _memory_volume(data_type, encoding, box, channels)
    store.kvstore[f"{store.spec().to_json()['scale_metadata']['key']}/{chunk_name(box)}"] = data
    return store.read().result()


def _encode_with_tensorstore(region, data_type: str, encoding: str, box: list[tuple[int, int]]) -> bytes:
    """Encode with tensorstore's own precomputed writer, into memory.

    The ``compressed-segmentation`` package crashed the process (segfault) on
    multi-channel arrays, and a hand-written encoder would be one more place to
    get the format wrong; tensorstore's writer is what its reader checks against.
    """
    store = _memory_volume(data_type, encoding, box, region.shape[3])
    store.write(region).result()
    kv = store.kvstore
    keys = [k for k in kv.list().result() if k != b"info"]
    return kv.read(keys[0]).result().value


def _memory_volume(data_type: str, encoding: str, box: list[tuple[int, int]], channels: int):
    """A precomputed volume of one chunk, ``box``, in memory: tensorstore's own codec."""
    import tensorstore as ts

    shape = [hi - lo for lo, hi in box]
    scale = {"resolution": [1, 1, 1], "encoding": encoding, "chunk_size": shape, "size": shape,
             "voxel_offset": [lo for lo, _ in box]}
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = SEGMENTATION_BLOCK
    return ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "memory"}, "scale_metadata": scale,
         "multiscale_metadata": {"type": "segmentation", "data_type": data_type, "num_channels": channels},
         "store_data_equal_to_fill_value": True},
        create=True, context=ts.Context(),
    ).result()


def chunk_keys(spec: dict, level, ranges: list[tuple[int, int]], origin: list[int]) -> list[str] | None:
    """The storage keys (below the level's folder) of the source chunks covering ``ranges``.

    Chunk key layouts as the formats define them (for sharded precomputed, the shard files that
    hold those chunks); None for layouts not known here (single-file formats), whose chunks are
    then not cached.
    """
    driver = spec.get("driver")
    meta = spec.get("metadata") or {}
    if driver == "zarr":
        grid, sep = meta.get("chunks"), meta.get("dimension_separator", ".")
        fmt = lambda idx: sep.join(map(str, idx)) if idx else "0"  # noqa: E731
    elif driver == "zarr3":
        grid = ((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        cke = meta.get("chunk_key_encoding") or {"name": "default"}
        sep = (cke.get("configuration") or {}).get("separator", "/" if cke.get("name") == "default" else ".")
        if cke.get("name") == "default":
            fmt = lambda idx: sep.join(["c", *map(str, idx)])  # noqa: E731
        else:
            fmt = lambda idx: sep.join(map(str, idx)) if idx else "0"  # noqa: E731
    elif driver == "n5":
        grid = meta.get("blockSize")
        fmt = lambda idx: "/".join(map(str, idx))  # noqa: E731
    elif driver == "neuroglancer_precomputed" and (spec.get("scale_metadata") or {}).get("sharding"):
        return _shard_files(spec["scale_metadata"], ranges, origin)
    elif driver == "neuroglancer_precomputed" and "sharded" not in (level.encoding or ""):
        grid = level.chunks[:3] + [10**18] * (len(ranges) - 3)  # the channel axis is never split
        off, end = origin[:3], [o + s for o, s in zip(origin[:3], level.shape[:3])]

        def fmt(idx):
            return "_".join(f"{o + i * c}-{min(o + (i + 1) * c, e)}" for o, i, c, e in zip(off, idx, grid, end))

        ranges = [(lo - o, hi - o) for (lo, hi), o in zip(ranges[:3], off)] + ranges[3:]
        origin = [0] * len(ranges)
    else:
        return None
    if not grid or len(grid) != len(ranges):
        return None
    spans = [range((lo - o) // c, (hi - o - 1) // c + 1) if hi > lo else range(0)
             for (lo, hi), o, c in zip(ranges, origin, grid)]
    if math.prod(len(s) for s in spans) > MAX_SOURCE_FILES:
        return None
    return [fmt(idx) for idx in itertools.product(*spans)]


def _shard_files(scale: dict, ranges: list[tuple[int, int]], origin: list[int]) -> list[str] | None:
    """The shard files of a sharded precomputed scale that hold the chunks covering ``ranges``
    (x, y, z and channel, in the store's coordinates from ``origin``): each chunk's compressed
    Morton code, hashed to its shard as ``sharded.md`` says."""
    import numpy as np

    from .sharding import ShardingSpec, compressed_morton_code

    chunk, size = scale["chunk_size"], scale["size"]
    grid = [-(-n // c) for n, c in zip(size, chunk)]
    spans = [range((lo - o) // c, (hi - o - 1) // c + 1) if hi > lo else range(0)
             for (lo, hi), o, c in zip(ranges[:3], origin[:3], chunk)]
    if math.prod(len(r) for r in spans) > MAX_SOURCE_FILES:
        return None
    cells = np.array(list(itertools.product(*spans)), dtype=np.uint64).reshape(-1, 3)
    spec = ShardingSpec.from_json(scale["sharding"])
    shards, _ = spec.locate(compressed_morton_code(cells, tuple(grid)))
    return [spec.shard_name(int(n)) for n in sorted(set(shards.tolist()))]


# -- building a presentation ------------------------------------------------------------------
def present(ds: Dataset) -> Presentation:
    """How ``ds`` looks as precomputed; TranslationError (one line) when it cannot."""
    if ds.format == "precomputed-annotations" or not ds.levels:
        raise TranslationError(f"{ds.location}: {ds.format} holds no volume to present as precomputed")
    shape = ds.levels[0].shape
    channel = None
    spatial, dropped = [], []
    for d, (axis, size) in enumerate(zip(ds.axes, shape)):
        if axis.type == "channel" and channel is None:
            channel = d
        elif axis.type in ("space", "other") and size > 1:
            spatial.append(d)
        elif size == 1:
            dropped.append(d)
        else:
            raise TranslationError(
                f"{ds.location}: axis {axis.name!r} ({axis.type}, size {size}) has no place in a precomputed volume"
            )
    if len(spatial) > 3:
        names = ", ".join(ds.axes[d].name for d in spatial)
        raise TranslationError(f"{ds.location}: {len(spatial)} spatial axes ({names}); precomputed has x, y and z")
    # Size-1 spatial axes fill x/y/z before being dropped: a 1-slice z stays z.
    for d in list(dropped):
        if len(spatial) < 3 and ds.axes[d].type in ("space", "other"):
            spatial.append(d)
            dropped.remove(d)
    spatial.sort()
    xyz = _order_xyz(ds, spatial)
    dtype = ds.dtype or ""
    if dtype not in DATA_TYPES:
        raise TranslationError(f"{ds.location}: data type {dtype} has no precomputed counterpart")
    data_type = DATA_TYPES[dtype]
    kind = "segmentation" if _is_segmentation(ds) else "image"
    encoding = "compressed_segmentation" if kind == "segmentation" and data_type in ("uint32", "uint64") else "raw"
    notes = []
    if dtype == "float64":
        notes.append("float64 is presented as float32")
    elif dtype == "int64":
        notes.append("int64 is presented as uint64, bit for bit")
    num_channels = shape[channel] if channel is not None else 1
    scales = _real_scales(ds, xyz)
    scales += _virtual_scales(scales[-1], len(ds.levels) - 1, len(scales))
    return Presentation(ds, xyz, channel, dropped, data_type, kind, encoding, num_channels, scales, notes)


def _is_segmentation(ds: Dataset) -> bool:
    # The same reading of the metadata ngstate's layer kinds use: a hint first, then 64-bit labels.
    if ds.kind_hint in ("segmentation", "image"):
        return ds.kind_hint == "segmentation"
    return ds.dtype in ("uint64", "int64")


def _order_xyz(ds: Dataset, spatial: list[int]) -> list[int | None]:
    names = [ds.axes[d].name.lower() for d in spatial]
    if sorted(names) == sorted("xyz"[: len(names)]):
        order = [spatial[names.index(n)] for n in "xyz"[: len(names)]]
    else:
        order = spatial[::-1]  # C-order arrays list the fastest axis (x) last
    return order + [None] * (3 - len(order))


def _nm(ds: Dataset, dim: int | None) -> float:
    """Level-0 voxel size in nm along a source dimension (unitless axes count 1 unit as 1 nm)."""
    if dim is None:
        return 1.0
    axis = ds.axes[dim]
    return axis.scale * 1e9 if axis.unit == "m" else axis.scale


def _real_scales(ds: Dataset, xyz: list[int | None]) -> list[Scale]:
    scales = []
    for i, level in enumerate(ds.levels):
        size = tuple(level.shape[d] if d is not None else 1 for d in xyz)
        factors = [level.factors[d] if d is not None else 1.0 for d in xyz]
        res = tuple(_clean(_nm(ds, d) * f) for d, f in zip(xyz, factors))
        offset = tuple(_whole(ds.offset[d] / f) if d is not None else 0 for d, f in zip(xyz, factors))
        src = [level.chunks[d] if d is not None and d < len(level.chunks) else 1 for d in xyz]
        usable = all(MIN_SOURCE_CHUNK <= c <= MAX_SOURCE_CHUNK or c >= n for c, n in zip(src, size)) and math.prod(
            min(c, n) for c, n in zip(src, size)
        ) <= MAX_SOURCE_VOXELS
        chunk = tuple(max(1, min(c if usable else CHUNK, n)) for c, n in zip(src, size))
        # Unaligned, a chunk can touch one source chunk more per axis than it spans.
        files = math.prod(min(-(-n // max(1, c)), -(-(k - 1) // max(1, c)) + 1) for k, c, n in zip(chunk, src, size))
        if files > MAX_FILES_PER_CHUNK:
            raise TranslationError(
                f"level {level.path or i} is stored in chunks of {level.chunks} voxels: one chunk of the view would "
                f"read {files} of them; rewrite it with larger chunks (ngserve convert)")
        scales.append(Scale(f"s{i}", size, offset, res, chunk, i, files_per_chunk=files))
    return scales


def _whole(voxels: float) -> int:
    """An offset as precomputed can say it: the nearest whole voxel (halves round up)."""
    return math.floor(voxels + 0.5)


def offset_remainder(ds: Dataset) -> list[float]:
    """What ``voxel_offset`` leaves out of the dataset's offset, in level-0 voxels along x, y, z
    (a state carries it in the layer's source transform); TranslationError as :func:`present`."""
    return [ds.offset[d] - _whole(ds.offset[d]) if d is not None else 0.0 for d in present(ds).xyz]


def _virtual_scales(base: Scale, level: int, first_index: int) -> list[Scale]:
    """Coarser scales below ``base`` until every axis fits in one chunk, each from the one before."""
    out: list[Scale] = []
    prev = base
    while len(out) < MAX_VIRTUAL:
        large = [a for a in range(3) if prev.size[a] > CHUNK]
        if not large:
            break
        finest = min(prev.resolution[a] for a in large)
        step = tuple(2 if a in large and prev.resolution[a] <= finest * 1.5 else 1 for a in range(3))
        # What ts.downsample gives: the blocks of the previous scale's grid that hold any data.
        lo = [o // s for o, s in zip(prev.voxel_offset, step)]
        hi = [-(-(o + n) // s) for o, n, s in zip(prev.voxel_offset, prev.size, step)]
        size = tuple(h - l for l, h in zip(lo, hi))
        factors = tuple(f * s for f, s in zip(prev.factors, step))
        res = tuple(_clean(r * f) for r, f in zip(base.resolution, factors))
        chunk = tuple(min(CHUNK, n) for n in size)
        below = math.prod(-(-min(c * f, n) // b) for c, f, n, b in zip(chunk, factors, base.size, base.chunk))
        if below * base.files_per_chunk > MAX_FILES_BELOW:
            break
        prev = Scale(f"s{first_index + len(out)}", size, tuple(lo), res, chunk, level, factors, step)
        out.append(prev)
    return out


def _region(finer: Scale, scale: Scale, box: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The voxels of ``finer`` that the ``box`` of the next coarser ``scale`` is the downsampling of."""
    return [(max(lo * s, o), min(hi * s, o + n))
            for (lo, hi), s, o, n in zip(box, scale.step, finer.voxel_offset, finer.size)]


def _clean(value: float) -> float | int:
    """Resolutions as people write them: 4 not 4.000000000000001, and ints where whole."""
    rounded = float(f"{value:.12g}")
    return int(rounded) if rounded.is_integer() else rounded

"""Storage backends: where a mount's bytes come from.

A backend answers four questions about a slash-separated relative path that
:mod:`server.paths` has already checked: what is there (``stat``), what is in
a folder (``list_dir``), the small text of a file (``read_small``, for dataset
detection), and the HTTP answer for a file (``serve_file``).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from volumes import format_from_names, group_metadata_file, is_viewable_zarr

from .lru import ByteBudgetLRU
from .paths import is_visible
from .responses import FileMeta, accepts_gzip, file_response


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int = 0


class Storage(ABC):
    """One mounted root."""

    cache_control: str | None = None  # the mount's Cache-Control for file answers (config ``cache_control``)

    @abstractmethod
    async def stat(self, path: str) -> Entry | None:
        """The entry at ``path`` ("" is the root), or None when absent."""

    @abstractmethod
    async def list_dir(self, path: str) -> list[Entry] | None:
        """Visible children of the folder at ``path``, sorted; None if not a folder."""

    @abstractmethod
    async def read_small(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The whole file at ``path`` if it exists and is at most ``limit`` bytes."""

    @abstractmethod
    async def serve_file(self, request: web.Request, path: str) -> web.StreamResponse:
        """The HTTP answer for GET/HEAD of the file at ``path`` (404 if absent)."""

    async def dataset_format(self, path: str) -> str | None:
        """The dataset format of the folder at ``path``, judged by its file names (see :meth:`format_of`)."""
        entries = await self.list_dir(path)
        return None if entries is None else await self.format_of(path, [e.name for e in entries])

    async def format_of(self, path: str, names: list[str]) -> str | None:
        """The format ``names`` (in the folder at ``path``) show.  A zarr folder counts only when its
        metadata, one small file, makes it an array of a type some view shows, or an OME image or
        labels group: a plain group or a string array would get an "open in viewer" link that
        cannot work."""
        fmt = format_from_names(names)
        meta = group_metadata_file(names)
        if meta is None:
            return fmt
        return fmt if is_viewable_zarr(await self.read_small(f"{path}/{meta}" if path else meta), meta) else None

    async def validators(self, paths: list[str]) -> list[str | None]:
        """For each file, a string that changes whenever its bytes do (``"absent"`` when there is
        no file), or None when this backend cannot tell: translated views cache only what
        they can revalidate this way."""
        return [None] * len(paths)

    def dataset_source(self, path: str) -> str | None:
        """What views open for the dataset at ``path`` when it is not read over loopback HTTP; None: over HTTP."""
        return None

    async def close(self) -> None:
        """Release pooled resources (connections, files)."""


MEMORY_SOURCE = "memory:"  # a mount source: the arrays this process holds (volumes.memory), e.g. a notebook's


class MemoryStorage(Storage):
    """The arrays :mod:`volumes.memory` holds, one folder-like entry per key.

    They have no files: only the views show them (``/-/precomputed/<mount>/<key>/``), which open
    ``memory://<key>`` instead of reading over loopback.
    """

    async def stat(self, path: str) -> Entry | None:
        from volumes.memory import registered

        if not path:
            return Entry("", True)
        return Entry(path, True) if path in registered() else None

    async def list_dir(self, path: str) -> list[Entry] | None:
        from volumes.memory import registered

        return [Entry(k, True) for k in registered()] if not path else None

    async def read_small(self, path: str, limit: int = 1 << 20) -> bytes | None:
        return None

    async def serve_file(self, request: web.Request, path: str) -> web.StreamResponse:
        raise web.HTTPNotFound(text="404 an array in memory has no files: read it through /-/precomputed/\n")

    async def validators(self, paths: list[str]) -> list[str | None]:
        """``"absent"`` once an array is released (views drop it at once), else one value for as long
        as it is held: its translated chunks are cached, and an array edited in place shows its edits
        only when shown again (a new key)."""
        from volumes.memory import registered

        held = set(registered())
        return ["held" if p in held else "absent" for p in paths]

    def dataset_source(self, path: str) -> str | None:
        return "memory://" + path


class LocalStorage(Storage):
    """A folder on this machine.

    Small files are answered from memory after one ``stat`` on the event loop,
    with no thread hop; larger files are read in the default executor and
    streamed.  Symlinks are followed only while they stay inside the root and
    their targets obey the dotfile rule.
    """

    SMALL_FILE = 1 << 20

    def __init__(self, root: str | os.PathLike, cache_bytes: int = 256 << 20, *, accel: str | None = None) -> None:
        self.root = Path(root).resolve(strict=True)
        self.accel = accel  # the X-Accel-Redirect prefix of this root, when nginx sends the bytes
        if not self.root.is_dir():
            raise NotADirectoryError(str(root))
        # Small files by path, with the (mtime, size, inode) they were read at: the
        # stat on every request is the invalidation.
        self._cache: ByteBudgetLRU[tuple[tuple, bytes]] = ByteBudgetLRU(cache_bytes, lambda item: len(item[1]))
        # Dataset format by folder, with the folder's mtime it was judged at.
        self._formats: ByteBudgetLRU[tuple[int, str | None]] = ByteBudgetLRU(16 << 20, lambda _: 256)
        self._prefix = str(self.root) + os.sep

    # -- path handling ---------------------------------------------------------
    def _full(self, path: str) -> str:
        # Plain concatenation (os.path.join cost ~1.5 us a request): ``path`` is made of
        # segments split_path checked, so none is empty, absolute or "..".
        return self._prefix + path.replace("/", os.sep) if path else self._prefix[:-1]

    def _inside(self, full: str) -> bool:
        """Whether ``full``, symlinks resolved, is the root or a visible path below it.

        Only paths through a symlink get here (see :meth:`_stat`), so this is where
        the dotfile rule meets symlink targets: a link to ``.secret`` or into
        ``.git/`` hides what it points at, as the name itself would.
        """
        real = os.path.realpath(full)
        if real == str(self.root):
            return True
        return real.startswith(self._prefix) and all(map(is_visible, real[len(self._prefix) :].split(os.sep)))

    def _stat(self, full: str) -> os.stat_result | None:
        # Hot path (every request).  The root is already resolved and the segments
        # below it come from split_path (no "..", ".", "/" or NUL), so when none of
        # them is a symlink the path cannot leave the root, and the last lstat is the
        # file's stat.  That is one lstat per segment below the root, where realpath
        # costs one per segment of the whole path plus a stat, in Python: it was 12%
        # of a worker's time under load.  Any symlink, or anything unusual, takes
        # the original realpath check.
        if full.startswith(self._prefix):
            st = None
            cur = self._prefix[:-1]
            try:
                for part in full[len(self._prefix) :].split(os.sep):
                    if part in ("", ".", ".."):
                        break
                    cur = cur + os.sep + part
                    st = os.lstat(cur)
                    if stat.S_ISLNK(st.st_mode):
                        break
                else:
                    return st
            except (OSError, ValueError):
                return None  # absent (or not a folder on the way): the slow path agrees
        if not self._inside(full):  # a symlink that leaves the root, or reaches a dotfile, is "not there"
            return None
        try:
            return os.stat(full)
        except (OSError, ValueError):
            return None

    # -- Storage ---------------------------------------------------------------
    async def stat(self, path: str) -> Entry | None:
        st = self._stat(self._full(path))
        if st is None:
            return None
        is_dir = stat.S_ISDIR(st.st_mode)  # st follows symlinks, like isdir()
        return Entry(path.rsplit("/", 1)[-1], is_dir, 0 if is_dir else st.st_size)

    async def list_dir(self, path: str) -> list[Entry] | None:
        # A folder of chunks can hold many thousands of entries: scan it off the loop.
        return await asyncio.get_running_loop().run_in_executor(None, self._scan, path)

    def _scan(self, path: str) -> list[Entry] | None:
        full = self._full(path)
        st = self._stat(full)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return None
        entries = []
        try:
            with os.scandir(full) as it:
                for d in it:
                    if not is_visible(d.name):
                        continue
                    try:
                        if d.is_symlink() and not self._inside(d.path):
                            continue
                        is_dir = d.is_dir()
                        size = 0 if is_dir else d.stat().st_size
                    except OSError:
                        continue
                    entries.append(Entry(d.name, is_dir, size))
        except OSError:
            return None
        entries.sort(key=lambda e: e.name)
        return entries

    async def dataset_format(self, path: str) -> str | None:
        # A folder's mtime changes exactly when a name in it is added, removed or renamed over;
        # zarr writers (tensorstore, zarr-python) replace metadata files that way, so a group's
        # .zattrs read by format_of is covered too, except when rewritten in place.
        st = self._stat(self._full(path))
        if st is None:
            return None
        hit = self._formats.get(path)
        if hit is not None and hit[0] == st.st_mtime_ns:
            return hit[1]
        fmt = await super().dataset_format(path)
        self._formats.put(path, (st.st_mtime_ns, fmt))
        return fmt

    async def read_small(self, path: str, limit: int = 1 << 20) -> bytes | None:
        found = self._open_file(path)
        if found is None:
            return None
        full, st, encoding = found
        if st.st_size > limit:
            return None
        data = self._cached_bytes(full, st)
        return gzip.decompress(data) if encoding else data

    async def serve_file(self, request: web.Request, path: str) -> web.StreamResponse:
        found = self._open_file(path)
        if found is None:
            raise web.HTTPNotFound()
        full, st, encoding = found
        name = path.rsplit("/", 1)[-1]
        if self.accel and request.method == "GET" and (encoding is None or accepts_gzip(request)):
            # nginx sends the bytes and evaluates Range, If-Match and If-Range itself, against
            # its own ETag: ours must be the same string, or every If-Match would fail there.
            meta = FileMeta(name, st.st_size, st.st_mtime, _nginx_etag(st), encoding)
            target = self.accel + quote(full[len(self._prefix):].replace(os.sep, "/"))
            return await file_response(request, meta, accel=target)
        meta = FileMeta(name=name, size=st.st_size, mtime=st.st_mtime, etag=_etag(st, encoding), encoding=encoding)
        if st.st_size <= self.SMALL_FILE:
            data = self._cached_bytes(full, st)
            if encoding and not accepts_gzip(request):
                # Rare: a client that cannot inflate. Send the plain bytes instead.
                data = gzip.decompress(data)
                meta = FileMeta(name, len(data), st.st_mtime, meta.etag[:-1] + '-plain"')
                answer = await file_response(request, meta, data=data)
                answer.headers["Vary"] = "Accept-Encoding"  # others get the .gz: caches must keep both
                return answer
            return await file_response(request, meta, data=data)

        loop = asyncio.get_running_loop()

        async def read(offset: int, length: int) -> bytes:
            return await loop.run_in_executor(None, _pread, full, offset, length)

        return await file_response(request, meta, read=read, sendfile=full)

    async def validators(self, paths: list[str]) -> list[str | None]:
        # A stat each (the same one serve_file makes): off the loop only when there are many.
        if len(paths) <= 64:
            return [self._validator(p) for p in paths]
        return await asyncio.get_running_loop().run_in_executor(None, lambda: [self._validator(p) for p in paths])

    def _validator(self, path: str) -> str:
        found = self._open_file(path)
        return "absent" if found is None else _etag(found[1], found[2])

    # -- helpers ---------------------------------------------------------------
    def _open_file(self, path: str) -> tuple[str, os.stat_result, str | None] | None:
        """The file to send for ``path``: itself, or its ``.gz`` sibling (gzip_static)."""
        full = self._full(path)
        st = self._stat(full)
        encoding = None
        if st is None:
            full += ".gz"
            st = self._stat(full)
            encoding = "gzip"
        if st is None or not stat.S_ISREG(st.st_mode):  # st follows symlinks, like isfile()
            return None
        return full, st, encoding

    def _cached_bytes(self, full: str, st: os.stat_result) -> bytes:
        version = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self._cache.get(full)
        if hit is not None and hit[0] == version:
            return hit[1]
        with open(full, "rb") as f:
            data = f.read()
        self._cache.put(full, (version, data))
        return data


def _etag(st: os.stat_result, encoding: str | None) -> str:
    # The inode too: a same-size rewrite within one mtime tick (coarse-mtime
    # filesystems, NFS) by an atomic writer (rename) still changes the validator.
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}{"-gz" if encoding else ""}"'


def _nginx_etag(st: os.stat_result) -> str:
    """The ETag nginx's static module gives this file: mtime in seconds and size, in hex."""
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def _pread(full: str, offset: int, length: int) -> bytes:
    with open(full, "rb") as f:
        return os.pread(f.fileno(), length, offset)

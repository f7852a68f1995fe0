"""TIFF: a folder (or glob) of 2-D slices, or one multi-page / OME / ImageJ TIFF file (tifffile).

* A stack of slices is ordered naturally (``z2.tif`` before ``z10.tif``); every
  slice must have the first one's shape and dtype.  One slice is one chunk.
* A single file is presented through tifffile's first series, its axes put in
  OME-Zarr's order (``t, c', z, y, x``).  A chunk is one page, or one tile of a
  tiled page, so a read decodes only the pages or tiles it covers.  OME physical
  sizes (with units) and channel names are kept; so are ImageJ's spacing and
  resolution.
"""

from __future__ import annotations

import fnmatch
import html.parser
import math
import os
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

from .errors import first_line
from .location import Location, SourceError
from .model import Axis, Dataset
from .rangefile import open_file
from .units import si_unit
from .virtual import file_dataset, quiet_logs, space_axis, virtual_store

_TIFF_NAME = re.compile(r".*\.tiff?$", re.IGNORECASE)
_CHECK_WORKERS = 8  # slices whose headers are read at once when a stack is opened


def natural_key(name: str) -> list:
    """Sort key putting ``z2.tif`` before ``z10.tif``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# -- one file ----------------------------------------------------------------------------

def _open_tiff(loc: Location):
    """``(tifffile.TiffFile, its RandomAccessFile)`` for the file at ``loc``; anything unreadable is
    one SourceError naming the file."""
    import tifffile

    fh = open_file(loc)
    try:
        with quiet_logs("tifffile"):
            tif = tifffile.TiffFile(fh, name=loc.name)
            tif.pages.first  # noqa: B018 -- parses the first IFD now, so a broken file fails here, by name
    except SourceError:
        fh.close()
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, …
        fh.close()
        reason = "no image found in it" if isinstance(exc, IndexError) else first_line(exc)
        raise SourceError(f"{loc}: not a readable TIFF ({reason})") from None
    return tif, fh


# tifffile's axis letters -> (our name, type); the order of this table is the order we present.
_AXIS_ORDER = {"T": ("t", "time"), "C": ("c'", "channel"), "S": ("c'", "channel"),
               "Z": ("z", "space"), "Y": ("y", "space"), "X": ("x", "space")}


def _our_axes(letters: str) -> list[tuple[str, str, str]]:
    """(letter, name, type) per series axis.  A generic sequence axis (I, Q) is z when there is
    no Z; C and S together keep S as a second channel axis; any other letter is an "other" axis."""
    out = []
    has_z = "Z" in letters
    channel_taken = False
    for letter in letters:
        if letter in ("I", "Q") and not has_z:
            name, kind = "z", "space"
            has_z = True
        elif letter in ("C", "S"):
            name, kind = ("c'" if not channel_taken else letter.lower() + "'"), "channel"
            channel_taken = True
        elif letter in _AXIS_ORDER:
            name, kind = _AXIS_ORDER[letter]
        else:
            name, kind = letter.lower(), "other"
        out.append((letter, name, kind))
    return out


def _presented_order(axes: list[tuple[str, str, str]]) -> list[int]:
    """Series axis positions in the order we present them: others, t, channels, z, y, x."""
    rank = {"other": 0, "time": 1, "channel": 2}
    spatial = {"z": 3, "y": 4, "x": 5}
    return sorted(range(len(axes)), key=lambda i: (spatial.get(axes[i][1], rank.get(axes[i][2], 0)), i))


def _ome_pixels(tif) -> tuple[dict[str, float], list[str]]:
    """Physical size per axis letter (metres, or seconds for T) and channel names of the first OME image."""
    sizes: dict[str, float] = {}
    names: list[str] = []
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return sizes, names
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return sizes, names
    for letter in "XYZ":
        value = pixels.get(f"PhysicalSize{letter}")
        if value:
            sizes[letter] = _metres(float(value), pixels.get(f"PhysicalSize{letter}Unit", "µm"))
    if pixels.get("TimeIncrement"):
        unit, factor = si_unit(pixels.get("TimeIncrementUnit", "s"))
        if unit == "s":
            sizes["T"] = float(pixels.get("TimeIncrement")) * factor
    names = [ch.get("Name") or f"channel {i}" for i, ch in
             enumerate(el for el in pixels if el.tag.endswith("Channel"))]
    return sizes, names


def _metres(value: float, unit: str) -> float:
    """A length in ``unit`` (OME/ImageJ spellings: µm, um, micron, nm, Å, mm…) in metres."""
    unit = {"Å": "angstrom", "\\u00B5m": "µm", "microns": "micron"}.get(unit.strip(), unit.strip())
    try:
        si, factor = si_unit(unit)
    except ValueError:
        raise SourceError(f"length unit {unit!r} is not one we know") from None
    if si != "m":
        raise SourceError(f"length unit {unit!r} is not a length")
    return value * factor


def _imagej_sizes(tif) -> dict[str, float]:
    """Voxel sizes an ImageJ TIFF states: x/y from the resolution tags, z from ``spacing``, in ``unit``."""
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit") or "")
    if not unit or unit.lower() in ("pixel", "pixels"):
        return {}
    sizes: dict[str, float] = {}
    page = tif.pages.first
    for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = page.tags.get(tag)
        if value is not None and value.value[0]:
            sizes[letter] = _metres(value.value[1] / value.value[0], unit)
    if meta.get("spacing"):
        sizes["Z"] = _metres(float(meta["spacing"]), unit)
    if meta.get("finterval"):
        sizes["T"] = float(meta["finterval"])
    return sizes


def read_tiff_file(loc: Location) -> Dataset:
    """The dataset of the first series of the TIFF file at ``loc``."""
    tif, _ = _open_tiff(loc)
    try:
        if not tif.series:
            raise SourceError(f"{loc}: a TIFF without images")
        series = tif.series[0]
        keyframe = series.keyframe
        letters, shape = series.axes, [int(s) for s in series.shape]
        page_letters = keyframe.axes
        if not letters.endswith(page_letters):
            raise SourceError(f"{loc}: TIFF series axes {letters} do not end with its pages' axes {page_letters}")
        outer_shape = shape[: len(letters) - len(page_letters)]
        if math.prod(outer_shape) != len(series.pages):
            raise SourceError(f"{loc}: TIFF series of shape {shape} has {len(series.pages)} pages")
        sizes = _ome_pixels(tif) if tif.is_ome else ({}, [])
        physical, channel_names = sizes
        if not physical and tif.is_imagej:
            physical = _imagej_sizes(tif)
        dtype = series.dtype
        compression = getattr(keyframe.compression, "name", str(keyframe.compression)).lower()
    finally:
        tif.close()
    named = _our_axes(letters)
    order = _presented_order(named)
    axes = []
    for i in order:
        letter, name, kind = named[i]
        if kind == "space":
            axes.append(space_axis(name, physical.get(letter)))
        elif kind == "time":
            axes.append(Axis(name, "s", physical["T"], "time") if "T" in physical else Axis(name, "", 1.0, "time"))
        else:
            axes.append(Axis(name, "", 1.0, kind))
    presented_shape = [shape[i] for i in order]
    reader = _PageReader(loc, len(outer_shape), order)
    ds = file_dataset(loc, "tiff", "a TIFF file", axes, presented_shape, dtype, reader.chunks(shape, keyframe),
                      reader.open, encoding=None if compression == "none" else compression)
    ds.extras["tiff_axes"] = letters
    if channel_names:
        ds.extras["channel_names"] = channel_names
    return ds


class _PageReader:
    """Reads the chunks of a TIFF series: one page, or one tile of a tiled page, per chunk."""

    def __init__(self, loc: Location, n_outer: int, order: list[int]) -> None:
        self.loc = loc
        self.n_outer = n_outer  # leading series axes that index pages; the rest lie within a page
        self.order = order  # presented axis i is series axis order[i]
        self.tiled = False

    def chunks(self, shape: list[int], keyframe) -> list[int]:
        """Per presented axis: 1 across pages; the tile (contiguous samples only) or whole page within."""
        series_chunks = [1] * self.n_outer + shape[self.n_outer:]
        page_letters = keyframe.axes
        if keyframe.is_tiled and keyframe.imagedepth == 1 and page_letters in ("YX", "YXS"):
            self.tiled = True
            self.tile = (int(keyframe.tilelength), int(keyframe.tilewidth))
            series_chunks[self.n_outer] = self.tile[0]
            series_chunks[self.n_outer + 1] = self.tile[1]
        return [series_chunks[i] for i in self.order]

    def open(self):
        import numpy as np

        tif, fh = _open_tiff(self.loc)  # the read function below keeps both open as long as the store lives
        series = tif.series[0]
        shape = list(series.shape)
        outer_shape = shape[: self.n_outer]
        lock = threading.Lock()  # tifffile loads pages (IFDs) lazily, through one file position
        inverse = np.argsort(self.order)

        def page_of(outer: tuple[int, ...]):
            index = int(np.ravel_multi_index(outer, outer_shape)) if outer else 0
            with lock:
                page = series.pages[index]
                if page is None:
                    raise SourceError(f"{self.loc}: TIFF page {index} of the series is missing")
                page.keyframe  # noqa: B018 -- resolves a TiffFrame's keyframe under the lock
            return page

        def read(index: tuple[slice, ...]):
            sel = [index[i] for i in inverse]  # back to series axis order
            outer = tuple(s.start for s in sel[: self.n_outer])
            page = page_of(outer)
            inner = tuple(sel[self.n_outer:])
            if self.tiled:
                data = self._tile(page, fh, inner)
            else:
                with lock:  # tifffile reads a page's segments through the shared file position
                    raw = page.asarray(maxworkers=1)
                data = raw.reshape(shape[self.n_outer:])[inner]
            data = data.reshape([1] * self.n_outer + list(data.shape))
            return np.transpose(data, self.order)

        return virtual_store([shape[i] for i in self.order], series.dtype, self.chunks(shape, series.keyframe), read)

    def _tile(self, page, fh, inner: tuple[slice, ...]):
        """The tile at ``inner`` (its y and x slices), decoded alone."""
        import numpy as np

        key = page.keyframe
        tl, tw = self.tile
        ty, tx = inner[0].start // tl, inner[1].start // tw
        across = -(-int(key.imagewidth) // tw)
        segment = ty * across + tx
        offset, count = page.dataoffsets[segment], page.databytecounts[segment]
        samples = int(key.samplesperpixel) if key.axes.endswith("S") else 1
        height, width = inner[0].stop - inner[0].start, inner[1].stop - inner[1].start
        if not count:  # an empty tile holds the fill value
            data = np.zeros((height, width, samples), key.dtype)
        else:
            raw = fh.read_at(offset, count)
            decoded, _, _ = key.decode(raw, segment, jpegtables=key.jpegtables)
            data = np.asarray(decoded).reshape(-1, tl, tw, samples)[0, :height, :width]
        return data if samples > 1 else data[..., 0]


# -- a stack of slices -------------------------------------------------------------------

class _Links(html.parser.HTMLParser):
    """The ``<a href>`` targets of an HTML folder listing (ngserve's, or any web server's)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def _http_folder_files(folder: Location) -> list[str]:
    """Names of the files directly in an http folder, from its HTML listing."""
    data = _get_listing(folder)
    parser = _Links()
    parser.feed(data.decode("utf-8", "replace"))
    names = []
    for href in parser.hrefs:
        href = href.split("?", 1)[0].split("#", 1)[0]
        if not href or href.endswith("/") or "/" in href.lstrip("./") or ":" in href:
            continue  # folders, and links out of this folder (absolute, ../, other sites)
        names.append(urllib.parse.unquote(href.removeprefix("./")))
    return names


def _get_listing(folder: Location) -> bytes:
    import urllib.error
    import urllib.request

    from .location import HTTP_TIMEOUT, SMALL_LIMIT

    url = folder.root + "/"
    req = urllib.request.Request(url + folder.query_suffix, headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.read(SMALL_LIMIT)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: cannot list the folder (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def is_glob(text: str) -> bool:
    return any(c in text.rsplit("/", 1)[-1] for c in "*?[")


def slice_locations(loc: Location) -> list[Location]:
    """The TIFF slices of a folder, or of a glob's last component (``scan/*.tif``), in natural order."""
    if is_glob(loc.root):
        folder_root, pattern = loc.root.rsplit("/", 1)
        folder = Location(folder_root + loc.query_suffix)
    else:
        folder, pattern = loc, None
    if folder.is_http:
        names = _http_folder_files(folder)
    else:
        try:
            names = [p.name for p in Path(folder.root).iterdir() if p.is_file()]
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc.strerror}") from None
    names = [n for n in names if not n.startswith(".")]
    names = fnmatch.filter(names, pattern) if pattern else [n for n in names if _TIFF_NAME.fullmatch(n)]
    if not names:
        what = f"no file matches {pattern}" if pattern else "no .tif or .tiff files"
        raise SourceError(f"{loc}: {what}")
    # An http Location holds its URL quoted; a local one, the plain path.
    return [folder.child(urllib.parse.quote(n) if folder.is_http else n) for n in sorted(names, key=natural_key)]


def _slice_header(loc: Location) -> tuple[tuple[int, ...], str]:
    tif, _ = _open_tiff(loc)
    with tif:
        page = tif.pages.first
        return tuple(int(s) for s in page.shape), str(page.dtype)


STACK_BAND_BYTES = 1 << 18  # a stack's chunk: a band of rows of one slice, about this size


def _band_rows(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per chunk of a stack: a power of two (so power-of-two tiles cover whole bands), ~256 KiB."""
    rows = max(1, STACK_BAND_BYTES // max(1, shape[1] * itemsize))
    return min(shape[0], 1 << (rows.bit_length() - 1))


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _plain_start(page) -> int | None:
    """Where the pixels of an uncompressed, contiguous, one-sample page start; None for others."""
    plain = page.compression == 1 and page.bitspersample == 8 * page.dtype.itemsize and page.fillorder == 1
    if plain and page.is_contiguous and not page.is_tiled and page.samplesperpixel == 1:
        return int(page.dataoffsets[0])
    return None


def _plain_rows(read_at, start: int, byteorder: str, dtype, width: int, y0: int, y1: int):
    import numpy as np

    row = width * dtype.itemsize
    raw = read_at(start + y0 * row, (y1 - y0) * row)
    return np.frombuffer(raw, dtype.newbyteorder(byteorder)).reshape(y1 - y0, width).astype(dtype, copy=False)


def _rows(page, fh, rows: slice, byteorder: str):
    """Rows ``rows`` of a 2-D page, reading only them: a byte range of an uncompressed contiguous
    page, or the strips that hold them; a tiled or otherwise packed page is read whole."""
    import numpy as np

    height, width = int(page.shape[0]), int(page.shape[1])
    y0, y1 = rows.start or 0, height if rows.stop is None else rows.stop
    start = _plain_start(page)
    if start is not None:
        return _plain_rows(fh.read_at, start, byteorder, page.dtype, width, y0, y1)
    if page.is_tiled or page.samplesperpixel != 1 or len(page.dataoffsets) < 2:
        return page.asarray(maxworkers=1)[y0:y1]
    per = int(page.rowsperstrip)
    parts = []
    for strip in range(y0 // per, (y1 - 1) // per + 1):
        first = strip * per
        count = page.databytecounts[strip]
        if count:
            decoded, _, _ = page.decode(fh.read_at(page.dataoffsets[strip], count), strip, jpegtables=page.jpegtables)
            block = np.asarray(decoded).reshape(-1, width)[:min(per, height - first)]
        else:  # an empty strip holds the fill value
            block = np.zeros((min(per, height - first), width), page.dtype)
        parts.append(block[max(0, y0 - first):y1 - first])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def read_tiff_stack(loc: Location, slices: list[Location] | None = None) -> Dataset:
    """The dataset of a stack of 2-D TIFF slices: a folder of them, or a glob."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    slices = slices if slices is not None else slice_locations(loc)
    with ThreadPoolExecutor(_CHECK_WORKERS) as pool:  # over HTTP each header is a round trip
        headers = list(pool.map(_slice_header, slices))
    shape, dtype = headers[0]
    if len(shape) != 2:
        raise SourceError(f"{slices[0]}: slice of shape {shape}; a stack needs 2-D single-channel slices")
    for where, (s, d) in zip(slices, headers):
        if (s, d) != (shape, dtype):
            raise SourceError(
                f"{where}: slice is {'x'.join(map(str, s))} {d}, unlike the first slice {slices[0].name} "
                f"({'x'.join(map(str, shape))} {dtype}); every slice of a stack must match"
            )

    chunks = [1, _band_rows(shape, np.dtype(dtype).itemsize), shape[1]]

    def opener():
        # Local uncompressed slices: where their pixels start, so the other bands of a slice are one
        # pread, not a TIFF parse each (valid while the file's mtime and size are unchanged).
        plain: dict[int, tuple] = {}

        def read(index: tuple[slice, ...]):
            z, rows = index[0].start, index[1]
            where = slices[z]
            known = plain.get(z)
            stamp = None if where.is_http else _stamp(where.root)  # before the parse: a later change shows
            if known is not None:
                if stamp == known[0]:
                    fd = os.open(where.root, os.O_RDONLY)
                    try:
                        data = _plain_rows(lambda at, n: os.pread(fd, n, at), known[1], known[2], np.dtype(dtype),
                                           shape[1], rows.start or 0, shape[0] if rows.stop is None else rows.stop)
                    finally:
                        os.close(fd)
                    return data[:, index[2]]
            tif, fh = _open_tiff(where)
            with tif:
                page = tif.pages.first
                if tuple(page.shape) != shape or str(page.dtype) != dtype:  # the file changed since it was opened
                    raise SourceError(f"{where}: slice is now {page.shape} {page.dtype}, was {shape} {dtype}")
                start = _plain_start(page)
                if start is not None and stamp is not None:
                    plain[z] = (stamp, start, tif.byteorder)
                data = _rows(page, fh, rows, tif.byteorder)
            return data[:, index[2]]

        return virtual_store([len(slices), *shape], np.dtype(dtype), chunks, read)

    axes = [space_axis("z", None), space_axis("y", None), space_axis("x", None)]
    ds = file_dataset(loc, "tiff", "a TIFF stack", axes, [len(slices), *shape], dtype, chunks, opener)
    ds.extras["slices"] = len(slices)
    ds.extras["first_slice"] = slices[0].name
    ds.extras["last_slice"] = slices[-1].name
    if not is_glob(loc.root):  # each slice's file below the folder, in z order (a server keys its cache by them)
        ds.extras["_slice_files"] = [urllib.parse.unquote(s.name) if s.is_http else s.name for s in slices]
    return ds

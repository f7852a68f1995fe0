"""``ngserve convert INPUT... OUTPUT``: volumes to a multiscale OME-Zarr (see :mod:`volumes.conversion`)."""

from __future__ import annotations

import argparse
import math
import re
import sys

from . import float_list

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def memory_size(text: str) -> int:
    """An argparse type: ``2GiB``, ``512MiB``, ``1.5G`` or a number of bytes."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 2GiB or 512MiB, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _label(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if not sep or not name or not source or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAME=INPUT, got {text!r}")
    return name, source


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI, got {text!r}") from None
    return lo, hi


_ADD_LEVELS_OPTIONS = {"help", "add_levels", "from_level", "method", "max_memory", "workers", "overwrite", "resume"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert TIFF stacks, MRC, HDF5, NIfTI or any readable volume to multiscale OME-Zarr")
    p.add_argument("paths", nargs="+", metavar="INPUT... OUTPUT",
                   help="inputs (several become channels; HDF5 as file.h5:/path) and the output folder")
    p.add_argument("--format", default="ome-zarr", choices=["ome-zarr", "ome-zarr-0.4", "ome-zarr-0.5", "precomputed"],
                   help="ome-zarr (0.4 on zarr v2, the default), ome-zarr-0.5 (zarr v3) or precomputed")
    p.add_argument("--chunk", type=int_list, default=[128], help="chunk size, N or Z,Y,X (default: 128)")
    p.add_argument("--shard", type=int_list, help="shard size, N or Z,Y,X (ome-zarr-0.5); with precomputed: shard every scale")
    p.add_argument("--levels", type=int, help="resolution levels (default: until the coarsest fits one chunk)")
    p.add_argument("--method", choices=["mean", "mode", "median", "min", "max", "stride", "gaussian"],
                   help="downsampling (default: mean for images, mode for labels; gaussian: sigma 2/3 then every 2nd)")
    p.add_argument("--voxel-size", type=float_list, help="level-0 voxel size, N or Z,Y,X, in --units (default: from the input)")
    p.add_argument("--units", help="OME unit name of the space axes, e.g. micrometer or nanometer")
    p.add_argument("--axes", metavar="LETTERS",
                   help="the inputs' dimensions in storage order, from tczyx (e.g. xyz, czyx), when the reader cannot tell")
    p.add_argument("--translation", type=float_list, help="centre of voxel 0, Z,Y,X in --units (default: from the input)")
    p.add_argument("--encoding", default="raw", choices=["raw", "jpeg"],
                   help="precomputed image chunks: raw, or jpeg for uint8 images (lossy, --jpeg-quality)")
    p.add_argument("--jpeg-quality", type=int, metavar="Q", help="with --encoding jpeg: quality 1-100 (default: 90)")
    p.add_argument("--compression", default="blosc-zstd", choices=["blosc-zstd", "blosc-lz4", "gzip", "none"])
    p.add_argument("--dtype", help="output data type, e.g. uint8 (narrowing needs --rescale)")
    p.add_argument("--rescale", type=_window, metavar="LO:HI", help="with --dtype: map input LO..HI to the full output range")
    p.add_argument("--channel-names", type=lambda t: [v.strip() for v in t.split(",")], help="comma-separated channel names")
    p.add_argument("--labels", type=_label, action="append", default=[], metavar="NAME=INPUT",
                   help="add INPUT as the label image labels/NAME (repeatable)")
    p.add_argument("--ranges", metavar="x0:x1,y0:y1,z0:z1",
                   help="convert only this sub-volume (voxels, level 0), e.g. to try options first; blank = whole axis")
    p.add_argument("--max-memory", type=memory_size, default=2 << 30, help="working-memory bound (default: 2GiB)")
    p.add_argument("--workers", type=int, help="threads for reading, compressing and writing (default: all cores)")
    p.add_argument("--dask", metavar="tcp://HOST:PORT|local",
                   help="run the tasks on a dask.distributed scheduler, or on a LocalCluster of --workers processes")
    p.add_argument("--add-levels", type=int, metavar="N",
                   help="add N coarser levels to the existing OME-Zarr image given as the only path, in place")
    p.add_argument("--from-level", type=int, metavar="K",
                   help="with --add-levels: build from level K (replacing the levels after it), not the coarsest")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUTPUT (with --add-levels: rebuild levels that exist)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same options")
    # What --add-levels cannot use, so that giving it is an error rather than silently ignored.
    p.set_defaults(run=run, not_for_add_levels=[(a.option_strings[0], a.dest, a.default) for a in p._actions
                                                if a.option_strings and a.dest not in _ADD_LEVELS_OPTIONS])


def run(args: argparse.Namespace) -> int:
    from volumes import SourceError, convert, first_line
    from volumes.convert_sources import ConvertError

    from . import UsageError

    if args.add_levels is not None:
        return _add_levels(args)
    if len(args.paths) < 2:
        raise UsageError("give at least one INPUT and the OUTPUT folder")
    *inputs, output = args.paths
    bar = progress_bar()
    try:
        summary = convert(
            inputs, output, labels=dict(args.labels), format=args.format, chunk=args.chunk, shard=args.shard,
            levels=args.levels, method=args.method, voxel_size=args.voxel_size, units=args.units,
            translation=args.translation, overwrite=args.overwrite, compression=args.compression, dtype=args.dtype,
            rescale=args.rescale, channel_names=args.channel_names, ranges=args.ranges, max_memory=args.max_memory, resume=args.resume,
            workers=args.workers, progress=bar, dask=args.dask, axes=args.axes, encoding=args.encoding,
            jpeg_quality=args.jpeg_quality,
        )
    except (SourceError, ConvertError) as exc:
        raise UsageError(first_line(exc)) from None
    except ValueError as exc:  # tensorstore reports an unreadable array or a failed write as ValueError
        raise UsageError(f"{output}: {first_line(exc)}") from None
    finally:
        if bar:
            bar.close()
    shapes = " ".join("x".join(str(d) for d in shape[1:]) for shape in summary["shapes"])  # z x y x x per level
    seconds = summary["seconds"]
    voxels = math.prod(summary["shapes"][0])
    print(f"{summary['output']}: {summary['levels']} levels ({shapes}), {summary['bytes'] / 1e6:.1f} MB "
          f"in {seconds:.1f} s ({voxels / max(seconds, 1e-9) / 1e6:.1f} Mvoxel/s)"
          + (f", {summary['tasks']} tasks on dask {summary['dask']}" if summary["dask"] else "")
          + (f", resumed after {summary['resumed_tasks']} finished tasks" if summary["resumed_tasks"] else ""))
    return 0


def _add_levels(args: argparse.Namespace) -> int:
    from volumes import SourceError, convert, first_line
    from volumes.convert_sources import ConvertError

    from . import UsageError

    if len(args.paths) != 1:
        raise UsageError("--add-levels extends one OME-Zarr in place: give only its path")
    given = [flag for flag, dest, default in args.not_for_add_levels if getattr(args, dest) != default]
    if given:
        raise UsageError(f"--add-levels keeps the image's own format, chunks and metadata: drop {', '.join(given)}")
    bar = progress_bar()
    try:
        summary = convert(args.paths[0], add_levels=args.add_levels, from_level=args.from_level, method=args.method,
                          max_memory=args.max_memory, workers=args.workers, overwrite=args.overwrite,
                          resume=args.resume, progress=bar)
    except (SourceError, ConvertError) as exc:
        raise UsageError(first_line(exc)) from None
    except ValueError as exc:
        raise UsageError(f"{args.paths[0]}: {first_line(exc)}") from None
    finally:
        if bar:
            bar.close()
    shapes = " ".join("x".join(str(d) for d in shape) for shape in summary["shapes"])
    print(f"{summary['output']}: added levels {', '.join(summary['added'])} ({shapes}); {summary['levels']} levels "
          f"in all, in {summary['seconds']:.1f} s"
          + (f", resumed after {summary['resumed_tasks']} finished tasks" if summary["resumed_tasks"] else ""))
    return 0


class _Bar:
    """A tqdm bar counting ``unit`` (level-0 voxels, segments, ...) with rate and ETA, on a terminal only."""

    def __init__(self, unit: str) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm(unit=unit, unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.tqdm.total = total
        self.tqdm.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.tqdm.close()


def progress_bar(unit: str = "vox") -> _Bar | None:
    """A ``progress(done, total)`` callable drawing a bar on a terminal; None elsewhere."""
    return _Bar(unit) if sys.stderr.isatty() else None

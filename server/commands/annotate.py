"""``ngserve annotate``: a table of points (or lines, boxes, ellipsoids, polylines) → precomputed annotations."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import float_list

TYPES = ("point", "line", "axis_aligned_bounding_box", "ellipsoid", "polyline")


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "annotate",
        help="write a CSV/TSV/Parquet/JSON/NDJSON table as Neuroglancer precomputed annotations",
        description="Write a table as a sharded, multi-level Neuroglancer precomputed annotation source.",
    )
    p.add_argument("input", metavar="INPUT", help="table: .csv, .tsv, .parquet, .json or .ndjson")
    p.add_argument("output", metavar="OUTPUT", help="folder to create")
    p.add_argument("--type", default="point", choices=TYPES, help="annotation type (default: point)")
    p.add_argument(
        "--columns",
        type=_names,
        help="geometry columns: x,y,z for points and polyline vertices (default); both points for lines and "
        "boxes (default x1,y1,z1,x2,y2,z2); centre then radii for ellipsoids (default x,y,z,rx,ry,rz)",
    )
    p.add_argument("--dimensions", type=_names, help="dimension names (default: the point columns, or x,y,z)")
    p.add_argument("--scale", type=float_list, help="voxel size per dimension, e.g. 8,8,40 (default 1)")
    p.add_argument("--units", default="nm", help="unit of the scale: nm, um, m, s, ... (default nm)")
    p.add_argument("--physical", action="store_true", help="coordinates are in --units, not voxels: divide by --scale")
    p.add_argument("--id-column", metavar="C", help="unique uint64 ids (default: row numbers); polylines: vertex grouping")
    p.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="C[:TYPE[:LABELS]]",
        help="a property column; TYPE is inferred unless given (uint8..int32, float32, rgb, rgba); "
        "LABELS (a,b,c or 1=a,2=b) make an enum. Repeatable",
    )
    p.add_argument("--relationship", action="append", default=[], metavar="C", help="segment id(s) per row. Repeatable")
    p.add_argument("--limit", type=positive_int, default=None, help="most annotations per spatial cell (default 10000)")
    shard = p.add_mutually_exclusive_group()
    shard.add_argument("--sharded", dest="sharded", action="store_true", default=None, help="sharded output")
    shard.add_argument("--unsharded", dest="sharded", action="store_false", help="one file per id and cell")
    p.add_argument("--compression", default="auto", choices=("auto", "gzip", "raw"), help="shard data encoding")
    p.add_argument("--seed", type=int, help="random seed for the spatial sampling (default: fresh)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import annotations

    from . import UsageError

    if args.scale and not all(0 < v < float("inf") for v in args.scale):
        raise UsageError(f"--scale {','.join(f'{v:g}' for v in args.scale)}: each voxel size must be a positive number")
    if Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"{args.output} exists; pass --overwrite to replace it")
    stats: dict = {}
    try:
        out = annotations.write_annotations(
            args.input,
            args.output,
            type=args.type,
            columns=args.columns,
            dimensions=args.dimensions,
            scale=args.scale,
            units=args.units,
            physical=args.physical,
            id_column=args.id_column,
            properties=args.property,
            relationships=args.relationship,
            limit=annotations.DEFAULT_LIMIT if args.limit is None else args.limit,
            sharded=args.sharded,
            compression=args.compression,
            overwrite=args.overwrite,
            seed=args.seed,
            stats=stats,
        )
    except annotations.AnnotationInputError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # the input is read under AnnotationInputError: this is the output
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    levels = stats["levels"]
    print(f"ngserve annotate: wrote {out}: {stats['annotations']:,} annotations, "
          f"{levels} level{'s' * (levels != 1)}, {_bytes(size)}")
    return 0


def _bytes(n: int) -> str:
    """``1.2 MB`` for people; exact below 1 kB."""
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return f"{n / step:.1f} {unit} ({n:,} bytes)"
    return f"{n} bytes"

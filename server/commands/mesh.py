"""``ngserve mesh LABELS [OUTPUT]``: sharded multi-resolution meshes of a label volume (see :mod:`meshes.batch`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="write sharded multi-resolution meshes of a label volume for Neuroglancer")
    p.add_argument("labels", metavar="LABELS", help="a label volume in any format ngserve reads")
    p.add_argument("output", metavar="OUTPUT", nargs="?",
                   help="output folder (default: LABELS/mesh for precomputed labels, named in their info; "
                        "else LABELS.mesh beside them, which ngserve's links attach)")
    p.add_argument("--segments", metavar="ID,ID,...", help="only these segment ids (default: every segment)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--dask", metavar="tcp://HOST:PORT|local",
                   help="run the tasks on a dask.distributed scheduler (a shared file system), or a LocalCluster "
                        "of --workers processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same options")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from meshes.batch import build_meshes
    from meshes.prepare import PrepareError, open_labels, parse_segments, prepare_output

    from . import UsageError
    from .convert import progress_bar

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give 1 or more")
    bar = progress_bar("task")
    try:
        segments = parse_segments(args.segments)
        ds, pyramid = open_labels(args.labels)
        output = prepare_output(ds, args.output, "mesh", overwrite=args.overwrite, resume=args.resume)
        summary = build_meshes(ds, pyramid, output, segments=segments, workers=args.workers, dask=args.dask,
                               resume=args.resume, progress=bar)
    except PrepareError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar:
            bar.close()
    print(f"{summary['output']}: {summary['segments']} segments, {summary['lods']} levels of detail, "
          f"{summary['shards']} shards, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s"
          + (" (named in the labels' info)" if summary["attached"] else "")
          + (f", {summary['nodes']} node tasks on dask {summary['dask']}" if summary["dask"] else "")
          + (f", resumed after {summary['resumed_nodes']} finished nodes" if summary["resumed_nodes"] else ""))
    return 0

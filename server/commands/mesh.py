"""``ngserve mesh LABELS [OUTPUT]``: sharded multi-resolution meshes of a label volume (see :mod:`meshes.batch`)."""

from __future__ import annotations

import argparse

from ._labels_job import add_label_arguments, run_labels_job


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="write sharded multi-resolution meshes of a label volume for Neuroglancer")
    add_label_arguments(p, "mesh")
    p.add_argument("--dask", metavar="tcp://HOST:PORT|local",
                   help="run the tasks on a dask.distributed scheduler (a shared file system), or a LocalCluster "
                        "of --workers processes")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same options")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from meshes.batch import build_meshes

    def job(ds, pyramid, output, **kw):
        return build_meshes(ds, pyramid, output, workers=args.workers, dask=args.dask, resume=args.resume, **kw)

    summary = run_labels_job(args, "mesh", "task", job, resume=args.resume)
    print(f"{summary['output']}: {summary['segments']} segments, {summary['lods']} levels of detail, "
          f"{summary['shards']} shards, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s"
          + (" (named in the labels' info)" if summary["attached"] else "")
          + (f", {summary['nodes']} node tasks on dask {summary['dask']}" if summary["dask"] else "")
          + (f", resumed after {summary['resumed_nodes']} finished nodes" if summary["resumed_nodes"] else ""))
    return 0

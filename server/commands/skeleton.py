"""``ngserve skeleton LABELS [OUTPUT]``: precomputed skeletons of a label volume (see :mod:`meshes.skeletons`)."""

from __future__ import annotations

import argparse

from .convert import memory_size
from ._labels_job import add_label_arguments, run_labels_job


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("skeleton", help="write precomputed skeletons (kimimaro) of a label volume for Neuroglancer")
    add_label_arguments(p, "skeletons")
    p.add_argument("--level", type=int, help="pyramid level to skeletonize (default: the finest that fits --max-memory)")
    p.add_argument("--max-memory", type=memory_size, default=2 << 30, help="working-memory bound (default: 2GiB)")
    p.add_argument("--dust", type=int, default=1000, help="skip segments of fewer voxels (default: 1000)")
    p.add_argument("--scale", type=float, default=1.5, help="TEASAR invalidation scale (default: 1.5)")
    p.add_argument("--const", type=float, default=10.0, help="TEASAR invalidation constant, in voxels (default: 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from meshes.skeletons import skeletonize

    def job(ds, pyramid, output, **kw):
        return skeletonize(ds, pyramid, output, level=args.level, max_memory=args.max_memory, dust=args.dust,
                           scale=args.scale, const_voxels=args.const, workers=args.workers, **kw)

    summary = run_labels_job(args, "skeletons", "segment", job)
    print(f"{summary['output']}: {summary['skeletons']} skeletons from level {summary['level']} "
          f"in {summary['seconds']:.1f} s" + (" (named in the labels' info)" if summary["attached"] else ""))
    return 0

"""``ngserve skeleton LABELS [OUTPUT]``: precomputed skeletons of a label volume (see :mod:`meshes.skeletons`)."""

from __future__ import annotations

import argparse

from .convert import memory_size, progress_bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("skeleton", help="write precomputed skeletons (kimimaro) of a label volume for Neuroglancer")
    p.add_argument("labels", metavar="LABELS", help="a label volume in any format ngserve reads")
    p.add_argument("output", metavar="OUTPUT", nargs="?",
                   help="output folder (default: LABELS/skeletons for precomputed labels, named in their info; "
                        "else LABELS.skeletons beside them, which ngserve's links attach)")
    p.add_argument("--segments", metavar="ID,ID,...", help="only these segment ids (default: every segment)")
    p.add_argument("--level", type=int, help="pyramid level to skeletonize (default: the finest that fits --max-memory)")
    p.add_argument("--max-memory", type=memory_size, default=2 << 30, help="working-memory bound (default: 2GiB)")
    p.add_argument("--dust", type=int, default=1000, help="skip segments of fewer voxels (default: 1000)")
    p.add_argument("--scale", type=float, default=1.5, help="TEASAR invalidation scale (default: 1.5)")
    p.add_argument("--const", type=float, default=10.0, help="TEASAR invalidation constant, in voxels (default: 10)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from meshes.prepare import PrepareError, open_labels, parse_segments, prepare_output
    from meshes.skeletons import skeletonize

    from . import UsageError

    bar = progress_bar("segment")
    try:
        segments = parse_segments(args.segments)
        ds, pyramid = open_labels(args.labels)
        output = prepare_output(ds, args.output, "skeletons", overwrite=args.overwrite, resume=False)
        summary = skeletonize(ds, pyramid, output, segments=segments, level=args.level, max_memory=args.max_memory,
                              dust=args.dust, scale=args.scale, const_voxels=args.const, workers=args.workers,
                              progress=bar)
    except PrepareError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar:
            bar.close()
    print(f"{summary['output']}: {summary['skeletons']} skeletons from level {summary['level']} "
          f"in {summary['seconds']:.1f} s" + (" (named in the labels' info)" if summary["attached"] else ""))
    return 0

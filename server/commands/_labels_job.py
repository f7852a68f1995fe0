"""What ``ngserve mesh`` and ``ngserve skeleton`` share: their arguments for the labels, the
output and the segments, and running a job over them with a progress bar and one-line errors."""

from __future__ import annotations

import argparse
from typing import Callable

from .annotate import positive_int


def add_label_arguments(p: argparse.ArgumentParser, folder: str) -> None:
    """LABELS, OUTPUT (default: ``LABELS/<folder>`` or ``LABELS.<folder>``), --segments, --workers, --overwrite."""
    p.add_argument("labels", metavar="LABELS", help="a label volume in any format ngserve reads")
    p.add_argument("output", metavar="OUTPUT", nargs="?",
                   help=f"output folder (default: LABELS/{folder} for precomputed labels, named in their info; "
                        f"else LABELS.{folder} beside them, which ngserve's links attach)")
    p.add_argument("--segments", metavar="ID,ID,...", help="only these segment ids (default: every segment)")
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")


def run_labels_job(args: argparse.Namespace, folder: str, unit: str, job: Callable, resume: bool = False) -> dict:
    """``job(ds, pyramid, output, segments=..., progress=...)``'s summary, for the labels and output in
    ``args``; a problem with them is one line (UsageError)."""
    from meshes.prepare import PrepareError, open_labels, parse_segments, prepare_output

    from . import UsageError
    from .convert import progress_bar

    bar = progress_bar(unit)
    try:
        segments = parse_segments(args.segments)
        ds, pyramid = open_labels(args.labels)
        output = prepare_output(ds, args.output, folder, overwrite=args.overwrite, resume=resume)
        return job(ds, pyramid, output, segments=segments, progress=bar)
    except PrepareError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar:
            bar.close()

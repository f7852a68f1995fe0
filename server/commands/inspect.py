"""``ngserve inspect SOURCE``: what a dataset is, as JSON."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a dataset's format, levels, layer kind and contrast as JSON")
    p.add_argument("source", help="a local path or http(s) URL of a dataset")
    p.add_argument("--no-stats", action="store_true", help="skip the contrast statistics (reads no array data)")
    p.add_argument("--verbose", action="store_true",
                   help="on an error, also print the full messages behind it (tensorstore's specs included)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ngstate import choose_view, infer_kind, viewer_problem
    from volumes import SourceError, contrast_range, detail, first_line, open_dataset

    from . import UsageError

    def fail(exc: ValueError, line: str) -> UsageError:
        if args.verbose:
            print(detail(exc), file=sys.stderr)
        return UsageError(line)

    try:
        ds = open_dataset(args.source)
    except SourceError as exc:
        raise fail(exc, first_line(exc)) from None
    except ValueError as exc:  # metadata that parses but makes no sense, e.g. an unknown unit
        raise fail(exc, f"{args.source}: {first_line(exc)}") from None
    kind, reason = infer_kind(ds)
    out = ds.to_json()
    out["layer_kind"] = kind
    out["layer_kind_reason"] = reason
    problem = viewer_problem(ds)
    if problem:  # reported, not an error: the dataset is fine, the bundled viewer is not
        out["viewer_problem"] = problem
    # The view ngserve shows it through when it serves it (a source elsewhere: native only).
    out["view"], out["view_reason"] = choose_view(ds)
    # Any dtype a view shows: a translated view shows it with this range (none for strings).
    if kind == "image" and not args.no_stats and out["view"] is not None:
        try:
            out["contrast"] = list(ds.windows[0]) if ds.windows else contrast_range(ds)
        except ValueError as exc:  # tensorstore reports unreadable arrays as ValueError
            raise fail(exc, f"{args.source}: cannot read array data: {first_line(exc)}") from None
        out["contrast_from"] = "omero window" if ds.windows else "0.5-99.5 percentile"
    print(json.dumps(out, indent=2))
    return 0

"""``ngserve inspect SOURCE``: what a dataset is, as JSON (or a table for people with ``--summary``)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a dataset's format, levels, layer kind and contrast as JSON")
    p.add_argument("source", help="a local path or http(s) URL of a dataset")
    p.add_argument("--no-stats", action="store_true", help="skip the contrast statistics (reads no array data)")
    p.add_argument("--summary", action="store_true", help="a table for people instead of JSON")
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
    print(summary(out) if args.summary else json.dumps(out, indent=2))
    return 0


_PREFIXES = ((1e-3, "m", 1e3, "mm"), (1e-6, "m", 1e6, "µm"), (1e-9, "m", 1e9, "nm"), (1e-3, "s", 1e3, "ms"))


def _length(value: float, unit: str, like: float | None = None) -> str:
    """``0.2 µm`` rather than ``2e-07 m``; ``like`` picks the prefix (so a row shares one unit)."""
    ref = abs(like if like is not None else value)
    for threshold, base, factor, name in _PREFIXES:
        if unit == base and ref < threshold * 1000 and ref >= threshold:
            return f"{value * factor:g} {name}"
    return f"{value:g} {unit}".rstrip()


def _sizes(values: list[float], units: list[str]) -> str:
    if len(set(units)) == 1:  # one unit for the row: "0.5 x 0.2 x 0.2 µm"
        unit = _length(min(values), units[0]).split(" ", 1)[-1] if units[0] else ""
        parts = [_length(v, units[0], min(values)).split(" ", 1)[0] if units[0] else f"{v:g}" for v in values]
        return " x ".join(parts) + (f" {unit}" if unit else "")
    return " x ".join(_length(v, u) for v, u in zip(values, units))


def summary(info: dict) -> str:
    """The JSON of ``inspect`` as a short table: what it is, how it will show, and its levels."""
    axes = info["axes"]
    rows = [("source", info["source"]),
            ("format", " ".join(str(v) for v in (info["format"], info.get("version")) if v)),
            ("layer", f"{info['layer_kind']} ({info['layer_kind_reason']})"),
            ("axes", ", ".join(f"{a['name']} {_length(a['scale'], a['unit'])}" for a in axes)),
            ("offset", ", ".join(f"{v:g}" for v in info["offset"]) + " voxels")]
    if "contrast" in info:
        lo, hi = info["contrast"]
        rows.append(("contrast", f"{lo:g} to {hi:g} ({info['contrast_from']})"))
    if info.get("labels"):
        rows.append(("labels", ", ".join(info["labels"])))
    if info.get("viewer_problem"):
        rows.append(("viewer", f"cannot show it: {info['viewer_problem']}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    table = [("level", "shape", "chunks", "dtype", "voxel size")]
    for i, level in enumerate(info["levels"]):
        table.append((level["path"] or str(i), " x ".join(map(str, level["shape"])),
                      " x ".join(map(str, level["chunks"])), level["dtype"],
                      _sizes(level["voxel_size"], level["units"])))
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    lines.append("")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)

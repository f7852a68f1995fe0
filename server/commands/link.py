"""``ngserve link SOURCE...``: a Neuroglancer link (or state) showing the datasets."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import contextmanager
from typing import Iterator

from . import float_list

UINT64_MAX = 2**64 - 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("link", help="print a Neuroglancer link showing one or more datasets")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="local paths or http(s) URLs, one layer each")
    p.add_argument("--viewer", help="viewer URL (default: ngserve's own viewer when it serves the data, else the demo site)")
    # Either output, not both: --short prints a URL where --json promises JSON.
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the state JSON instead of a URL")
    output.add_argument("--short", metavar="SERVER", nargs="?", const="",
                        help="store the state on this ngserve and print the short link (not with --json); "
                             "without SERVER (put --short after the sources), the ngserve that serves every source")
    p.add_argument("--batch", metavar="TABLE.csv",
                   help="one link per row: columns source, source2, … (others are kept); writes CSV with a url "
                        "column, and an error column for rows that failed (exit status 1 then)")
    p.add_argument("--served-at", action="append", default=[], metavar="DIR=URL",
                   help="local folder DIR is served at URL (default: a running ngserve that serves it)")
    add_state_options(p)
    p.add_argument("--token-ttl", metavar="DURATION",
                   help="put a share token valid this long (e.g. 12h, 7d) in each source on a protected ngserve, "
                        "so the link opens without an account")
    p.add_argument("--config", metavar="FILE",
                   help="with --token-ttl: the server's ngserve.toml, for its secret and mounts (else $NGSERVE_SECRET)")
    p.set_defaults(run=run)


def add_state_options(p: argparse.ArgumentParser) -> None:
    """What the view shows: the options ``link`` and ``view`` share."""
    p.add_argument("--name", action="append", default=[], help="layer name, once per source in order")
    p.add_argument("--kind", action="append", default=[], choices=["image", "segmentation", "annotation"],
                   help="layer type, once per source in order (default: inferred)")
    p.add_argument("--layout", default="4panel", help="xy, xz, yz, 3d, 4panel, xy-3d, … (default 4panel)")
    p.add_argument("--position", type=float_list,
                   help="comma-separated position in the state's dimensions (default: centre)")
    p.add_argument("--segments", type=segment_ids, help="comma-separated segment ids to select in segmentation layers")
    p.add_argument("--segment-table", metavar="FILE",
                   help="CSV/TSV/Parquet/JSON table of segment ids (column id) with names (name or label) and other "
                        "properties for the segmentation layers; written beside itself as FILE.segment_properties/, "
                        "so it must sit in a folder an ngserve serves")
    p.add_argument("--opacity", type=fraction, help="opacity of every layer, 0 to 1")
    p.add_argument("--hidden", action="append", default=[], metavar="NAME", help="start with this layer hidden")
    p.add_argument("--link", action="append", default=[], metavar="REL=LAYER",
                   help="link annotation relationship REL to segmentation layer LAYER (default: the layer named "
                        "REL, else the only segmentation layer)")
    p.add_argument("--voxel-size", action="append", default=[], type=float_list, metavar="Z,Y,X",
                   help="level-0 voxel size (one value or Z,Y,X) in --units: once for every source, or once per "
                        "source in order (default: from the metadata; a source without units beside physical ones "
                        "takes the voxel size of one of the same shape)")
    p.add_argument("--units", action="append", default=[], metavar="UNIT",
                   help="unit of --voxel-size, or of a unitless source's voxels: nm, um, nanometer, … (default nm); "
                        "once for every source, or once per source")
    p.add_argument("--contrast", type=float_list, help="LO,HI contrast range for image layers (default: omero window or percentiles)")
    p.add_argument("--no-labels", dest="labels", action="store_false",
                   help="do not add an OME-Zarr image's labels/ images as segmentation layers")
    p.add_argument("--verbose", action="store_true",
                   help="on an error, also print the full messages behind it (tensorstore's specs included)")


def state_defaults() -> argparse.Namespace:
    """The state options at their defaults, for commands that show a view without asking (``demo``)."""
    p = argparse.ArgumentParser(add_help=False)
    add_state_options(p)
    return p.parse_args([])


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1")
    return value


def segment_ids(text: str) -> list[int]:
    """An argparse type: comma-separated uint64 ids, parsed as integers (a float would round the large ones)."""
    ids = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"segment id {item!r} is not an integer") from None
        if not 0 <= value <= UINT64_MAX:
            raise argparse.ArgumentTypeError(f"segment id {item} is outside 0..{UINT64_MAX} (uint64)")
        ids.append(value)
    return ids


def _options(args: argparse.Namespace, n: int) -> dict:
    from . import UsageError

    opts: dict = {"layout": args.layout, "viewer": getattr(args, "viewer", None), "labels": args.labels,
                  "served_at": dict(_served_at(args))}
    for flag, key in (("name", "names"), ("kind", "kinds")):
        values = getattr(args, flag)
        if values:
            if len(values) != n:
                raise UsageError(f"--{flag} was given {len(values)} times for {n} sources; give it once per source")
            opts[key] = values
    for flag, key in (("voxel_size", "voxel_size"), ("units", "units")):
        values = getattr(args, flag, [])
        if len(values) == 1:
            opts[key] = values[0]
        elif values:
            if len(values) != n:
                raise UsageError(f"--{flag.replace('_', '-')} was given {len(values)} times for {n} sources; "
                                 "give it once for all, or once per source")
            opts[key] = values
    if args.position:
        opts["position"] = args.position
    if args.segments:
        opts["segments"] = args.segments
    if getattr(args, "segment_table", None):
        opts["segment_table"] = args.segment_table
    if args.opacity is not None:
        opts["opacity"] = args.opacity
    if args.contrast:
        if len(args.contrast) != 2:
            raise UsageError("--contrast: expected two numbers, LO,HI")
        lo, hi = args.contrast
        if not -float("inf") < lo < hi < float("inf"):
            raise UsageError(f"--contrast {lo:g},{hi:g}: expected finite numbers with LO below HI")
        opts["contrast"] = args.contrast
    return opts


class _Signer:
    """Mints share tokens for the sources a link shows, with one server's secret.

    A source is on that server when it lies under the config's ``public_url``
    or, without one, when its origin answers as an ngserve.  Other sources are
    left alone: a token must never travel to a host that is not ours.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from ..config import parse_duration
        from .token import server_secret

        from . import UsageError

        try:
            self.ttl = parse_duration(args.token_ttl)
        except ValueError as exc:
            raise UsageError(f"--token-ttl: {exc}") from None
        self.secret, self.config = server_secret(args.config)
        self.config_path = args.config
        from ngstate import State

        self.placer = State(served_at=dict(_served_at(args)))  # the one rule for where a local folder is served

    def scope(self, url: str) -> tuple[str, str, str, str] | None:
        """(server base URL, raw data path, mount, path in mount) of ``url``; None when it is not ours."""
        from urllib.parse import urlsplit

        from ngstate import is_ngserve, origin_of

        from ..auth import mount_of
        from ..paths import split_path
        from . import UsageError

        public = self.config.public_url.rstrip("/") if self.config and self.config.public_url else None
        if public:
            if url != public and not url.startswith(public + "/"):
                return None
            base, raw = public, url[len(public):]
        else:
            base = origin_of(url)
            if base is None or not is_ngserve(base):
                return None
            raw = urlsplit(url).path
        segments = split_path(raw)
        if segments is None:
            raise UsageError(f"{url}: not a plain path")
        if self.config is None:
            # Without the config we cannot tell a named mount from a folder of the
            # root mount; named mounts are the common case for protected data.
            if not segments:
                raise UsageError(f"{url}: give a dataset path inside a mount")
            return base, raw, segments[0], "/".join(segments[1:])
        found = mount_of({m.name for m in self.config.mounts}, segments)
        if found is None:
            raise UsageError(f"{url}: no mount of {self.config_path} serves this path")
        return base, raw, found[0], "/".join(found[1])

    def sign(self, sources: list[str]) -> tuple[list[str], list[str | None]]:
        """The sources to read and the URLs to show: ``<server>/-/t/<token>/<path>`` for ours.

        The token is scoped to the dataset's own folder.  It goes in the path, not
        in ``?token=``, because Neuroglancer's zarr and n5 sources drop a query.
        An http source is read through that very URL, so the state proves it works.
        """
        from tqdm import tqdm

        from volumes import Location

        from ..paths import token_path
        from ..tokens import mint

        read, urls = [], []
        for source in sources:
            loc = Location(source)
            public = loc.root if loc.is_http else self.placer.public_url(loc)
            scope = self.scope(public)
            if scope is None:
                tqdm.write(f"note: {public} is not on the server whose secret was given; it gets no token",
                           file=sys.stderr)  # above a --batch progress bar, as _render's notes
                read.append(source)
                urls.append(None)
                continue
            base, raw, mount, path = scope
            url = base + token_path(mint(self.secret, mount, path, self.ttl), raw) + loc.query_suffix
            read.append(url if loc.is_http else source)
            urls.append(url)
        return read, urls


def _apply_links(items: list[str], plans: list) -> None:
    """``--link REL=LAYER``: for every annotation layer that has relationship REL."""
    from . import UsageError

    if not items:
        return
    links = {}
    for item in items:
        rel, sep, layer = item.partition("=")
        if not (sep and rel and layer):
            raise UsageError(f"--link {item!r}: expected REL=LAYER, e.g. --link cell=cells")
        links[rel] = layer
    used = set()
    for plan in plans:
        rels = set(plan.dataset.extras.get("relationships") or []) if plan.kind == "annotation" else set()
        plan.link = {r: layer for r, layer in links.items() if r in rels}
        used |= plan.link.keys()
    if links.keys() - used:
        raise UsageError(f"--link {', '.join(sorted(links.keys() - used))}: no annotation layer has that relationship")


def _served_at(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--served-at DIR=URL`` pairs, checked."""
    from . import UsageError

    pairs = []
    for item in getattr(args, "served_at", []):
        folder, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise UsageError(f"--served-at {item!r}: expected DIR=URL, e.g. --served-at ./data=http://127.0.0.1:9000")
        pairs.append((folder, url))
    return pairs


def _render(args: argparse.Namespace, sources: list[str], signer: _Signer | None = None) -> str:
    """The URL (or JSON) for one set of sources; errors become one line."""
    from tqdm import tqdm

    from ngstate import shorten

    state = build(args, sources, signer)
    with user_errors(args, signer):
        if args.json:
            out = json.dumps(state.to_json(), indent=2)
        elif args.short is not None:
            out = shorten(state.to_json(), args.short or _common_server(state))
        else:
            out = state.to_url()
    for note in state.notes:
        tqdm.write(f"note: {note}", file=sys.stderr)  # above a --batch progress bar, not through it
    return out


def _common_server(state) -> str:
    """``--short`` without a server: the ngserve that serves every layer's source."""
    from ngstate import is_ngserve, origin_of
    from ngstate.layers import source_url
    from volumes import strip_scheme

    from . import UsageError

    sources = [p.layer["source"] for p in state.plans]
    origins = {origin_of(strip_scheme(source_url(s))) for s in sources}
    if len(origins) != 1 or None in origins or not is_ngserve(next(iter(origins))):
        raise UsageError("--short: the sources are not all on one ngserve; name the server, --short=http://host:9000")
    return next(iter(origins))


def build(args: argparse.Namespace, sources: list[str], signer: _Signer | None = None, **overrides):
    """The :class:`ngstate.State` for ``sources`` with the state options in ``args`` (``overrides``
    win: ``served_at``, ``viewer``); errors become one line."""
    from ngstate import build_state

    from . import UsageError

    with user_errors(args, signer):
        options = {**_options(args, len(sources)), **overrides}
        if signer is not None:
            sources, options["urls"] = signer.sign(sources)
        state = build_state(sources, **options)
        hidden = set(args.hidden)
        unknown = hidden - {p.name for p in state.plans}
        if unknown:
            raise UsageError(f"--hidden {', '.join(sorted(unknown))}: no layer of that name")
        for plan in state.plans:
            if plan.name in hidden:
                plan.layer["visible"] = False
        _apply_links(args.link, state.plans)
        state.to_json()  # what cannot be shown fails here, as one line, not later
    return state


@contextmanager
def user_errors(args: argparse.Namespace, signer: _Signer | None = None) -> Iterator[None]:
    """ValueError (SourceError, our own checks, tensorstore failing to read arrays) -> one line."""
    from tqdm import tqdm

    from volumes import detail, first_line

    from . import UsageError

    try:
        yield
    except ValueError as exc:
        text, full = first_line(exc), detail(exc)
        if signer is not None:  # messages name the URLs that failed: hide the tokens in them
            from ..access_log import redact

            text, full = redact(text), redact(full)
        if args.verbose:
            tqdm.write(full, file=sys.stderr)
        raise UsageError(text) from None


def run(args: argparse.Namespace) -> int:
    from . import UsageError

    if args.batch:
        if args.sources:
            raise UsageError("give either SOURCE arguments or --batch TABLE.csv, not both")
        return _batch(args)
    if not args.sources:
        hint = " (put --short after the sources, or write --short=SERVER)" if args.short else ""
        raise UsageError(f"give at least one SOURCE (a dataset path or URL){hint}")
    print(_render(args, args.sources, _signer(args)))
    return 0


def _signer(args: argparse.Namespace) -> _Signer | None:
    from . import UsageError

    if args.config and not args.token_ttl:
        raise UsageError("--config is only used with --token-ttl")
    return _Signer(args) if args.token_ttl else None


def _batch(args: argparse.Namespace) -> int:
    from . import UsageError

    try:
        with open(args.batch, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise UsageError(f"--batch {args.batch}: {exc.strerror}") from None
    if not rows or not any(k and k.startswith("source") for k in rows[0]):
        raise UsageError(f"--batch {args.batch}: needs a header row with a 'source' column")
    columns = [k for k in rows[0] if k and k.startswith("source")]
    signer = _signer(args)
    fields = [*rows[0].keys()] + [c for c in ("url", "error") if c not in rows[0]]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    from tqdm import tqdm

    failed = 0
    # Each row reads metadata and contrast statistics; disable=None shows the bar on a terminal only.
    # A bad row does not stop the others: it gets an error column, and the exit status says so.
    for number, row in enumerate(tqdm(rows, desc="links", unit=" rows", leave=False, disable=None), start=2):
        sources = [row[c].strip() for c in columns if row.get(c) and row[c].strip()]
        try:
            if not sources:
                raise UsageError("no source")
            row["url"], row["error"] = _render(args, sources, signer), ""
        except UsageError as exc:
            failed += 1
            row["url"], row["error"] = "", str(exc)
            tqdm.write(f"ngserve link: error: --batch {args.batch}, line {number}: {exc}", file=sys.stderr)
        writer.writerow(row)
    if failed:
        tqdm.write(f"ngserve link: {failed} of {len(rows)} rows failed (see their error column)", file=sys.stderr)
    return 1 if failed else 0

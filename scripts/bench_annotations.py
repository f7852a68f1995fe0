"""Benchmark: `ngserve annotate` on a CSV file against neuroglancer's AnnotationWriter fed from the same CSV.

Both turn the same CSV of points into precomputed annotations, end to end as a user runs them:
each point has two properties (float32 score, uint8 kind) and one relationship (a segment id).

- ngserve: the command line, ``python -m server annotate points.csv out --property score:float32
  --property kind:uint8 --relationship segment --scale 8,8,40``, in its own process;
- neuroglancer: a process that reads the CSV with pandas, calls ``AnnotationWriter.add_point``
  once per row (the library's API) and then ``write``.

The CSV is written (by a separate process) before any clock starts.  Each case is timed as its
whole process (interpreter start, imports, reading the table, writing), with its own peak RSS and
CPU time from ``wait4``.

    python scripts/bench_annotations.py                      # 1,000,000 vs AnnotationWriter, then ngserve at 10,000,000
    python scripts/bench_annotations.py --sizes 100000 --skip-large
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_csv(n: int, path: Path) -> None:
    """Uniformly random points in 20000 × 20000 × 2000 voxels, ~10 points per segment."""
    import numpy as np
    import pyarrow as pa
    from pyarrow import csv

    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "x": rng.uniform(0, 20000, n),
            "y": rng.uniform(0, 20000, n),
            "z": rng.uniform(0, 2000, n),
            "score": rng.random(n).astype(np.float32),
            "kind": rng.integers(0, 5, n).astype(np.uint8),
            "segment": rng.integers(1, max(2, n // 10), n).astype(np.uint64),
        }
    )
    csv.write_csv(table, path)


def ngserve_command(table: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "server", "annotate", str(table), str(out),
        "--property", "score:float32", "--property", "kind:uint8", "--relationship", "segment",
        "--scale", "8,8,40", "--seed", "0",
    ]


def neuroglancer_child(table: Path, out: Path) -> None:
    """What a user of neuroglancer's Python package writes: pandas for the CSV, one call per point."""
    import neuroglancer
    import pandas as pd
    from neuroglancer.write_annotations import AnnotationWriter

    frame = pd.read_csv(table)
    writer = AnnotationWriter(
        coordinate_space=neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 40]),
        annotation_type="point",
        properties=[
            neuroglancer.AnnotationPropertySpec(id="score", type="float32"),
            neuroglancer.AnnotationPropertySpec(id="kind", type="uint8"),
        ],
        relationships=["segment"],
    )
    xyz = frame[["x", "y", "z"]].to_numpy()
    score, kind, segment = frame["score"].to_numpy(), frame["kind"].to_numpy(), frame["segment"].to_numpy()
    for i in range(len(frame)):
        writer.add_point(xyz[i], id=i, score=score[i], kind=kind[i], segment=int(segment[i]))
    writer.write(out)


def measure(case: str, table: Path, n: int, workdir: Path) -> dict:
    """Run one case in its own process; its wall time, CPU time and peak RSS."""
    out = workdir / f"{case}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    command = ngserve_command(table, out) if case == "ngserve" else [sys.executable, __file__, "--neuroglancer-child", str(table), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = workdir / f"{case}-{n}.stderr"
    with open(log, "wb") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time and peak RSS
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{case} {n} failed:\n{log.read_text()}")
    files = sum(len(f) for _, _, f in os.walk(out))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "case": case, "n": n, "seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024, "files": files, "bytes": size,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000", help="comma-separated sizes compared against AnnotationWriter")
    p.add_argument("--large", type=int, default=10_000_000, help="size run with ngserve only")
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    p.add_argument("--neuroglancer-child", nargs=2, metavar=("CSV", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--write-csv", nargs=2, metavar=("N", "CSV"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write_csv:
        write_csv(int(args.write_csv[0]), Path(args.write_csv[1]))
        return
    if args.neuroglancer_child:
        neuroglancer_child(*map(Path, args.neuroglancer_child))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-annotations-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def table(n: int) -> Path:
        path = workdir / f"points-{n}.csv"
        if not path.exists():  # in a child: a big parent would count towards each case's peak RSS
            subprocess.run([sys.executable, __file__, "--write-csv", str(n), str(path)], check=True)
        return path

    sizes = [int(s) for s in args.sizes.split(",")]
    tables = {n: table(n) for n in sizes + ([] if args.skip_large else [args.large])}
    print(f"load before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"cpus: {os.cpu_count()}  python {sys.version.split()[0]}")
    print("| case | annotations | CSV MB | wall s | CPU s | peak RSS MiB | files | MB on disk |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def row(r: dict) -> None:
        print(
            f"| {r['case']} | {r['n']:,} | {tables[r['n']].stat().st_size / 1e6:.0f} | {r['seconds']:.1f} | {r['cpu']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['files']:,} | {r['bytes'] / 1e6:.0f} |",
            flush=True,
        )

    for n in sizes:
        ours = measure("ngserve", tables[n], n, workdir)
        row(ours)
        theirs = measure("neuroglancer", tables[n], n, workdir)
        row(theirs)
        print(
            f"speed-up at {n:,}: {theirs['seconds'] / ours['seconds']:.1f}x wall, {theirs['cpu'] / ours['cpu']:.1f}x CPU",
            flush=True,
        )
    if not args.skip_large:
        row(measure("ngserve", tables[args.large], args.large, workdir))
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

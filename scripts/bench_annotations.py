"""Benchmark: ngserve's annotation writer against neuroglancer.write_annotations.AnnotationWriter.

Both write the same points, each with two properties (float32 score, uint8 kind) and one
relationship (a segment id).  Each run happens in its own subprocess so that its peak RSS is its
own; the table is generated in that process before the clock starts, and is counted in the RSS.

    python scripts/bench_annotations.py                      # 1,000,000 vs AnnotationWriter, then 10,000,000
    python scripts/bench_annotations.py --sizes 100000 --skip-large
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_table(n: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 20000, n),
            "y": rng.uniform(0, 20000, n),
            "z": rng.uniform(0, 2000, n),
            "score": rng.random(n).astype(np.float32),
            "kind": rng.integers(0, 5, n).astype(np.uint8),
            "segment": rng.integers(1, max(2, n // 10), n).astype(np.uint64),
        }
    )


def run_ngserve(n: int, out: Path) -> float:
    from annotations import write_annotations

    table = make_table(n)
    start = time.perf_counter()
    write_annotations(
        table, out, properties=["score:float32", "kind:uint8"], relationships=["segment"],
        scale=[8, 8, 40], seed=0, progress=False,
    )
    return time.perf_counter() - start


def run_neuroglancer(n: int, out: Path) -> float:
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    table = make_table(n)
    start = time.perf_counter()
    writer = AnnotationWriter(
        coordinate_space=neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 40]),
        annotation_type="point",
        properties=[
            neuroglancer.AnnotationPropertySpec(id="score", type="float32"),
            neuroglancer.AnnotationPropertySpec(id="kind", type="uint8"),
        ],
        relationships=["segment"],
    )
    xyz = table[["x", "y", "z"]].to_numpy()
    score, kind, segment = table["score"].to_numpy(), table["kind"].to_numpy(), table["segment"].to_numpy()
    for i in range(n):  # the library's API is one call per annotation
        writer.add_point(xyz[i], id=i, score=score[i], kind=kind[i], segment=int(segment[i]))
    writer.write(out)
    return time.perf_counter() - start


def child(case: str, n: int, out: Path) -> None:
    seconds = (run_ngserve if case == "ngserve" else run_neuroglancer)(n, out)
    files = sum(len(f) for _, _, f in os.walk(out))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"case": case, "n": n, "seconds": seconds, "peak_rss_mib": peak_kib / 1024, "files": files, "bytes": size}))


def measure(case: str, n: int, workdir: Path) -> dict:
    out = workdir / f"{case}-{n}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wall = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", case, "--sizes", str(n), "--workdir", str(workdir)],
        capture_output=True, text=True, env=env,
    )
    if done.returncode:
        raise SystemExit(f"{case} {n} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - wall
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000", help="comma-separated sizes compared against AnnotationWriter")
    p.add_argument("--large", type=int, default=10_000_000, help="size run with ngserve only")
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, int(args.sizes), Path(args.workdir) / f"{args.child}-{args.sizes}")
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-annotations-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"load before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"cpus: {os.cpu_count()}  python {sys.version.split()[0]}")
    print("| case | annotations | write s | process wall s | peak RSS MiB | files | MB on disk |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def row(r: dict) -> None:
        print(f"| {r['case']} | {r['n']:,} | {r['seconds']:.1f} | {r['process_wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['files']:,} | {r['bytes'] / 1e6:.0f} |", flush=True)

    for n in [int(s) for s in args.sizes.split(",")]:
        ours = measure("ngserve", n, workdir)
        row(ours)
        theirs = measure("neuroglancer", n, workdir)
        row(theirs)
        print(f"speed-up at {n:,}: {theirs['seconds'] / ours['seconds']:.1f}x", flush=True)
    if not args.skip_large:
        row(measure("ngserve", args.large, workdir))
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

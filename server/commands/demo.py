"""``ngserve demo``: write a small synthetic OME-Zarr with labels, serve it and open its view."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

DEMO_NAME = "demo.ome.zarr"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve a small synthetic OME-Zarr dataset and print its viewer URL")
    p.add_argument("--out", help="write the dataset here and keep it (default: a temporary folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one (default: %(default)s)")
    p.add_argument("--open", action="store_true", help="open the viewer in a browser")
    p.add_argument("--write-only", action="store_true", help="write the dataset and exit without serving")
    p.set_defaults(run=run)


def write_demo(folder: Path) -> Path:
    """An OME-Zarr uint16 image of blobs and noise, 3 levels, with uint32 ``labels/cells``."""
    import numpy as np

    from volumes import add_labels_group, blobs, building, write_ome_zarr

    image, labels = blobs((64, 192, 192), n_blobs=30, seed=1)
    path = folder / DEMO_NAME
    voxel = (0.5, 0.2, 0.2)  # anisotropic, as light-sheet data is
    with building(path) as staging:  # the image and its labels appear together or not at all
        write_ome_zarr(staging, (image * 4000 + 200).astype(np.uint16), voxel_size=voxel, levels=3, name=DEMO_NAME)
        write_ome_zarr(
            add_labels_group(staging, ["cells"]) / "cells", labels, voxel_size=voxel, levels=3, method="mode", label=True
        )
    return path


def run(args: argparse.Namespace) -> int:
    from . import UsageError
    from .link import state_defaults
    from .view import show

    if args.write_only and not args.out:
        raise UsageError("--write-only needs --out DIR, or the dataset would be deleted at once")
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="ngserve-demo-"))
    try:
        write_demo(folder)
        print(f"ngserve demo: wrote {folder / DEMO_NAME}", flush=True)
        if args.write_only:
            return 0
        # The view `ngserve view` gives: the image with its labels, as ngstate builds it.
        show(state_defaults(), [str(folder / DEMO_NAME)], [folder], host=args.host, port=args.port, browser=args.open,
             access_log=True)
    finally:
        if not args.out:
            shutil.rmtree(folder, ignore_errors=True)
    return 0

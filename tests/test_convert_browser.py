"""A converted TIFF stack, served by ngserve, renders in the built-in viewer with visible contrast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from browser import assert_only_metadata_probes_failed, browser_page, rendered_fraction, viewer_status_text, wait_until

from volumes import blobs

ROOT = Path(__file__).resolve().parent.parent
CHUNK = r'"GET /stack\.ome\.zarr/\d+/\d+/\d+/\d+ HTTP'


def test_converted_stack_renders_with_contrast(start_server, tmp_path):
    image, _ = blobs((32, 160, 160), n_blobs=20, seed=3)
    # Values in 200..4200 of uint16's 0..65535: shown over the type's full range they would be
    # all but black.  (The bundled Neuroglancer also fits its default range to the data, so this
    # checks what a user sees, not which of the two set the window.)
    data = (image * 4000 + 200).astype(np.uint16)
    (tmp_path / "slices").mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(tmp_path / "slices" / f"s{z}.tif", plane)
    served = tmp_path / "served"
    r = subprocess.run([sys.executable, "-m", "server", "convert", str(tmp_path / "slices"), str(served / "stack.ome.zarr"),
                        "--chunk", "32", "--voxel-size", "0.5,0.2,0.2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    srv = start_server("serve", str(served))
    with browser_page() as (page, errors):
        page.goto(srv.url + "/-/open/stack.ome.zarr")
        assert wait_until(lambda: len(srv.requested(CHUNK)) >= 4), "viewer fetched no chunks:\n" + "".join(srv.log)
        page.wait_for_timeout(2000)
        status = viewer_status_text(page)
        assert_only_metadata_probes_failed(srv, errors)
        drawn = rendered_fraction(page)
    assert "Error" not in status, status
    assert drawn > 0.2, drawn  # a near-black layer changes almost no pixel when hidden

"""A minted multi-layer link (image, segmentation, annotations) in headless Chromium."""

from __future__ import annotations

import numpy as np
from browser import (
    assert_only_metadata_probes_failed,
    browser_page,
    rendered_fraction,
    viewer_status_text,
    wait_until,
)

import ngstate
from volumes.samples import narrow_uint16, write_annotation_points
from volumes.synthetic import blobs
from volumes.write import write_ome_zarr, write_precomputed

IMAGE = r'"GET /data/img\.ome\.zarr/\d+/\d+/\d+/\d+ HTTP'
SEGMENTATION = r'"GET /data/seg/[^ ]+\.shard HTTP'
ANNOTATIONS = r'"GET /data/points/spatial0/[^ ]+ HTTP'


def write_aligned(folder):
    """An OME-Zarr image (nm), a sharded precomputed segmentation and points, all aligned."""
    image, labels = blobs((24, 64, 80), n_blobs=10, seed=7)
    # precomputed voxel_offset (10, 20, 5) at (8, 8, 40) nm puts the corner at (80, 160, 200) nm;
    # OME translations name voxel centres, half a voxel further in.
    write_ome_zarr(folder / "img.ome.zarr", narrow_uint16(image), voxel_size=(40, 8, 8), unit="nanometer",
                   translation=(220, 164, 84), levels=2, chunks=(16, 32, 32))
    write_precomputed(folder / "seg", labels.astype(np.uint64), resolution_xyz=(8, 8, 40),
                      voxel_offset_xyz=(10, 20, 5), kind="segmentation", sharded=True, levels=2)
    write_annotation_points(folder / "points", labels, offset_xyz=(10, 20, 5))


def test_multi_layer_link_and_short_link_render(start_server, tmp_path):
    (tmp_path / "data").mkdir()
    write_aligned(tmp_path / "data")
    srv = start_server("serve", str(tmp_path), "--data-dir", str(tmp_path / "db"))
    sources = [f"{srv.url}/data/img.ome.zarr", f"{srv.url}/data/seg", f"{srv.url}/data/points"]
    state = ngstate.build_state(sources, segments=[1, 2, 3])
    url = state.to_url()
    assert url.startswith(srv.url + "/-/viewer/v/ngserve/#!")
    assert [l["type"] for l in state.to_json()["layers"]] == ["image", "segmentation", "annotation"]
    assert state.to_json()["layers"][2]["linkedSegmentationLayer"] == {"cell": "seg"}
    short = ngstate.shorten(state.to_json(), srv.url)
    with browser_page() as (page, errors):
        page.goto(url)
        for pattern in (IMAGE, SEGMENTATION, ANNOTATIONS):
            assert wait_until(lambda: srv.requested(pattern), timeout=90), f"no request matching {pattern}:\n" + "".join(
                srv.log[-40:]
            )
        status = viewer_status_text(page)
        assert_only_metadata_probes_failed(srv, errors)
        drawn = rendered_fraction(page)
        assert "Error" not in status, status
        assert drawn > 0.05, drawn
        # The short link: Neuroglancer fetches the stored state and shows the same layers.
        before = len(srv.requested(IMAGE))
        page.goto(short)
        page.reload()
        assert wait_until(lambda: srv.requested(r'"GET /-/api/states/[\w-]+ HTTP[^"]*" 200'), timeout=60)
        assert wait_until(lambda: len(srv.requested(IMAGE)) > before, timeout=90)
        assert_only_metadata_probes_failed(srv, errors)
    for pattern in (IMAGE, SEGMENTATION, ANNOTATIONS):
        bad = [line for line in srv.requested(pattern) if not any(f'" {c} ' in line for c in (200, 206, 304))]
        assert bad == []

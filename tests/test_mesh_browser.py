"""Meshes on demand in the built-in viewer: selected segments are fetched from ``/-/mesh/`` and drawn in
the 3-D panel, for an OME label image (a mesh source ngstate attaches) and for labels only the
translated precomputed view shows (its ``info`` names the mesh source)."""

from __future__ import annotations

import numpy as np

from browser import assert_only_metadata_probes_failed, browser_page, changed_fraction, wait_until
from test_segment_properties import write_labelled

import ngstate

def screenshot_3d(page, url: str, srv, segments_requested: list[str]) -> bytes:
    page.goto(url)
    page.reload()
    for pattern in segments_requested:
        assert wait_until(lambda: srv.requested(pattern), timeout=120), (pattern, "".join(srv.log[-30:]))
    page.wait_for_timeout(4000)  # fragments decoded and drawn
    return page.screenshot()


def test_selected_segments_are_meshed_and_drawn(tmp_path, start_server):
    _, cells, labels = write_labelled(tmp_path)
    tiff = tmp_path / "stack.tif"
    import tifffile

    tifffile.imwrite(tiff, labels.astype(np.uint64))  # uint64 TIFF: /-/precomputed/ labels, its info names meshes
    srv = start_server("serve", str(tmp_path))
    ids = [int(v) for v in np.unique(labels) if v][:2]
    with browser_page() as (page, errors):
        for source, layer_path, view in ((cells, "img.ome.zarr/labels/cells", "native"),
                                         (tiff, "stack.tif", "precomputed")):
            state = ngstate.build_state([source], served_at={str(tmp_path): srv.url}, layout="3d",
                                        kinds="segmentation")
            (plan,) = state.plans
            assert plan.view == view
            doc = state.to_json()
            (layer,) = doc["layers"]
            if view == "native":
                assert layer["source"][-1] == f"precomputed://{srv.url}/-/mesh/{layer_path}"
            else:
                assert isinstance(layer["source"], str) and plan.dataset.extras["mesh"].endswith("mesh/stack.tif")
            shown = dict(doc, layers=[dict(layer, segments=[str(i) for i in ids])])
            url = state.to_url().split("#!", 1)[0]
            with_meshes = screenshot_3d(page, ngstate.urls.state_url(shown, url), srv, [
                rf'"GET /-/mesh/{layer_path}/{i}\.index HTTP[^"]*" 200' for i in ids] + [
                rf'"GET /-/mesh/{layer_path}/{i} HTTP[^"]*" 20[06]' for i in ids])
            without = screenshot_3d(page, ngstate.urls.state_url(doc, url), srv, [])
            assert changed_fraction(with_meshes, without) > 0.005, view
        assert_only_metadata_probes_failed(srv, errors)

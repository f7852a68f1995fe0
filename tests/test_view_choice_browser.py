"""``/-/open`` on sources the bundled client cannot show as stored, in that client (headless
Chromium): each opens through the view ngserve chose, checked through the client's own
coordinate space (``window.viewer``) and the chunk requests the server saw.  One server, one browser."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from browser import assert_only_metadata_probes_failed, browser_page, distinct_colours, wait_until
from conftest import ServerProcess
from test_view_repair import COSEM_SHAPES, COSEM_T0, write_cosem, write_old_ome
from test_view_choice import write_rotated_ome06
from test_view_repair_browser import space_of

from server.viewer import viewer_url
from volumes import write_ome_zarr

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice-browser")
    write_cosem(root / "jrc.n5" / "em" / "fibsem")
    write_old_ome(root / "v03.zarr", "0.3", [[10, 40, 48], [5, 20, 24]], ["z", "y", "x"])
    write_rotated_ome06(root / "rot.zarr")
    tifffile.imwrite(root / "stack.tif", RNG.integers(0, 60000, size=(12, 40, 50), dtype=np.uint16))
    # float64 (so translated), its voxel corners at z 7.3, y 1.25, x -2.6 voxels: not whole voxels.
    write_ome_zarr(root / "frac.ome.zarr", RNG.random((6, 8, 10)), voxel_size=(2, 3, 4), unit="nanometer",
                   levels=1, translation=((7.3 + 0.5) * 2, (1.25 + 0.5) * 3, (-2.6 + 0.5) * 4))
    write_ome_zarr(root / "em.ome.zarr", RNG.integers(0, 255, size=(12, 90, 100), dtype=np.uint8),
                   voxel_size=(1, 1, 1), unit="nanometer", levels=1)
    srv = ServerProcess(["serve", str(root), "--port", "0"])
    yield srv
    srv.stop()


def open_in(page, srv, path: str) -> dict:
    """Open ``/-/open/<path>`` afresh (a new document, not a hash change) and return the client's coordinate space."""
    page.goto("about:blank")
    page.goto(f"{srv.url}/-/open/{path}")
    return space_of(page)


def test_views_chosen_by_open_show_in_the_bundled_viewer(site):
    srv = site
    with browser_page() as (page, errors):
        # COSEM through /-/n5/: the voxel size the levels state, placed where COSEM's translation
        # puts it, every level known to the client, chunks fetched (the old s0 link fetched none).
        group = "/-/n5/jrc.n5/em/fibsem"
        space = open_in(page, srv, "jrc.n5/em/fibsem")
        assert space["names"] == ["x", "y", "z"] and space["units"] == ["m", "m", "m"]
        assert space["scales"] == pytest.approx([4e-9, 4e-9, 5e-9], rel=1e-9)
        corner = [t / s - 0.5 for t, s in zip(COSEM_T0[::-1], [4.0, 4.0, 5.0])]
        assert space["lower"] == pytest.approx(corner)
        assert space["upper"] == pytest.approx([c + n for c, n in zip(corner, COSEM_SHAPES[0])])
        for i in range(len(COSEM_SHAPES)):
            assert wait_until(lambda i=i: srv.requested(rf'"GET {group}/s{i}/attributes.json HTTP')), i
        assert wait_until(lambda: srv.requested(rf'"GET {group}/s\d/\d+/\d+/\d+ HTTP[^"]*" 200'))

        # OME 0.3 through /-/zarr/: unitless voxels, chunks at 0.3's nested keys.
        space = open_in(page, srv, "v03.zarr")
        assert space["names"] == ["x", "y", "z"] and space["units"] == ["", "", ""] and space["scales"] == [1, 1, 1]
        assert wait_until(lambda: srv.requested(r'"GET /-/zarr/v03.zarr/\d/\d+/\d+/\d+ HTTP[^"]*" 200'))

        # OME 0.6 turned a quarter turn into "world": the rotation, which 0.5 metadata cannot say,
        # is in the source transform, and the client places the 8 x 6 voxels (0.5 micrometer) there.
        space = open_in(page, srv, "rot.zarr")
        assert space["names"] == ["x", "y"] and space["scales"] == pytest.approx([5e-7, 5e-7])
        assert space["lower"] == pytest.approx([-0.5, -5.5]) and space["upper"] == pytest.approx([7.5, 0.5])
        assert wait_until(lambda: srv.requested(r'"GET /-/zarr/rot.zarr/0/c/0/0 HTTP[^"]*" 200'))

        # A multi-page TIFF through /-/precomputed/: translated chunks, and something to see.
        space = open_in(page, srv, "stack.tif")
        assert space["names"] == ["x", "y", "z"] and space["scales"] == pytest.approx([1e-9] * 3)
        assert space["upper"] == [50, 40, 12]
        chunk = r'"GET /-/precomputed/stack.tif/s\d+/\d+-\d+_\d+-\d+_\d+-\d+ HTTP[^"]*" 200'
        assert wait_until(lambda: srv.requested(chunk))
        # Inside the xy panel's data (an empty panel is one grey and the crosshairs): noise, many greys.
        assert wait_until(lambda: distinct_colours(page.screenshot(), (100, 90, 400, 330)) > 50, timeout=30)
        srv.settle()
        assert_only_metadata_probes_failed(srv, errors)


def test_translated_views_place_sub_voxel_offsets_and_show_jpeg(site):
    """The translated view rounds offsets to whole voxels; the layer's source transform carries the
    rest, so the client places the data exactly (checked in its own coordinate space).  The
    -jpeg form shows in the client: jpeg chunks fetched, and something to see."""
    srv = site
    with browser_page() as (page, errors):
        space = open_in(page, srv, "frac.ome.zarr")
        assert space["names"] == ["x", "y", "z"]
        assert space["lower"] == pytest.approx([-2.6, 1.25, 7.3])
        assert space["upper"] == pytest.approx([7.4, 9.25, 13.3])
        source = f"precomputed://{srv.url}/-/precomputed/em.ome.zarr/-jpeg"
        state = {"dimensions": {a: [1e-9, "m"] for a in "xyz"}, "position": [50, 45, 6], "crossSectionScale": 0.3,
                 "layers": [{"type": "image", "source": source, "name": "em"}], "layout": "xy"}
        page.goto("about:blank")
        page.goto(viewer_url(state, base=srv.url))
        chunk = r'"GET /-/precomputed/em.ome.zarr/-jpeg/s\d+/\d+-\d+_\d+-\d+_\d+-\d+ HTTP[^"]*" 200'
        assert wait_until(lambda: srv.requested(chunk))
        assert wait_until(lambda: distinct_colours(page.screenshot(), (100, 90, 400, 330)) > 50, timeout=30)
        srv.settle()
        assert_only_metadata_probes_failed(srv, errors)

"""The repaired-metadata views in the bundled viewer (headless Chromium), checked through the
client's own coordinate space (``window.viewer``), not through the state JSON."""

from __future__ import annotations

import re

import pytest
from browser import assert_only_metadata_probes_failed, browser_page, wait_until
from test_view_repair import OME06_S, OME06_T, tree  # noqa: F401  (the fixture)

from server.viewer import viewer_url

SPACE = """() => {
  const cs = window.viewer.coordinateSpace.value;
  if (!cs.valid || cs.rank === 0) return null;
  return {names: cs.names, units: cs.units, scales: Array.from(cs.scales),
          lower: Array.from(cs.bounds.lowerBounds), upper: Array.from(cs.bounds.upperBounds)};
}"""


def space_of(page) -> dict:
    found = {}
    assert wait_until(lambda: found.update(space=page.evaluate(SPACE)) or found["space"] is not None, timeout=60)
    return found["space"]


def test_cosem_group_opens_with_voxel_size_and_coarser_levels(start_server, tree):  # noqa: F811
    root, _ = tree
    srv = start_server("serve", str(root))
    group = "/-/n5/data/jrc.n5/em/fibsem-uint8"
    layer = {"type": "image", "source": f"n5://{srv.url}{group}/", "name": "em"}
    with browser_page() as (page, errors):
        page.goto(viewer_url({"layers": [layer], "layout": "xy"}, base=srv.url))
        space = space_of(page)
        assert space["names"] == ["x", "y", "z"] and space["units"] == ["m", "m", "m"]
        assert space["scales"] == pytest.approx([4e-9, 4e-9, 5e-9], rel=1e-9)
        assert space["upper"] == [64, 48, 20]  # in s0 voxels: every level lies within s0's extent
        assert wait_until(lambda: srv.requested(rf'"GET {group}/s0/\d+/\d+/\d+ HTTP'))  # zoomed in: s0
        srv.settle()
        assert_only_metadata_probes_failed(srv, errors)
    # Zoomed out (6 voxels a pixel), a fresh client reads coarser levels and no s0 chunk at all.
    dims = {n: [s, u] for n, s, u in zip(space["names"], space["scales"], space["units"])}
    seen = len(srv.log)
    with browser_page() as (page, errors):
        page.goto(viewer_url({"dimensions": dims, "layers": [layer], "layout": "xy", "crossSectionScale": 6},
                             base=srv.url))
        coarser = re.compile(rf'"GET {group}/s[1-3]/\d+/\d+/\d+ HTTP')
        assert wait_until(lambda: any(coarser.search(line) for line in srv.log[seen:])), "".join(srv.log[seen:])
        page.wait_for_timeout(2000)
        srv.settle()
        assert not [line for line in srv.log[seen:] if f"{group}/s0/" in line and "attributes.json" not in line]
        assert_only_metadata_probes_failed(srv, errors)


def test_ome03_and_06_open_with_units_and_placement(start_server, tree):  # noqa: F811
    root, _ = tree
    srv = start_server("serve", str(root))
    with browser_page() as (page, errors):
        v03 = "/-/zarr/data/v03.zarr"
        page.goto(viewer_url({"layers": [{"type": "image", "source": f"zarr://{srv.url}{v03}/", "name": "v03"}],
                              "layout": "xy"}, base=srv.url))
        space = space_of(page)
        # 0.3 has no units or voxel size: one unitless voxel, the finest level's corner at -0.5
        # (OME names voxel centres).
        assert space["names"] == ["z", "y", "x"] and space["units"] == ["", "", ""] and space["scales"] == [1, 1, 1]
        assert space["lower"] == [-0.5] * 3 and space["upper"] == [9.5, 39.5, 47.5]
        # Nested chunk keys (0.3's layout, not stated in its .zarray): the repaired metadata says so.
        assert wait_until(lambda: srv.requested(rf'"GET {v03}/\d/\d+/\d+/\d+ HTTP'))

        v06 = "/-/zarr/data/v06.zarr"
        page.goto(viewer_url({"layers": [{"type": "image", "source": f"zarr3://{srv.url}{v06}/", "name": "v06"}],
                              "layout": "xy"}, base=srv.url))
        page.reload()
        space = space_of(page)
        assert space["names"] == ["z", "y", "x"] and space["units"] == ["m", "m", "m"]
        assert space["scales"] == pytest.approx([s * 1e-6 for s in OME06_S], rel=1e-9)
        assert space["lower"] == pytest.approx([t / s - 0.5 for t, s in zip(OME06_T, OME06_S)])
        assert wait_until(lambda: srv.requested(rf'"GET {v06}/s\d/c/\d+/\d+/\d+ HTTP'))
        srv.settle()
        assert_only_metadata_probes_failed(srv, errors)

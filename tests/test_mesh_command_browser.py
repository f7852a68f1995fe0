"""The meshes ``ngserve mesh`` writes into precomputed labels show in the built-in viewer's 3-D panel."""

from __future__ import annotations

from browser import assert_only_metadata_probes_failed, browser_page, changed_fraction, state_of, wait_until, with_state
from label_data import BIG, cli, shapes, write_precomputed

import ngstate

SHARD_READ = r'"GET /seg/mesh/0\.shard HTTP[^"]*" 206 '


def test_prepared_meshes_show_in_the_3d_panel(tmp_path, start_server):
    labels = write_precomputed(tmp_path / "seg", shapes())
    r = cli("mesh", labels, "--workers", "1")
    assert r.returncode == 0, r.stderr
    srv = start_server("serve", str(tmp_path))
    state = ngstate.State(layout="3d", served_at={str(tmp_path): srv.url})
    state.add(labels, segments=[7, BIG, 12])
    assert state.to_json()["layers"][0]["source"] == f"precomputed://{srv.url}/seg"  # its info names the mesh
    with browser_page() as (page, errors):
        page.goto(state.to_url())
        # Shard index, minishard index and manifest, then fragments: all Range reads of the one shard.
        assert wait_until(lambda: len(srv.requested(SHARD_READ)) >= 4, timeout=90), "".join(srv.log[-30:])
        page.wait_for_timeout(3000)
        shown = page.screenshot()
        doc = state_of(page.url)
        doc["layers"][0]["segments"] = []
        page.goto(with_state(page.url, doc))
        page.reload()
        page.wait_for_timeout(3000)
        assert changed_fraction(shown, page.screenshot()) > 0.01  # the meshes drew something
        assert srv.requested(r'"GET /seg/mesh/info HTTP[^"]*" 200')
        assert_only_metadata_probes_failed(srv, errors)

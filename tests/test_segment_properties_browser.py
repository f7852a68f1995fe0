"""Segment names in the built-in viewer: from OME properties the segment list shows them and its search
finds them; a segment table's names replace them."""

from __future__ import annotations

import json

from browser import assert_only_metadata_probes_failed, browser_page, wait_until
from test_segment_properties import write_labelled

import ngstate

LABELS_JS = """() => {
  const managed = window.viewer && window.viewer.layerManager.getLayerByName('cells');
  const map = managed && managed.layer && managed.layer.displayState.segmentationGroupState.value.segmentPropertyMap.value;
  return map ? [map.getSegmentLabel(1n) ?? null, map.getSegmentLabel(2n) ?? null, map.getSegmentLabel(3n) ?? null] : null;
}"""
LIST_JS = """() => Array.from(document.querySelectorAll('.neuroglancer-segment-list-entry'))
  .filter(e => e.checkVisibility())
  .map(e => [e.querySelector('.neuroglancer-segment-list-entry-id')?.innerText,
             e.querySelector('.neuroglancer-segment-list-entry-name')?.innerText])"""


def test_segment_list_shows_and_finds_ome_names(tmp_path, start_server):
    write_labelled(tmp_path)
    srv = start_server("serve", str(tmp_path))
    state = ngstate.build_state([tmp_path / "img.ome.zarr"], served_at={str(tmp_path): srv.url}, layout="xy")
    doc = state.to_json()
    cells = next(l for l in doc["layers"] if l["name"] == "cells")
    assert isinstance(cells["source"], list)
    cells["tab"] = "segments"
    cells["segmentQuery"] = "mi"  # a prefix of segment 2's name only
    doc["selectedLayer"] = {"layer": "cells", "visible": True}
    url = state.to_url().split("#!", 1)[0] + "#!" + json.dumps(doc)
    with browser_page() as (page, errors):
        page.goto(url)
        assert wait_until(lambda: page.evaluate(LABELS_JS) is not None, timeout=90), "".join(srv.log[-30:])
        assert page.evaluate(LABELS_JS) == ["nucleus #organelle", "mito #dividing #organelle", None]
        found = []
        assert wait_until(lambda: found.append(page.evaluate(LIST_JS)) or ["2", "mito #dividing #organelle"] in found[-1], timeout=60), found[-1:]
        assert all(row[0] != "1" for row in found[-1]), found[-1]
        assert srv.requested(r'"GET /-/segment_properties/img\.ome\.zarr/labels/cells/info HTTP[^"]*" 200')
        assert_only_metadata_probes_failed(srv, errors)

        # A table's names, for the same labels (they replace the OME ones).
        table = tmp_path / "names.csv"
        table.write_text("id,name,kind\n1,alpha cell,round\n3,gamma cell,long\n")
        doc = ngstate.build_state([tmp_path / "img.ome.zarr"], served_at={str(tmp_path): srv.url}, layout="xy",
                                  segment_table=table).to_json()
        page.goto(url.split("#!", 1)[0] + "#!" + json.dumps(doc))
        page.reload()
        assert wait_until(lambda: page.evaluate(LABELS_JS) == ["alpha cell #round", None, "gamma cell #long"], timeout=90), (
            page.evaluate(LABELS_JS))
        assert srv.requested(r'"GET /names\.csv\.segment_properties/info HTTP[^"]*" 200')
        assert_only_metadata_probes_failed(srv, errors)
